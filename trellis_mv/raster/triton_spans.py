"""``spans``' steps as Triton device functions, for the kernels of ``uv_kernel`` and ``coverage_kernel``.

Each function takes the torch path's float operations in its order, with IEEE division
(``div_rn``); the kernels that call them compile without fused multiply-add
(``enable_fp_fusion=False``). So a kernel built from them gives the torch path's pixels bit for bit,
on any device the torch path runs on (``spans._centres``). One difference changes no pixel: the torch
path's infinite bounds are ±3e38 here (a bound is only used clamped to the image, where both give
the same column).

Triton comes with torch's CUDA builds (the image's torch 2.6 brings Triton 3.2), not with its CPU
builds: there nothing is defined but :func:`launch_device`.
"""

from __future__ import annotations

import contextlib
import importlib.util

import torch

__all__ = ["box", "column_at", "launch_device", "pixel_centre", "row_span", "winding"]


def launch_device(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """The context to launch a kernel on ``tensor`` in: its CUDA device made current (Triton launches on
    the current one); nothing for a CPU tensor, which only Triton's interpreter takes (TRITON_INTERPRET=1,
    tests/test_raster_kernels.py)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


if importlib.util.find_spec("triton") is not None:
    import triton
    import triton.language as tl

    @triton.jit
    def winding(x0, y0, w0, x1, y1, w1, x2, y2, w2):
        """The sign of ``det[x; y; w] = w0·c0 + w1·c1 + w2·c2`` (``spans.triangles``, summed in that order):
        +1, -1, or 0 without area."""
        total = w0 * (x1 * y2 - y1 * x2) + w1 * (x2 * y0 - y2 * x0) + w2 * (x0 * y1 - y0 * x1)
        return _sign(total)

    @triton.jit
    def box(x0, y0, x1, y1, x2, y2, sign, width, height):
        """``spans.triangles``' box of pixel centres of the corners (clip x/w, y/w): its first column and
        row, and its columns and rows (0 where ``sign`` is 0: a skipped triangle)."""
        px0, px1, px2 = _centre_units(x0, width), _centre_units(x1, width), _centre_units(x2, width)
        py0, py1, py2 = _centre_units(y0, height), _centre_units(y1, height), _centre_units(y2, height)
        left = tl.minimum(tl.maximum(tl.math.ceil(tl.minimum(tl.minimum(px0, px1), px2)), 0.0), width * 1.0).to(tl.int32)
        top = tl.minimum(tl.maximum(tl.math.ceil(tl.minimum(tl.minimum(py0, py1), py2)), 0.0), height * 1.0).to(tl.int32)
        right = tl.minimum(tl.maximum(tl.math.floor(tl.maximum(tl.maximum(px0, px1), px2)), -1.0), width - 1.0).to(tl.int32)
        bottom = tl.minimum(tl.maximum(tl.math.floor(tl.maximum(tl.maximum(py0, py1), py2)), -1.0), height - 1.0).to(tl.int32)
        columns = tl.maximum(right - left + 1, 0) * (sign != 0)
        rows = tl.maximum(bottom - top + 1, 0) * (sign != 0) * (columns > 0)
        return left, top, columns, rows

    @triton.jit
    def row_span(x0, y0, x1, y1, x2, y2, sign, fy, width):
        """``spans.spans`` for one row at ``fy``: the columns ``first <= column < end`` whose centres the
        triangle of corners (clip x/w, y/w) and winding ``sign`` covers (the fill rule of ``spans``)."""
        bound0, slope0, opens0 = _edge_on_row(x1, y1, x2, y2, sign, fy)
        bound1, slope1, opens1 = _edge_on_row(x2, y2, x0, y0, sign, fy)
        bound2, slope2, opens2 = _edge_on_row(x0, y0, x1, y1, sign, fy)
        low = tl.maximum(tl.maximum(tl.where(slope0 > 0, bound0, -3e38), tl.where(slope1 > 0, bound1, -3e38)),
                         tl.where(slope2 > 0, bound2, -3e38))
        high = tl.minimum(tl.minimum(tl.where(slope0 < 0, bound0, 3e38), tl.where(slope1 < 0, bound1, 3e38)),
                          tl.where(slope2 < 0, bound2, 3e38))
        # an edge along the row: all of it or none; on it, the triangle above it takes it
        open_row = opens0 & opens1 & opens2
        first = column_at(low, width)
        return first, tl.where(open_row, tl.maximum(column_at(high, width), first), first)

    @triton.jit
    def column_at(fx, width):
        """``spans._column_at``: the first column whose centre lies at or right of ``fx``, clamped to 0..width."""
        column = tl.math.ceil(tl.math.div_rn((fx + 1.0) * width - 1.0, 2.0))
        return tl.minimum(tl.maximum(column, 0.0), width * 1.0).to(tl.int32)

    @triton.jit
    def pixel_centre(index, size):
        """Clip x (or y) of pixel centre ``index``: ``(2i + 1) / W - 1``."""
        return tl.math.div_rn(2.0 * index + 1.0, size * 1.0) - 1.0

    @triton.jit
    def _sign(value):
        return tl.where(value > 0, 1.0, tl.where(value < 0, -1.0, 0.0))

    @triton.jit
    def _edge_on_row(xj, yj, xk, yk, sign, fy):
        """``spans._edges_on_row`` for one edge: crossing, slope sign, and whether it opens the row."""
        swap = (yj > yk) | ((yj == yk) & (xj > xk))
        xp, yp = tl.where(swap, xk, xj), tl.where(swap, yk, yj)
        xq, yq = tl.where(swap, xj, xk), tl.where(swap, yj, yk)
        flat = yp == yq
        t = tl.math.div_rn(fy - yp, tl.where(flat, 1.0, yq - yp))
        crossing = xp + t * (xq - xp)
        slope = _sign(yj - yk) * sign
        flat_level = _sign(yp - fy) * _sign(xj - xk) * sign
        flat_b = _sign(xk - xj) * sign
        opens = (slope != 0) | (flat_level > 0) | ((flat_level == 0) & (flat_b > 0))
        return crossing, slope, opens

    @triton.jit
    def _centre_units(x, size):
        """Clip x (or y) in pixel-centre units, ``(x + 1)·W / 2 - 0.5``: centre i sits at i."""
        return tl.math.div_rn((x + 1.0) * size, 2.0) - 0.5
