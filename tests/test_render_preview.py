"""The preview sheet, and ``output.preview`` through ``run_job``: base64 and S3 (moto on loopback).

The CPU generator hands back its inputs as the views the model saw; its mesh is a textured sphere.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re

import numpy as np
import pytest
import requests
import torch
from cpu_generator import CpuGenerator
from helpers import png_b64
from PIL import Image
from render_scenes import KNOWN_CAMERAS, chair, photo

from trellis_mv.config import Settings
from trellis_mv.preview import PreviewOptions, make_preview
from trellis_mv.preview.sheet import overlay, sheet
from trellis_mv.storage import S3Store
from trellis_mv.worker import run_job

pytestmark = pytest.mark.timeout(60)

OPTIONS = PreviewOptions.for_device(torch.device("cpu"))
VIEWS = [png_b64((32, 32), (200, 40, 40, 255)), png_b64((40, 24), (40, 40, 200, 255))]


def job(**output):
    return {"id": "job-1", "input": {"images": VIEWS, "seed": 7, "output": output}}


def decoded_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def tile(picture: np.ndarray, index: int, size: int) -> np.ndarray:
    """Tile ``index`` of a sheet (four to a row, 4 px gaps)."""
    top, left = 4 + (index // 4) * (size + 4), 4 + (index % 4) * (size + 4)
    return picture[top:top + size, left:left + size]


def test_the_package_offers_make_preview():
    import trellis_mv.preview

    assert trellis_mv.preview.__all__ == ["Preview", "PreviewOptions", "make_preview"]


def test_the_sheet_shows_the_turntable_and_every_view_over_its_fit():
    mesh = chair()
    views = [photo(mesh, camera, size=256) for camera in KNOWN_CAMERAS[:3]]
    preview = make_preview(mesh, views, device="cpu")

    picture = decoded_png(preview.png)
    size = OPTIONS.tile
    assert picture.shape == (3 * (size + 4) + 4 + 20, 4 * (size + 4) + 4, 3)  # 8 turntable tiles + 3 views, a legend
    background = np.round(np.array([0.94, 0.94, 0.94]) * 255)
    for index in range(8):  # every turntable view shows the chair in its warm colours (a red and yellow checkerboard)
        drawn = np.abs(tile(picture, index, size).astype(float) - background).sum(axis=2) > 30
        assert 0.1 < drawn.mean() < 0.7, index
        colours = tile(picture, index, size)[drawn].astype(int)
        assert (colours[:, 0] > colours[:, 2] + 30).mean() > 0.8
    for index in range(8, 11):  # each view tile: mostly the photo's colour (agreement), a thin green outline
        pixels = tile(picture, index, size).reshape(-1, 3).astype(int)
        photo_colour = (np.abs(pixels - (200, 120, 60)).sum(axis=1) < 10).mean()
        outline = (np.abs(pixels - np.round(np.array([0.1, 0.8, 0.2]) * 255)).sum(axis=1) < 10).mean()
        assert photo_colour > 0.15 and 0.005 < outline < 0.08
    assert [fit["iou"] >= 0.95 for fit in preview.views_fit] == [True] * 3
    assert set(preview.timings) == {"preview_upload", "views_fit", "turntable", "preview_sheet"}


def test_a_sheet_without_views_is_the_turntable_alone():
    preview = make_preview(chair(), [], device="cpu")
    assert preview.views_fit == []
    assert decoded_png(preview.png).shape == (2 * (OPTIONS.tile + 4) + 4, 4 * (OPTIONS.tile + 4) + 4, 3)


def test_the_overlay_tints_disagreement_and_outlines_the_fit():
    view = np.zeros((8, 8, 4), dtype=np.float32)
    view[:, :4] = (0.5, 0.5, 0.5, 1.0)  # the photo covers the left half
    fitted = np.zeros((8, 8), dtype=bool)
    fitted[2:6, 2:6] = True  # the result covers the middle
    drawn = overlay(view, fitted)
    assert np.allclose(drawn[0, 0], 0.45 * 0.5 + 0.55 * np.array([0.9, 0.15, 0.15]))  # only the photo: red
    assert np.allclose(drawn[3, 4], 0.45 * 0.94 + 0.55 * np.array([0.15, 0.35, 0.95]))  # only the result: blue
    assert np.allclose(drawn[2, 2], [0.1, 0.8, 0.2]) and np.allclose(drawn[3, 3], 0.5)  # outline, then agreement
    assert np.allclose(drawn[0, 7], 0.94)  # neither: background


def test_sheets_lay_tiles_out_four_to_a_row():
    tiles = [np.full((10, 10, 3), value / 10, dtype=np.float32) for value in range(5)]
    picture = decoded_png(sheet(tiles, [""] * 5))
    assert picture.shape == (2 * 14 + 4, 4 * 14 + 4, 3)
    assert [int(tile(picture, index, 10)[5, 5, 0]) for index in range(5)] == [0, 26, 51, 76, 102]


def test_a_job_with_preview_answers_the_sheet_and_views_fit_inline(valid_glb):
    answer = run_job(job(preview=True), settings=Settings(), generator=CpuGenerator(), store=None)

    data = base64.b64decode(answer["preview"]["base64"])
    assert answer["preview"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "base64": answer["preview"]["base64"]}
    decoded_png(data)
    valid_glb(base64.b64decode(answer["glb"]["base64"]))
    assert len(answer["views_fit"]) == 2
    for fit in answer["views_fit"]:
        assert set(fit) == {"azimuth", "elevation", "distance", "fov", "iou"}
        # the CPU generator's views are the opaque squares it was sent; its mesh is a sphere: a disc in a square
        assert fit["iou"] == pytest.approx(np.pi / 4, abs=0.08)
        assert 0 <= fit["azimuth"] < 360 and -85 <= fit["elevation"] <= 85 and 10 <= fit["fov"] <= 70
    assert {"preview", "views_fit", "turntable", "preview_sheet", "store"} <= set(answer["timings"])


def test_without_preview_the_answer_is_as_before():
    updates: list[dict] = []
    answer = run_job(job(), settings=Settings(), generator=CpuGenerator(), store=None, progress=updates.append)
    assert "preview" not in answer and "views_fit" not in answer and "preview" not in answer["timings"]
    assert [update["stage"] for update in updates if "step" not in update] == ["validate", "decode", "generate", "export", "store"]


def test_the_preview_is_uploaded_beside_the_glb(s3_settings):
    answer = run_job(job(preview=True), settings=s3_settings, generator=CpuGenerator(), store=S3Store.from_settings(s3_settings))

    glb_key = answer["glb"]["key"]
    assert re.fullmatch(r"trellis-mv/job-1/[0-9a-f]{32}\.glb", glb_key)
    assert answer["preview"]["key"] == glb_key.removesuffix(".glb") + ".preview.png"
    download = requests.get(answer["preview"]["url"], timeout=10)
    assert download.status_code == 200 and download.headers["Content-Type"] == "image/png"
    assert hashlib.sha256(download.content).hexdigest() == answer["preview"]["sha256"]
    assert len(answer["views_fit"]) == 2


def test_glb_and_preview_together_must_fit_the_base64_cap():
    small = run_job(job(), settings=Settings(), generator=CpuGenerator(), store=None)
    cap = small["glb"]["bytes"] + 1000  # room for the GLB, not for a sheet as well
    answer = run_job(job(preview=True), settings=dataclasses.replace(Settings(), max_base64_glb_bytes=cap), generator=CpuGenerator(), store=None)
    assert re.fullmatch(
        r"output\.preview: the GLB and its preview are [\d,]+ bytes, over the [\d,]+ bytes that a base64 answer may carry; "
        r"leave output\.preview out, or set BUCKET_\* on the endpoint to get URLs",
        answer["error"],
    )


@pytest.mark.parametrize(("value", "message"), [("yes", 'output.preview: expected true or false, got "yes"'), (1, "output.preview: expected true or false, got 1")])
def test_preview_must_be_a_boolean(value, message):
    assert run_job(job(preview=value), settings=Settings(), generator=CpuGenerator(), store=None) == {"error": message}
