"""``rasterize_uv`` on CUDA: the steps of the torch path as two Triton kernels, one launch each.

Why: the bake rasterizes its atlas (a default job: about 176k triangles at 2048²) on every job. In
torch that takes about a hundred eager launches and a few host synchronisations: the earlier torch
rasterizer took 3.1 ms on the H200 there, nvdiffrast 0.5 ms. Two launches take a fraction of that.

How: ``_nearest`` runs one program per triangle: the setup of ``spans.triangles`` for w = 1 (winding,
box), then for each pixel of the box, widened by one column on each side (a span
may reach a centre on the box's border), the span of its row as ``spans.spans`` computes it, and an
atomic minimum of the triangle index (the lowest wins, as in ``rasterize._rasterize``). ``_texels``
runs over the texels: the winner's barycentrics at the texel centre (``spans.winners``: the corners
relative to the centre, as nvdiffrast's ``rasterize.cu``). The steps shared with the coverage kernel
come from ``triton_spans``; here as there the float operations are torch's, in torch's order, with
IEEE division (``div_rn``) and no fused multiply-add (``enable_fp_fusion=False``), so the results are
bit for bit those of the torch path: tests/gpu/test_raster_gpu.py compares the two on a real atlas,
tests/test_raster_kernels.py through Triton's interpreter on the CPU.

Triton comes with torch's CUDA builds (the image's torch 2.6 brings Triton 3.2), not with its CPU
builds: there the kernels are not defined, and ``rasterize_uv`` takes the torch path.
"""

from __future__ import annotations

import importlib.util

import torch

from .triton_spans import launch_device

__all__ = ["rasterize_uv_cuda"]

_EMPTY = 2**31 - 1
# A program's lanes: 16 triangles x 16 pixels of each per step; a default job's boxes (about 5 x 6
# texels, widened to 7 x 6) take three steps.
_TRIANGLES, _PIXELS = 16, 16
_TEXELS = 1024


def rasterize_uv_cuda(uvs: torch.Tensor, faces: torch.Tensor, size: int) -> torch.Tensor:
    """``rasterize.rasterize_uv`` for CUDA tensors: ``[size, size, 4]``, two kernel launches, no host synchronisation."""
    uvs = uvs.float().contiguous()
    faces = faces.to(device=uvs.device, dtype=torch.int32).contiguous()
    nearest = torch.full((size * size,), _EMPTY, dtype=torch.int32, device=uvs.device)
    rast = torch.empty((size * size, 4), dtype=torch.float32, device=uvs.device)
    with launch_device(uvs):
        if faces.shape[0]:
            _nearest[(triton.cdiv(faces.shape[0], _TRIANGLES),)](
                uvs, faces, nearest, faces.shape[0], size, TRIANGLES=_TRIANGLES, PIXELS=_PIXELS, enable_fp_fusion=False
            )
        _texels[(triton.cdiv(size * size, _TEXELS),)](
            uvs, faces, nearest, rast, size, EMPTY=_EMPTY, TEXELS=_TEXELS, enable_fp_fusion=False
        )
    return rast.view(size, size, 4)


if importlib.util.find_spec("triton") is not None:
    import triton
    import triton.language as tl

    from .triton_spans import box, pixel_centre, row_span, winding

    @triton.jit
    def _corners(uvs, faces, face, mask):
        """Clip-space x, y of a triangle's three corners (``rasterize._uv_clip``: 2u - 1, 2v - 1)."""
        i0 = tl.load(faces + face * 3, mask=mask, other=0)
        i1 = tl.load(faces + face * 3 + 1, mask=mask, other=0)
        i2 = tl.load(faces + face * 3 + 2, mask=mask, other=0)
        x0 = tl.load(uvs + i0 * 2, mask=mask, other=0.0) * 2.0 - 1.0
        y0 = tl.load(uvs + i0 * 2 + 1, mask=mask, other=0.0) * 2.0 - 1.0
        x1 = tl.load(uvs + i1 * 2, mask=mask, other=0.0) * 2.0 - 1.0
        y1 = tl.load(uvs + i1 * 2 + 1, mask=mask, other=0.0) * 2.0 - 1.0
        x2 = tl.load(uvs + i2 * 2, mask=mask, other=0.0) * 2.0 - 1.0
        y2 = tl.load(uvs + i2 * 2 + 1, mask=mask, other=0.0) * 2.0 - 1.0
        return x0, y0, x1, y1, x2, y2

    # Triton compiles a variant per integer argument divisible by 16 or not: face counts and sizes
    # vary per job, and a job should not wait for a compilation the warm-up did not do.
    @triton.jit(do_not_specialize=["face_count", "size"])
    def _nearest(uvs, faces, nearest, face_count, size, TRIANGLES: tl.constexpr, PIXELS: tl.constexpr):
        face = tl.program_id(0) * TRIANGLES + tl.arange(0, TRIANGLES)
        mine = face < face_count
        x0, y0, x1, y1, x2, y2 = _corners(uvs, faces, face, mine)
        sign = winding(x0, y0, 1.0, x1, y1, 1.0, x2, y2, 1.0) * mine  # w = 1 in UV space
        left, top, columns, rows = box(x0, y0, x1, y1, x2, y2, sign, size, size)
        wide = columns + 2
        count = rows * wide
        # per step, PIXELS pixels of each of the program's triangles: [TRIANGLES, PIXELS] lanes
        for start in range(0, tl.max(count, axis=0), PIXELS):
            k = start + tl.arange(0, PIXELS)[None, :]
            r = k // wide[:, None]
            row = top[:, None] + r
            column = left[:, None] - 1 + k - r * wide[:, None]
            first, end = row_span(x0[:, None], y0[:, None], x1[:, None], y1[:, None], x2[:, None], y2[:, None],
                                  sign[:, None], pixel_centre(row.to(tl.float32), size), size)
            inside = (k < count[:, None]) & (column >= first) & (column < end)
            tl.atomic_min(nearest + row * size + column, face[:, None] + 0 * k, mask=inside)

    @triton.jit(do_not_specialize=["size"])
    def _texels(uvs, faces, nearest, rast, size, EMPTY: tl.constexpr, TEXELS: tl.constexpr):
        texel = tl.program_id(0) * TEXELS + tl.arange(0, TEXELS)
        valid = texel < size * size
        face = tl.load(nearest + texel, mask=valid, other=EMPTY)
        hit = valid & (face != EMPTY)
        face = tl.where(hit, face, 0)
        x0, y0, x1, y1, x2, y2 = _corners(uvs, faces, face, hit)
        row = texel // size
        fx = pixel_centre((texel - row * size).to(tl.float32), size)
        fy = pixel_centre(row.to(tl.float32), size)
        # spans.winners: the corners relative to the texel centre (w = 1), rasterize.cu's edge functions,
        # clamped and renormalised ratios
        px0, py0, px1, py1, px2, py2 = x0 - fx, y0 - fy, x1 - fx, y1 - fy, x2 - fx, y2 - fy
        a0 = px1 * py2 - py1 * px2
        a1 = px2 * py0 - py2 * px0
        a2 = px0 * py1 - py0 * px1
        total = a0 + a1 + a2
        inverse = tl.math.div_rn(1.0, tl.where(total == 0, 1.0, total))
        bary0 = tl.minimum(tl.maximum(tl.where(total == 0, 0.0, a0 * inverse), 0.0), 1.0)
        bary1 = tl.minimum(tl.maximum(tl.where(total == 0, 0.0, a1 * inverse), 0.0), 1.0)
        scale = tl.maximum(bary0 + bary1, 1.0)
        out = rast + texel * 4
        tl.store(out, tl.where(hit, tl.math.div_rn(bary0, scale), 0.0), mask=valid)
        tl.store(out + 1, tl.where(hit, tl.math.div_rn(bary1, scale), 0.0), mask=valid)
        tl.store(out + 2, tl.zeros_like(fx), mask=valid)
        tl.store(out + 3, tl.where(hit, (face + 1).to(tl.float32), 0.0), mask=valid)
