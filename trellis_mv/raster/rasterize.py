"""The rasterizer's public functions: camera views, a UV atlas, coverage, texel counts, interpolation.

Each is a few lines over ``spans`` (torch, every device). On CUDA, where Triton is installed (it comes
with torch's CUDA builds), ``rasterize_uv`` runs the two kernels of ``uv_kernel`` and ``coverage`` the
kernel of ``coverage_kernel`` instead, which take the same steps in one launch each, to the same bits.
"""

from __future__ import annotations

import importlib.util

import torch

from .spans import BYTES_PER_PIXEL, INDEX_BITS, counts, depth_at, expand, image_groups, scratch_bytes, spans, triangles, winners

__all__ = ["coverage", "interpolate", "rasterize", "rasterize_uv", "texel_counts"]

_DEPTH_LEVELS = 2**30 - 1  # depth quantised into the bits above the index: nearest wins, then lowest index
_TRITON = importlib.util.find_spec("triton") is not None  # the kernels are imported where used, not here


def rasterize(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """What ``nvdiffrast.torch.rasterize`` returns first, ``[B, H, W, 4]``, from clip-space vertices
    ``[B, V, 4]``, triangles ``[F, 3]`` and a size ``(H, W)``: per pixel the perspective-correct
    barycentrics ``(b0, b1)`` of the nearest triangle, its depth ``z/w`` and its index + 1 (0 where
    none covers the pixel centre); row 0 is the bottom of the image (y = -1), as in OpenGL."""
    return _rasterize(clip, faces, resolution, depth_test=True)


def coverage(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """Whether any triangle covers each pixel centre, ``[B, H, W]`` bool: all that silhouettes need.

    On CUDA, ``coverage_kernel``'s one launch (the per-view fit renders about 1500 silhouettes per job).
    """
    if clip.is_cuda and _TRITON:
        from .coverage_kernel import coverage_cuda

        return coverage_cuda(clip, faces, resolution)
    return counts(clip, faces, resolution) > 0


def rasterize_uv(uvs: torch.Tensor, faces: torch.Tensor, size: int) -> torch.Tensor:
    """A ``size``² atlas rasterized in UV space, ``[size, size, 4]``: barycentrics (b0, b1), 0, triangle + 1.

    ``uvs`` ``(V, 2)`` in [0, 1], v = 0 on row 0. The same texels and barycentrics as :func:`rasterize`
    of the flat triangles ``(2u - 1, 2v - 1, 0, 1)``, without a depth test: charts do not overlap, and
    where triangles do, the lowest index wins. On CUDA, ``uv_kernel``'s two launches (the bake's budget).
    """
    if uvs.is_cuda and _TRITON:
        from .uv_kernel import rasterize_uv_cuda

        return rasterize_uv_cuda(uvs, faces, size)
    return _rasterize(_uv_clip(uvs)[None], faces, (size, size), depth_test=False)[0]


def texel_counts(uvs: torch.Tensor, faces: torch.Tensor, size: int) -> torch.Tensor:
    """How many triangles cover each texel centre of a ``size``² atlas: ``(size, size)`` int32.

    ``uvs`` ``(V, 2)`` in [0, 1], v = 0 on row 0 (the bake's convention); a texel counted 2 or more
    lies under two charts (or under a chart folded over itself). A texel centre on an edge that two
    triangles share counts once (the fill rule), so a chart without folds counts 1 throughout.
    """
    return counts(_uv_clip(uvs)[None], faces, (size, size))[0]


def interpolate(attributes: torch.Tensor, rast: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-vertex ``attributes`` ``[V, C]`` at every pixel of ``rast`` ``[..., 4]``: ``[..., C]``, 0 where none.

    nvdiffrast's ``interpolate``: ``b0 * a0 + b1 * a1 + (1 - b0 - b1) * a2`` over the pixel's triangle.
    """
    face = rast[..., 3].long() - 1
    corners = attributes[faces.long()[face.clamp(min=0)]]  # [..., 3, C]
    weights = torch.stack([rast[..., 0], rast[..., 1], 1 - rast[..., 0] - rast[..., 1]], dim=-1)
    return (corners * weights[..., None]).sum(dim=-2) * (face >= 0)[..., None]


def _rasterize(clip: torch.Tensor, faces: torch.Tensor, resolution: tuple[int, int], *, depth_test: bool) -> torch.Tensor:
    """Per image group: spans expanded into their pixels, one key per pixel kept by ``amin``, then the winners."""
    batch, height, width = clip.shape[0], *resolution
    scratch = scratch_bytes(clip.device)
    rast = torch.zeros(batch, height * width, 4, dtype=torch.float32, device=clip.device)
    key_type = torch.int64 if depth_test else torch.int32  # UV space: the index alone is the key
    empty = torch.iinfo(key_type).max
    for images in image_groups(batch, faces.shape[0], scratch):
        setup = triangles(clip[images], faces, resolution)
        nearest = torch.full(((images.stop - images.start) * height * width,), empty, dtype=key_type, device=clip.device)
        pixels = setup.rows * setup.columns  # bounds the pixels of a chunk's spans
        for instance, row, first, end in spans(setup, resolution, pixels, scratch // BYTES_PER_PIXEL):
            span, offset = expand(end - first)
            instance, row, column = instance[span], row[span], first[span] + offset
            face = instance % setup.face_count
            if depth_test:
                zw = depth_at(setup.depth[instance], column, row, resolution)
                key = (((zw.clamp(-1, 1) + 1) / 2 * _DEPTH_LEVELS).long() << INDEX_BITS) | face
            else:
                key = face.int()
            pixel = torch.div(instance, setup.face_count, rounding_mode="floor") * (height * width) + row * width + column
            nearest.scatter_reduce_(0, pixel, key, reduce="amin")
        rast[images] = winners(nearest, empty, clip[images], faces, resolution, scratch).reshape(-1, height * width, 4)
    return rast.reshape(batch, height, width, 4)


def _uv_clip(uvs: torch.Tensor) -> torch.Tensor:
    """UVs as clip-space vertices ``[V, 4]``: u, v in [0, 1] across the image, v = 0 on row 0, z = 0, w = 1."""
    ones = torch.ones_like(uvs[:, :1], dtype=torch.float32)
    return torch.cat([uvs.float() * 2 - 1, ones * 0, ones], dim=1)
