"""The per-view self-check on the CPU: known cameras come back, a different shape scores low.

Photos of the lopsided test chair are rendered from known cameras into 512 px frames and cropped by
the pipeline's own ``crop_to_foreground``; the fit then has to find each camera. Measured here
(6 views): with the CPU preview's coarse search, azimuth within 2.5°,
elevation within 1.2°, field of view within 5°, IoU 0.969 or more; with the full search at 64 px,
azimuth within 0.9°, elevation within 1.6°, IoU 0.979 or more. A photo of an ellipsoid fits at
0.73-0.76. The assertions leave some room above those numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from render_scenes import KNOWN_CAMERAS, angle_error, chair, ellipsoid, photo

from trellis_mv.pipeline.preprocess import crop_to_foreground
from trellis_mv.preview import PreviewOptions
from trellis_mv.preview.render import RenderMesh
from trellis_mv.preview.views_fit import FitSearch, ViewFit, fit_views, iou, square_view, view_masks

pytestmark = pytest.mark.timeout(60)

SEARCHES = {
    "cpu preview": (PreviewOptions.for_device(torch.device("cpu")).search, 3.0),
    "full at 64 px": (FitSearch(resolution=64), 1.5),
}


@pytest.fixture(scope="module")
def fits() -> dict[str, list[ViewFit]]:
    mesh = chair()
    views = [photo(mesh, camera) for camera in KNOWN_CAMERAS] + [photo(ellipsoid(), (10.0, 10.0, 40.0))]
    return {name: fit_views(RenderMesh.from_trimesh(mesh, "cpu"), views, search) for name, (search, _) in SEARCHES.items()}


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize(("view", "camera"), list(enumerate(KNOWN_CAMERAS)))
def test_the_fit_recovers_a_known_camera(fits, search, view, camera):
    fit, tolerance = fits[search][view], SEARCHES[search][1]
    assert angle_error(fit.azimuth, camera[0]) <= tolerance
    assert abs(fit.elevation - camera[1]) <= 2.0
    # perspective is all that tells the field of view once views are framed: it is found only roughly
    assert abs(fit.fov - camera[2]) <= 10.0
    assert fit.iou >= 0.95


@pytest.mark.parametrize("search", SEARCHES)
def test_a_photo_of_another_shape_fits_clearly_worse(fits, search):
    *chair_views, other = fits[search]
    assert other.iou < 0.8
    assert other.iou < min(fit.iou for fit in chair_views) - 0.15


def test_the_answer_is_rounded_and_in_range():
    fit = ViewFit(azimuth=-30.04, elevation=12.345, fov=40.0, iou=0.97654)
    assert fit.answer() == {"azimuth": 330.0, "elevation": 12.3, "distance": 2.532, "fov": 40.0, "iou": 0.977}


def test_one_fit_per_view_in_order_even_for_identical_views():
    mesh = chair()
    view = photo(mesh, KNOWN_CAMERAS[0], size=256)
    search = FitSearch(resolution=32, azimuth_step=45.0, elevations=(0.0, 30.0), starts=1, rounds=1)
    found = fit_views(RenderMesh.from_trimesh(mesh, "cpu"), [view, view], search)
    assert len(found) == 2 and found[0] == found[1]


@pytest.mark.parametrize(
    ("box", "size", "expected"),
    [
        # a 20 x 10 foreground at (30..50, 5..15) of a 64 x 64 image: the square is 20 wide, centred on it
        ((30, 5, 50, 15), 20, ((5, 15), (0, 20))),
        # an 8 x 40 foreground at the right edge: the square reaches past the image, transparent there
        ((56, 10, 64, 50), 40, ((0, 40), (16, 24))),
    ],
)
def test_views_are_cut_to_the_square_around_their_foreground(box, size, expected):
    alpha = np.zeros((64, 64), dtype=np.uint8)
    left, top, right, bottom = box
    alpha[top:bottom, left:right] = 255
    image = Image.fromarray(np.dstack([np.full((64, 64, 3), 90, np.uint8), alpha]), "RGBA")
    cut = square_view(image, size)
    assert cut.shape == (size, size, 4)
    rows, columns = np.nonzero(cut[..., 3] > 0.5)
    (row_start, row_end), (column_start, column_end) = expected
    assert (rows.min(), rows.max() + 1, columns.min(), columns.max() + 1) == (row_start, row_end, column_start, column_end)
    assert cut[..., 3].sum() == pytest.approx((right - left) * (bottom - top) * (size / max(right - left, bottom - top)) ** 2)


def test_a_view_without_foreground_is_taken_whole():
    empty = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    assert not view_masks([empty], 16).any()


def test_iou_of_masks():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = torch.zeros(3, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared of 12
    a[1], b[1] = True, True
    assert iou(a, b).tolist() == pytest.approx([1 / 3, 1.0, 0.0])


def test_the_crop_keeps_trellis2s_rgb_and_adds_its_alpha():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[8:30, 10:45, 3] = rng.integers(0, 256, (22, 35))
    rgba[12:25, 15:40, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    cropped = crop_to_foreground(image, 0)
    # trellis2's preprocess_image, after its background step, written out
    found = np.argwhere(rgba[:, :, 3] > 0.8 * 255)
    x0, y0, x1, y1 = found[:, 1].min(), found[:, 0].min(), found[:, 1].max(), found[:, 0].max()
    centre, size = ((x0 + x1) / 2, (y0 + y1) / 2), int(max(x1 - x0, y1 - y0))
    box = centre[0] - size // 2, centre[1] - size // 2, centre[0] + size // 2, centre[1] + size // 2
    expected = np.array(image.crop(box)).astype(np.float32) / 255
    expected = Image.fromarray(((expected[:, :, :3] * expected[:, :, 3:4]) * 255).astype(np.uint8))
    assert cropped.mode == "RGBA"
    assert cropped.convert("RGB").tobytes() == expected.tobytes()
    assert np.array_equal(np.asarray(cropped)[..., 3], np.asarray(image.crop(box))[..., 3])
