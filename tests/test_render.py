"""Camera maths and the shading of the previews, on the CPU (the rasterizer itself: tests/test_raster.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from render_scenes import chair, textured

from trellis_mv.preview.cameras import (
    clip_space,
    distance_for_fov,
    fov_for_distance,
    frame_to_square,
    look_at,
    orbit_eyes,
    perspective,
)
from trellis_mv.preview.render import RenderMesh, shaded, silhouettes

pytestmark = pytest.mark.timeout(30)



@pytest.mark.parametrize(
    ("fov", "distance"),
    # render_cond.py's ends: 70° at sqrt(3)/2 / sin(35°), 10° at sqrt(3)/2 / sin(5°)
    [(70.0, 1.5099), (40.0, 2.5321), (10.0, 9.9365)],
)
def test_distance_and_fov_follow_trellis_conditioning_renders(fov, distance):
    assert float(distance_for_fov(fov)) == pytest.approx(distance, abs=1e-4)
    assert float(fov_for_distance(distance_for_fov(fov))) == pytest.approx(fov, abs=1e-3)


@pytest.mark.parametrize(
    ("azimuth", "elevation", "direction"),
    [(0, 0, (0, 0, 1)), (90, 0, (1, 0, 0)), (180, 0, (0, 0, -1)), (270, 0, (-1, 0, 0)), (0, 90, (0, 1, 0)), (45, 30, None)],
)
def test_orbits_in_the_gltf_frame(azimuth, elevation, direction):
    eye = orbit_eyes(torch.tensor([float(azimuth)]), torch.tensor([float(elevation)]), torch.tensor([2.0]))[0]
    assert float(eye.norm()) == pytest.approx(2.0)
    assert float(torch.rad2deg(torch.asin(eye[1] / 2))) == pytest.approx(elevation, abs=1e-4)
    if direction is not None:
        assert torch.allclose(eye, 2 * torch.tensor(direction, dtype=torch.float32), atol=1e-6)


def test_look_at_puts_the_target_straight_ahead_and_up_up():
    eyes = orbit_eyes(torch.tensor([30.0, 200.0]), torch.tensor([20.0, -40.0]), torch.tensor([3.0, 2.0]))
    view = look_at(eyes)
    origin = view @ torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert torch.allclose(origin[:, :3], torch.tensor([[0, 0, -3.0], [0, 0, -2.0]]), atol=1e-5)
    assert torch.allclose(view[:, :3, :3] @ view[:, :3, :3].transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    above = view @ torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert (above[:, 1] > 0).all()  # world up stays up on screen


def test_perspective_maps_near_and_far_to_the_depth_range():
    projection = perspective(torch.tensor([60.0]), torch.tensor([0.5]), torch.tensor([4.0]))[0]
    for z, depth in [(-0.5, -1.0), (-4.0, 1.0)]:
        point = projection @ torch.tensor([0.0, 0.0, z, 1.0])
        assert float(point[2] / point[3]) == pytest.approx(depth, abs=1e-6)
    edge = projection @ torch.tensor([math.tan(math.radians(30)), 0.0, -1.0, 1.0])
    assert float(edge[0] / edge[3]) == pytest.approx(1.0, abs=1e-6)  # half the field of view reaches the frame


def test_framing_fills_the_square_and_shared_framing_keeps_one_scale():
    vertices = torch.tensor(np.asarray(chair().vertices), dtype=torch.float32)
    views = clip_space(vertices, torch.tensor([0.0, 90.0]), torch.tensor([10.0, 10.0]), torch.tensor([40.0, 40.0]), radius=1.0)
    for shared in (False, True):
        framed = frame_to_square(views, shared=shared)
        ndc = framed[..., :2] / framed[..., 3:]
        low, high = ndc.amin(dim=1), ndc.amax(dim=1)
        assert torch.allclose(framed[..., 2:], views[..., 2:])  # depth and w untouched
        if not shared:
            assert torch.allclose((high - low).amax(dim=1), torch.tensor([2.0, 2.0]))
            assert torch.allclose(low + high, torch.zeros(2, 2), atol=1e-5)
    union = frame_to_square(views, shared=True)
    ndc = union[..., :2] / union[..., 3:]
    assert float((ndc.amax(dim=(0, 1)) - ndc.amin(dim=(0, 1))).max()) == pytest.approx(2.0)


def test_textures_keep_their_orientation_and_images_come_top_row_first():
    # a quad facing the camera at azimuth 0 (+Z), textured red above and blue below
    image = Image.fromarray(np.concatenate([np.full((8, 16, 3), (255, 0, 0)), np.full((8, 16, 3), (0, 0, 255))]).astype(np.uint8))
    vertices = np.array([[-0.4, -0.2, 0.0], [0.4, -0.2, 0.0], [-0.4, 0.2, 0.0], [0.4, 0.2, 0.0]])
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # trimesh's v: 0 at the image's bottom
    quad = RenderMesh.from_trimesh(textured(vertices, np.array([[0, 1, 2], [2, 1, 3]]), uv, image), "cpu")
    picture = shaded(quad, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([40.0]), 32, margin=0.0)[0]
    # framed: the quad's width spans the frame, its height the middle half (rows 8 to 23)
    assert picture[..., 3].amax(dim=1).tolist() == [0.0] * 8 + [1.0] * 16 + [0.0] * 8
    top, bottom = picture[10, 16], picture[21, 16]
    assert top[0] > 0.5 > top[2] and bottom[2] > 0.5 > bottom[0]
    again = shaded(quad, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([40.0]), 32, margin=0.0)[0]
    assert torch.equal(again, picture)  # no hidden state between calls


def test_shading_lights_faces_towards_the_key_light_more():
    mesh = RenderMesh.from_trimesh(trimesh.creation.box((0.5, 0.5, 0.5)), "cpu")
    picture = shaded(mesh, torch.tensor([45.0]), torch.tensor([30.0]), torch.tensor([40.0]), 64)[0]
    covered = picture[..., 3] > 0.5
    assert 0.3 < float(covered.float().mean()) < 0.8
    # the top face (lit from above) is brighter than the two side faces; grey albedo everywhere
    top, side = picture[20, 32, :3], picture[44, 20, :3]
    assert float(top.mean()) > float(side.mean()) > 0.2
    assert torch.allclose(top, top.mean().expand(3), atol=1e-5)
    assert torch.equal(picture[0, 0], torch.zeros(4))  # background is transparent


def test_untextured_meshes_take_the_base_colour_and_big_textures_are_shrunk():
    plain = RenderMesh.from_trimesh(trimesh.creation.box((0.5, 0.5, 0.5)), "cpu")
    assert plain.texture is None and plain.uv is None and plain.colour.tolist() == pytest.approx([0.72] * 3)
    big = Image.new("RGB", (2048, 1024), (10, 200, 30))
    vertices = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    mesh = RenderMesh.from_trimesh(textured(vertices, np.array([[0, 1, 2]]), vertices[:, :2], big), "cpu")
    assert mesh.texture.shape == (1, 3, 512, 1024)
    assert torch.allclose(mesh.texture[0, :, 0, 0], torch.tensor([10, 200, 30]) / 255)
    assert mesh.radius == pytest.approx(0.5)


def test_silhouettes_are_framed_and_match_across_batches():
    mesh = RenderMesh.from_trimesh(chair(), "cpu")
    azimuth, elevation, fov = torch.tensor([0.0, 90.0, 200.0]), torch.tensor([0.0, 30.0, -20.0]), torch.tensor([40.0, 20.0, 60.0])
    together = silhouettes(mesh, azimuth, elevation, fov, 48)
    apart = torch.cat([silhouettes(mesh, azimuth[i:i + 1], elevation[i:i + 1], fov[i:i + 1], 48) for i in range(3)])
    assert torch.equal(together, apart)
    for mask in together:
        rows, columns = torch.nonzero(mask, as_tuple=True)
        # framed: the longer side spans the frame, the shorter one is centred
        spans = (int(rows.max() - rows.min()) + 1, int(columns.max() - columns.min()) + 1)
        assert max(spans) >= 47
        assert abs(int(rows.min()) - (47 - int(rows.max()))) <= 1 and abs(int(columns.min()) - (47 - int(columns.max()))) <= 1
