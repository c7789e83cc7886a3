"""Triangle rasterization behind one signature: nvdiffrast on CUDA, torch references elsewhere.

A rasterizer takes clip-space vertices ``[B, V, 4]`` (float32), triangles ``[F, 3]`` (int32) and an
output size ``(H, W)``, and returns what ``nvdiffrast.torch.rasterize`` returns first: ``[B, H, W, 4]``
holding, per pixel, the perspective-correct barycentrics ``(b0, b1)`` of the nearest triangle, its
depth ``z/w`` and its index + 1 (0 where no triangle covers the pixel); row 0 is the bottom of the
image (y = -1), as in OpenGL. A coverage function takes the same and returns ``[B, H, W]`` bool:
whether any triangle covers the pixel (all that silhouettes need).

- On CUDA both come from nvdiffrast's rasterizer, the one the image ships for TRELLIS.2's export.
  This module is the only one that imports ``nvdiffrast``, inside :func:`nvdiffrast_rasterizer`.
- Elsewhere (CPU machines: tests, the CPU stand-in generators) :func:`rasterize_reference` and
  :func:`coverage_reference` compute the same in plain torch, from nvdiffrast's own homogeneous edge
  functions (``csrc/common/rasterize.cu``); they are also the yardstick the GPU tests hold nvdiffrast
  to. Their cost grows with the pixels (rasterize) or the rows (coverage) each triangle spans, not
  with pixels × triangles.

Everything else (interpolation, texturing, shading, silhouettes) is torch on top of these outputs and
runs unchanged on either device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "Coverage",
    "Rasterizer",
    "Rasterizers",
    "coverage_reference",
    "nvdiffrast_rasterizer",
    "rasterize_reference",
    "rasterizers_for",
    "texel_counts",
]

Rasterizer = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]
Coverage = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]

_DEPTH_LEVELS = 2**30 - 1  # depth quantised into the high bits of one int64 key: nearest wins, then lowest index
_INDEX_BITS = 31
_PAIRS_PER_CHUNK = 4_000_000  # (triangle, pixel or row) pairs evaluated at once by the references


@dataclass(frozen=True)
class Rasterizers:
    """What rendering needs from one device: the full rasterizer and a coverage-only one."""

    rasterize: Rasterizer
    coverage: Coverage


def rasterizers_for(device: torch.device | str) -> Rasterizers:
    """nvdiffrast on a CUDA device, the torch references on any other."""
    device = torch.device(device)
    if device.type != "cuda":
        return Rasterizers(rasterize_reference, coverage_reference)
    rasterize = nvdiffrast_rasterizer(device)
    return Rasterizers(rasterize, lambda clip, faces, resolution: rasterize(clip, faces, resolution)[..., 3] > 0)


def nvdiffrast_rasterizer(device: torch.device) -> Rasterizer:
    """``nvdiffrast.torch.rasterize`` with one CUDA context, kept for as long as the returned function."""
    import nvdiffrast.torch as dr

    context = dr.RasterizeCudaContext(device=device)

    def rasterize(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
        rast, _ = dr.rasterize(context, clip.float().contiguous(), faces.int().contiguous(), resolution, grad_db=False)
        return rast

    return rasterize


def rasterize_reference(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """nvdiffrast's ``rasterize`` output, computed in torch (see the module docstring).

    Every pixel centre in a triangle's bounding box is tested; the nearest triangle wins, through one
    int64 key per pixel (quantised depth, then triangle index) reduced with ``amin``.
    """
    batch, height, width, face_count = clip.shape[0], *resolution, faces.shape[0]
    corners = _corners(clip, faces)
    coefficients = _plane_coefficients(corners)
    x0, y0, box_width, box_height = _boxes(corners, resolution)
    counts = box_width * box_height

    empty = torch.iinfo(torch.int64).max
    nearest = torch.full((batch * height * width,), empty, dtype=torch.int64, device=clip.device)
    for instances in _chunks(counts, _PAIRS_PER_CHUNK):
        instance, offset = _expand(instances, counts[instances])
        column = x0[instance] + offset % box_width[instance]
        row = y0[instance] + torch.div(offset, box_width[instance], rounding_mode="floor")
        a, zw = _evaluate(coefficients[instance], column, row, resolution)
        inside = (((a >= 0).all(dim=1)) | ((a <= 0).all(dim=1))) & (a.sum(dim=1) != 0)
        depth = ((zw.clamp(-1, 1) + 1) / 2 * _DEPTH_LEVELS).long()
        key = torch.where(inside, (depth << _INDEX_BITS) | (instance % face_count), empty)
        pixel = torch.div(instance, face_count, rounding_mode="floor") * height * width + row * width + column
        nearest.scatter_reduce_(0, pixel, key, reduce="amin")
    return _output(nearest, empty, coefficients, face_count, resolution, batch)


def coverage_reference(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Whether any triangle covers each pixel centre ``[B, H, W]`` (see :func:`_cover_counts`)."""
    return _cover_counts(clip, faces, resolution) > 0


def texel_counts(uvs: torch.Tensor, faces: torch.Tensor, size: int) -> torch.Tensor:
    """How many triangles cover each texel centre of a ``size``² atlas: ``(size, size)`` int32.

    ``uvs`` ``(V, 2)`` in [0, 1], v = 0 on row 0 (the bake's convention); a texel counted 2 or more
    lies under two charts (or under a chart folded over itself). A texel centre on an edge that two
    triangles share counts once (see :func:`_cover_counts`), so a seamless chart counts 1 throughout.
    """
    return _cover_counts(_uv_clip(uvs)[None], faces, (size, size))[0]


def _uv_clip(uvs: torch.Tensor) -> torch.Tensor:
    """UVs as clip-space vertices ``[V, 4]``: u, v in [0, 1] across the image, v = 0 on row 0, z = 0, w = 1."""
    ones = torch.ones_like(uvs[:, :1])
    return torch.cat([uvs.float() * 2 - 1, ones * 0, ones], dim=1)


def _cover_counts(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """How many triangles cover each pixel centre ``[B, H, W]`` (int32).

    Per triangle and pixel row, the edge functions bound the covered columns to one interval; the
    intervals go into a difference buffer whose running sum counts the triangles over each pixel.
    A centre exactly on an edge belongs to the triangle on the edge's left or lower side only (a
    half-open interval, as GPU fill rules have it): the two triangles of a shared edge have exactly
    opposite edge functions, so they compute the same bound and split the row there without a gap
    or a double count.
    """
    batch, height, width, face_count = clip.shape[0], *resolution, faces.shape[0]
    corners = _corners(clip, faces)
    coefficients = _plane_coefficients(corners)
    _, y0, box_width, box_height = _boxes(corners, resolution)
    # sum of a_i = det[x; y; w] is the same at every pixel: its sign tells the winding
    winding = torch.sign(coefficients[:, :3, 0].sum(dim=1))
    rows = box_height * (box_width > 0) * (winding != 0)
    difference = torch.zeros(batch * height * (width + 1), dtype=torch.int32, device=clip.device)
    for instances in _chunks(rows, _PAIRS_PER_CHUNK):
        instance, offset = _expand(instances, rows[instances])
        row = y0[instance] + offset
        fy = (2 * row.to(clip.dtype) + 1) / height - 1
        edges = coefficients[instance, :3] * winding[instance, None, None]  # inside: c + a·fx + b·fy >= 0 for all three
        offset, slope = edges[..., 0] + edges[..., 2] * fy[:, None], edges[..., 1]
        bound = -offset / torch.where(slope == 0, torch.ones_like(slope), slope)
        low = torch.where(slope > 0, bound, torch.full_like(bound, -torch.inf)).amax(dim=1)  # fx >= low
        high = torch.where(slope < 0, bound, torch.full_like(bound, torch.inf)).amin(dim=1)  # fx < high
        # an edge along the row: all of it or none; on it, the triangle above it takes it
        possible = ((slope != 0) | (offset > 0) | ((offset == 0) & (edges[..., 2] > 0))).all(dim=1)
        first, end = _column_at(low, width), _column_at(high, width)
        keep = possible & (end > first)
        start = (torch.div(instance, face_count, rounding_mode="floor") * height + row) * (width + 1)
        ones = torch.ones_like(start[keep], dtype=torch.int32)
        difference.index_add_(0, start[keep] + first[keep], ones)
        difference.index_add_(0, start[keep] + end[keep], -ones)
    counts = torch.cumsum(difference.reshape(batch * height, width + 1)[:, :width], dim=1, dtype=torch.int32)
    return counts.reshape(batch, height, width)


def _column_at(fx: torch.Tensor, width: int) -> torch.Tensor:
    """The first column whose centre lies at or right of ``fx`` (clip x), clamped to 0..width."""
    return torch.ceil(((fx + 1) * width - 1) / 2).clamp(0, width).long()


def _expand(instances: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each instance repeated ``size`` times, with its running offset 0..size-1 (one pixel or row each)."""
    which = torch.repeat_interleave(torch.arange(instances.shape[0], device=instances.device), sizes)
    offset = torch.arange(which.shape[0], device=instances.device) - (torch.cumsum(sizes, 0) - sizes)[which]
    return instances[which], offset


def _corners(clip: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """``[4, 3, B*F]``: component, corner, and instance t (triangle t % F seen in image t // F).

    Instances last keeps every per-triangle quantity a contiguous row, which the CPU handles fastest.
    """
    batch, vertex_count = clip.shape[:2]
    index = torch.arange(batch, device=clip.device)[:, None, None] * vertex_count + faces.long()
    return clip.reshape(-1, 4)[index.reshape(-1, 3)].permute(2, 1, 0).contiguous()


def _boxes(corners: torch.Tensor, resolution: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """First column and row, width and height of the pixel centres in each triangle's bounding box.

    Triangles with a corner at or behind the camera (w <= 0) get an empty box: references skip them,
    where nvdiffrast would clip them; cameras here keep the whole object in front of them.
    """
    height, width = resolution
    x, y, _, w = corners
    in_front = (w > 0).all(dim=0)
    w = torch.where(w > 0, w, torch.ones_like(w))
    # pixel centre (i, j) sits at x = (2i + 1) / W - 1, y = (2j + 1) / H - 1
    px = (x / w + 1) * width / 2 - 0.5
    py = (y / w + 1) * height / 2 - 0.5
    x0 = px.amin(dim=0).ceil().clamp(0, width).long()
    y0 = py.amin(dim=0).ceil().clamp(0, height).long()
    box_width = (px.amax(dim=0).floor().clamp(-1, width - 1).long() - x0 + 1).clamp(min=0) * in_front
    box_height = (py.amax(dim=0).floor().clamp(-1, height - 1).long() - y0 + 1).clamp(min=0) * in_front
    return x0, y0, box_width, box_height


def _plane_coefficients(corners: torch.Tensor) -> torch.Tensor:
    """Per triangle, ``[T, 5, 3]``: nvdiffrast's edge functions and depth terms as ``c + a·fx + b·fy``.

    ``rasterize.cu`` evaluates, at pixel centre f, ``a_i = p_j × p_k`` with ``p = (x - fx·w, y - fy·w)``;
    the fx·fy terms cancel, so each ``a_i`` is affine in (fx, fy), and so are ``Σ z_i a_i`` and
    ``Σ w_i a_i``, whose ratio is the depth z/w. Rows: a_0, a_1, a_2, Σ z a, Σ w a; columns: c, a, b.
    """
    x, y, z, w = corners  # each [3, T]
    (xj, yj, wj), (xk, yk, wk) = [[value.roll(-shift, dims=0) for value in (x, y, w)] for shift in (1, 2)]
    edges = torch.stack([xj * yk - yj * xk, yj * wk - wj * yk, wj * xk - xj * wk])  # [3 terms, 3 edges, T]
    depth = torch.stack([(z * edges).sum(dim=1), (w * edges).sum(dim=1)], dim=1)  # [3 terms, 2, T]
    return torch.cat([edges, depth], dim=1).permute(2, 1, 0).contiguous()


def _evaluate(
    coefficients: torch.Tensor, column: torch.Tensor, row: torch.Tensor, resolution: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge functions ``[N, 3]`` and depth ``z/w`` ``[N]`` of N triangles at N pixel centres."""
    height, width = resolution
    fx = (2 * column.to(coefficients.dtype) + 1) / width - 1
    fy = (2 * row.to(coefficients.dtype) + 1) / height - 1
    values = coefficients[..., 0] + coefficients[..., 1] * fx[:, None] + coefficients[..., 2] * fy[:, None]
    return values[:, :3], values[:, 3] / values[:, 4]


def _chunks(counts: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Indices of the non-empty instances, split so that each group covers at most ``budget`` pairs (or one instance)."""
    nonempty = torch.nonzero(counts).flatten()
    groups, start, running = [], 0, torch.cumsum(counts[nonempty], 0)
    while start < nonempty.shape[0]:
        base = running[start - 1] if start else 0
        end = max(start + 1, int(torch.searchsorted(running, base + budget, right=True)))
        groups.append(nonempty[start:end])
        start = end
    return groups


def _output(
    nearest: torch.Tensor, empty: int, coefficients: torch.Tensor, face_count: int, resolution: tuple[int, int], batch: int
) -> torch.Tensor:
    """The winners' barycentrics, depth and index + 1, as nvdiffrast lays them out (clamped the same way)."""
    height, width = resolution
    rast = torch.zeros(batch * height * width, 4, dtype=torch.float32, device=nearest.device)
    pixel = torch.nonzero(nearest != empty).flatten()
    face = nearest[pixel] & ((1 << _INDEX_BITS) - 1)
    image = torch.div(pixel, height * width, rounding_mode="floor")
    within = pixel % (height * width)
    a, zw = _evaluate(
        coefficients[image * face_count + face], within % width, torch.div(within, width, rounding_mode="floor"), resolution
    )
    b = (a[:, :2] / a.sum(dim=1, keepdim=True)).clamp(0, 1)
    b = b / b.sum(dim=1, keepdim=True).clamp(min=1)
    rast[pixel] = torch.cat([b, zw.clamp(-1, 1)[:, None], (face + 1).float()[:, None]], dim=1).float()
    return rast.reshape(batch, height, width, 4)
