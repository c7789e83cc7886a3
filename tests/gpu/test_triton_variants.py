"""Our Triton kernels compile once, whatever the sizes a job brings.

Triton compiles a variant of a kernel per integer argument divisible by 16, equal to 1, or neither.
Counts and sizes follow the object (points, faces, grid cells, texture and preview sizes), so a
kernel that specialised on them would compile again in a job whose object differs from the
warm-up's: a fresh worker's first remesh of a small object waited 0.7-1.1 s that way (H100,
2026-12-05). Each kernel here runs on sizes of every class and must hold one compiled variant.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _variants(kernel) -> int:
    """How many variants Triton compiled of ``kernel`` (its per-device caches; ``cache`` before Triton 3.2)."""
    caches = getattr(kernel, "device_caches", None)
    if caches is not None:
        return sum(len(cache[0]) for cache in caches.values())
    return sum(len(cache) for cache in kernel.cache.values())


def _triangles(count: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` small triangles along a diagonal of a cube ``scale`` wide, on the GPU."""
    base = torch.linspace(0, scale, count, device="cuda")[:, None].expand(count, 3)
    vertices = torch.cat([base, base + torch.tensor([scale / count, 0, 0], device="cuda"),
                          base + torch.tensor([0, scale / count, 0], device="cuda")])
    faces = torch.arange(count, device="cuda")[:, None] + torch.tensor([0, count, 2 * count], device="cuda")
    return vertices, faces.int()


def test_closest_points_compile_once_for_any_grid_and_point_count():
    from trellis_mv.export import closest, closest_kernel

    for count, scale, points in ((5, 0.05, 17), (32, 1.0, 64), (7, 0.31, 1), (48, 2.0, 160)):
        vertices, faces = _triangles(count, scale)
        grid = closest.build(vertices, faces.long(), radius=0.01)
        grid.unsigned_distance(torch.rand(points, 3, device="cuda") * scale)
    torch.cuda.synchronize()
    assert _variants(closest_kernel._nearest) == 1


def test_uv_rasterisation_compiles_once_for_any_face_count_and_size():
    from trellis_mv.raster import uv_kernel

    for count, size in ((5, 17), (32, 64), (1, 1), (48, 256)):
        _, faces = _triangles(count, 1.0)
        uvs = torch.rand(3 * count, 2, device="cuda")
        uv_kernel.rasterize_uv_cuda(uvs, faces, size)
    torch.cuda.synchronize()
    assert (_variants(uv_kernel._nearest), _variants(uv_kernel._texels)) == (1, 1)


def test_coverage_compiles_once_for_any_count_and_resolution():
    from trellis_mv.raster import coverage_kernel

    for count, images, resolution in ((5, 1, (17, 33)), (32, 2, (64, 64)), (1, 3, (1, 16)), (48, 16, (256, 160))):
        _, faces = _triangles(count, 1.0)
        clip = torch.rand(images, 3 * count, 4, device="cuda") * 2 - 1
        clip[..., 3] = 1
        coverage_kernel.coverage_cuda(clip, faces, resolution)
    torch.cuda.synchronize()
    assert _variants(coverage_kernel._cover) == 1
