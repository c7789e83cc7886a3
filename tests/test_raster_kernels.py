"""The rasterizer's Triton kernels against its torch path, on the CPU through Triton's interpreter.

The kernels (``coverage_kernel``, ``uv_kernel``) must give the torch path's pixels bit for bit: they
take its float operations in its order (``triton_spans``). tests/gpu/test_raster_gpu.py compares them
on the GPU on a default mesh; here Triton's interpreter (``TRITON_INTERPRET=1``) runs them on CPU
tensors, on cases made for the fill rule and the skips: edges through pixel centres, edges along a
row, triangles without area, behind the camera or outside the image, both windings, odd sizes, and
meshes seen from the previews' cameras. Triton reads that variable when a kernel is defined, so the
kernels run in a child process: this file run as a script, which prints each case's result.

Skipped where Triton is absent: torch's CPU builds bring none (.ci/run's development set). The image's
set runs it (torch 2.6 brings Triton 3.2, with the image's numpy 2.2: Triton 3.2's interpreter needs
numpy < 2.3, it turns one-element arrays into loop bounds with ``int``). About 20 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import trimesh
from render_scenes import grid_faces

from trellis_mv.preview.cameras import clip_space, frame_to_square
from trellis_mv.raster.spans import counts

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="needs Triton for its interpreter: torch's CPU builds bring none (the image's set of .ci/run has it)",
)

Case = tuple[torch.Tensor, torch.Tensor, tuple[int, int]]  # clip [B, V, 4], faces [F, 3], (H, W)


def centre(index: float, size: int) -> float:
    """Clip x (or y) of pixel centre ``index``; fractional indices lie between centres."""
    return (2 * index + 1) / size - 1


def on_centres(size: int, step: int) -> Case:
    """Quads with corners on pixel centres, ``step`` pixels wide, cut along alternating diagonals: edges
    of every direction through centres, each shared by two triangles. Seen at w = 1, at w = 3 (x·w/w is
    not always x again) and at a random w per vertex."""
    cells = (size - 1) // step
    points = torch.tensor([(centre(i * step, size), centre(j * step, size)) for j in range(cells + 1) for i in range(cells + 1)])
    faces = grid_faces(cells)
    random = torch.rand(len(points), 1, generator=torch.Generator().manual_seed(step)) * 2.5 + 0.5
    w = torch.stack([torch.ones_like(random), torch.full_like(random, 3.0), random])
    clip = torch.cat([points.expand(3, -1, -1) * w, torch.zeros_like(w), w], dim=2)
    return clip, torch.tensor(faces), (size, size)


def both_windings() -> Case:
    clip, faces, size = on_centres(16, 1)
    return clip, faces.flip(1), size


def rows(points: list[tuple[float, float]], size: int = 16) -> torch.Tensor:
    """Clip vertices ``[1, V, 4]`` at w = 1 from (column, row) positions in pixel-centre units."""
    return torch.tensor([[(centre(x, size), centre(y, size), 0.0, 1.0) for x, y in points]])


def edges_along_rows() -> Case:
    """Edges lying on a row of centres, with triangles above and below them, both ways round, and a
    sliver one row high."""
    clip = rows([(2, 3), (9, 3), (5, 8), (5, -2), (12.5, 7), (3.5, 7), (8, 12), (1, 10), (14, 10), (7, 10.5)])
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [4, 5, 6], [5, 4, 3], [7, 8, 9], [8, 7, 9]])
    return clip, faces, (16, 16)


def degenerate() -> Case:
    """Triangles without area: a repeated corner, three corners on a line (along a row, a column and a
    diagonal through centres), one point."""
    clip = rows([(2, 2), (9, 2), (9, 2), (2, 5), (2, 12), (1, 1), (7, 7), (14, 14)])
    faces = torch.tensor([[0, 1, 2], [0, 1, 1], [0, 3, 4], [5, 6, 7], [6, 6, 6], [0, 2, 1]])
    return clip, faces, (16, 16)


def behind_the_camera() -> Case:
    """Large triangles over the image with one corner at w = 0, below 0 or just above it (kept)."""
    corners = [(-0.9, -0.9, 0.0, 1.0), (0.9, -0.9, 0.0, 1.0), (-0.9, 0.9, 0.0, 1.0)]
    clip = [corners[:2] + [(-0.9, 0.9, 0.0, w)] for w in (0.0, -1.0, -1e-7, 1e-6, 0.25)]
    return torch.tensor(clip), torch.tensor([[0, 1, 2], [2, 1, 0]]), (12, 12)


def outside() -> Case:
    """Beyond each side of the image, across two of its sides, and far larger than it."""
    clip = torch.tensor([[
        (1.2, -0.5, 0, 1), (3.0, 0.0, 0, 1), (1.5, 0.8, 0, 1),  # right of it
        (-3.0, -0.5, 0, 1), (-1.01, 0.2, 0, 1), (-2.0, 0.9, 0, 1),  # left of it
        (-0.5, 1.05, 0, 1), (0.5, 1.05, 0, 1), (0.0, 4.0, 0, 1),  # above it
        (-0.5, -1.2, 0, 1), (0.5, -1.1, 0, 1), (0.0, -9.0, 0, 1),  # below it
        (-4.0, -0.3, 0, 1), (0.3, -5.0, 0, 1), (0.2, 0.4, 0, 1),  # across two sides
        (-1e6, -1e6, 0, 1), (1e6, -1e6, 0, 1), (-1e6, 1e6, 0, 1),  # over all of it
    ]], dtype=torch.float32)
    faces = torch.arange(18).reshape(6, 3)
    return torch.cat([clip, clip * 3]), faces, (10, 14)


def random_triangles() -> Case:
    """Triangles from a third of a pixel to 20 pixels wide, at random depths, some corners behind the
    camera, in 6 images of an odd size."""
    generator = torch.Generator().manual_seed(2)
    images, count = 6, 120
    middle = torch.rand(images, count, 1, 2, generator=generator) * 2.4 - 1.2
    extent = torch.exp(torch.rand(images, count, 1, 1, generator=generator) * 4 - 4)
    xy = (middle + (torch.rand(images, count, 3, 2, generator=generator) - 0.5) * extent).reshape(images, -1, 2)
    w = torch.rand(images, count * 3, 1, generator=generator) * 2 + 0.02
    w[:, ::37] *= -1
    return torch.cat([xy * w, torch.zeros_like(w), w], dim=2), torch.arange(count * 3).reshape(-1, 3), (24, 40)


def sphere_from_cameras() -> Case:
    """A bumpy sphere of 1280 faces from 2 of the previews' cameras (framed as ``preview.render.silhouettes``
    frames them) at 32²: triangles of a pixel or two (a default mesh's are a tenth of a pixel at 128²)."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    generator = torch.Generator().manual_seed(3)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32) * (0.4 + 0.05 * torch.rand(len(sphere.vertices), 1, generator=generator))
    azimuth, elevation = torch.rand(2, generator=generator) * 360, torch.rand(2, generator=generator) * 120 - 45
    clip = frame_to_square(clip_space(vertices, azimuth, elevation, torch.rand(2, generator=generator) * 60 + 10, radius=0.45))
    return clip, torch.tensor(sphere.faces, dtype=torch.int32), (32, 32)


def no_faces() -> Case:
    return torch.rand(2, 3, 4), torch.zeros((0, 3), dtype=torch.int64), (8, 8)


# name: (case, whether it covers anything)
CASES: dict[str, tuple[Callable[[], Case], bool]] = {
    "edges through pixel centres, a pixel apart": (lambda: on_centres(16, 1), True),
    "edges through pixel centres, 5 pixels apart": (lambda: on_centres(23, 5), True),
    "both windings": (both_windings, True),
    "edges along a row": (edges_along_rows, True),
    "triangles without area": (degenerate, False),
    "corners behind the camera": (behind_the_camera, True),
    "outside and across the image": (outside, True),
    "random triangles, odd size": (random_triangles, True),
    "a sphere from the previews' cameras": (sphere_from_cameras, True),
    "no faces": (no_faces, False),
}


def compare() -> dict[str, dict]:
    """Each case through the kernel and through the torch path (run under TRITON_INTERPRET=1)."""
    from test_raster import SIZE, uv_layout

    from trellis_mv.raster import rasterize_uv
    from trellis_mv.raster.coverage_kernel import coverage_cuda
    from trellis_mv.raster.uv_kernel import rasterize_uv_cuda

    results = {}
    for name, (case, _) in CASES.items():
        clip, faces, resolution = case()
        ours, theirs = coverage_cuda(clip, faces, resolution), counts(clip, faces, resolution) > 0
        results[name] = {"identical": torch.equal(ours, theirs), "covered": int(theirs.sum()),
                         "differing": int((ours != theirs).sum())}
    uvs, faces = uv_layout()
    ours, theirs = rasterize_uv_cuda(uvs, faces, SIZE), rasterize_uv(uvs, faces, SIZE)
    results["uv atlas"] = {"identical": torch.equal(ours, theirs), "covered": int((theirs[..., 3] > 0).sum())}
    return results


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict]:
    paths = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": paths}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(CASES))
def test_the_coverage_kernel_gives_the_torch_paths_pixels(interpreted, name):
    result = interpreted[name]
    assert result["identical"], result
    assert (result["covered"] > 0) == CASES[name][1], result


@pytest.mark.timeout(120)
def test_the_uv_kernels_give_the_torch_paths_texels_and_barycentrics(interpreted):
    assert interpreted["uv atlas"]["identical"] and interpreted["uv atlas"]["covered"] > 600, interpreted["uv atlas"]


if __name__ == "__main__":
    print(json.dumps(compare()))
