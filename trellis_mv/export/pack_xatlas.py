"""xatlas's packer placing our charts: each chart handed over as an outline, moved, never turned or stretched.

xatlas (jpcy/xatlas through mworchel/xatlas-python) only packs here: ``add_uv_mesh``, then its
bitmap packer (``PackCharts``: largest chart first, 4096 random positions each, the best by atlas
extent). What we do around it, and why (read from xatlas.cpp, ``pack::Atlas::packCharts``; measured
with benchmarks/pack_charts.py):

- xatlas gets an outline of each chart, not its triangles: the chart cut into bands ``_BAND``
  texels high, each band's exact x-range (its triangles clipped to the band), joined into one strip
  of trapezoids that covers the chart. xatlas rasterises what it gets, serially and with a clipping
  test per edge texel: on the triangles of a 330k-face mesh it took 1.1-1.3 s of CPU, on their
  outlines 0.3-0.45 s. The outlines are computed in torch on the charts' own device.
- Each outline is its own material: xatlas finds charts by flood fill over *co-located* UVs, so
  charts that all start at the origin would merge without it.
- xatlas's ``rotate_charts`` swaps u and v, a mirror that flips every triangle, so it stays off.
- Scale is ours: xatlas fits ``texels_per_unit`` to a 75 % fill and then grows the atlas past
  ``resolution`` when the charts do not fit (a 2048² request came back 3160²). We pick the texels
  per unit at which the charts' boxes, with xatlas's margins, would cover ``_FILL`` of the atlas
  (a fill xatlas reaches, packing the shapes), ask for ``resolution = size - 2 * padding``, and
  when charts spill into a second atlas, shrink by the share of the outline area that fitted and
  pack again.
- Only translations come from xatlas. It stretches a chart until its box is a whole number of
  texels; an outline's box is one already (``ceil`` of the chart's), so it moves it unchanged and
  the chart inside it moves the same. xatlas keeps ``2 * gap`` texels between the conservative
  rasters of two outlines, so ``gap`` is ``ceil(padding / 2)``.
- A chart thinner than ``_FLAT`` texels (no area to speak of) is left out.

xatlas's packer runs on one thread whatever its thread pool (charts are placed one after the
other), so the container's CPU quota does not change it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["xatlas_layout"]

_BAND = 4.0  # texels: height of the bands of a chart's outline
_FLAT = 0.05  # texels: a chart thinner than this has no area to pack
_FILL = 0.8  # atlas share of the charts' boxes with margins: one packing for 300 to 3000 charts (measured)
_ATTEMPTS = 6  # packings tried before giving up (each shrinks by what did not fit)


def xatlas_layout(local: torch.Tensor, faces: torch.Tensor, owner: torch.Tensor, extent: torch.Tensor, size: int,
                  padding: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Texels per unit, each chart's box corner in xatlas's atlas (C, 2), and which charts have one.

    ``local`` (V, 2): every chart in its smallest box, the box's corner at 0; ``extent`` (C, 2) the
    boxes' sizes; ``owner`` (V,) each vertex's chart (-1: none). The charts are not turned.
    """
    resolution = size - 2 * padding
    gap = (padding + 1) // 2
    scale = _first_scale(extent, resolution, gap)
    for _ in range(_ATTEMPTS):
        solid = (extent * scale).amin(dim=1) >= _FLAT
        if not bool(solid.any()):
            return scale, extent, solid
        outline, strip, strip_chart = (part.cpu() for part in _outlines(local * scale, faces, owner, extent * scale, solid))
        atlas = _xatlas_pack(outline, strip, strip_chart, resolution, gap)
        if atlas.atlas_count <= 1:
            break
        first = torch.from_numpy(atlas.get_mesh_vertex_assignment(0)[0].astype(np.int64))[strip[:, 0]] == 0
        areas = _face_areas(outline[strip])
        scale *= math.sqrt(float(areas[first].sum() / areas.sum())) * 0.98
    else:
        raise RuntimeError(f"xatlas could not pack {extent.shape[0]} charts into one atlas of {size}²")
    packed = torch.from_numpy(atlas.get_mesh(0)[2]).double() * atlas.width
    vertex_chart = torch.zeros(outline.shape[0], dtype=torch.int64)
    vertex_chart[strip.reshape(-1)] = strip_chart.repeat_interleave(3)
    corner = _box_low(packed, vertex_chart, extent.shape[0]) - _box_low(outline, vertex_chart, extent.shape[0])
    return scale, corner.to(local.device), solid


def _first_scale(extent: torch.Tensor, resolution: int, gap: int) -> float:
    """Texels per unit at which the charts' boxes, each with xatlas's margins, cover ``_FILL`` of the atlas.

    Solves s² Σwh + s·m·Σ(w + h) + C·m² = _FILL·R², m = 2 * gap + 1 (the dilation on both sides and a
    texel of conservative rasterisation); capped so that no chart is wider than the atlas less its
    margins, which xatlas would shrink unevenly. 0 when every box is flat.
    """
    margin = 2 * gap + 1
    quadratic, linear = float(extent.prod(dim=1).sum()), margin * float(extent.sum())
    if quadratic == 0:
        return 0.0
    constant = margin**2 * extent.shape[0] - _FILL * resolution**2
    scale = (math.sqrt(linear**2 - 4 * quadratic * constant) - linear) / (2 * quadratic)
    return min(scale, (resolution - 2 * gap - 3) / float(extent.max()))


def _outlines(points: torch.Tensor, faces: torch.Tensor, owner: torch.Tensor, extent: torch.Tensor,
              solid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per solid chart, a strip of trapezoids covering it: vertices (texels), faces, and each face's chart.

    ``points`` are in texels, every chart's box at [0, w] x [0, h] (``extent``). The outline's box is
    [0, ceil(w)] x [0, ceil(h)], cut into ``ceil(ceil(h) / _BAND)`` equal bands; a band's x-range is
    that of the chart clipped to it (``_slab_ranges``). The strip's row between two bands spans both
    ranges, so each trapezoid covers its band's part of the chart. A band the chart leaves empty spans
    the whole width.
    """
    box = extent.ceil()
    bands = (box[:, 1] / _BAND).ceil().clamp_min(1).long() * solid
    per_texel = bands / box[:, 1].clamp_min(1)  # bands per texel of height: lines at whole numbers
    vertex_chart = owner.clamp_min(0)
    level = torch.where(solid[vertex_chart] & (owner >= 0), points[:, 1] * per_texel[vertex_chart], -1.0)
    left, right = _slab_ranges(level, points[:, 0], owner, faces, bands)
    band_chart = torch.repeat_interleave(torch.arange(extent.shape[0], device=points.device), bands)
    empty = left > right
    width = box[band_chart, 0]
    left = left.where(~empty, 0.0).minimum(width - _FLAT)
    right = right.where(~empty, width).maximum(left + _FLAT).minimum(width)
    first_band = bands.cumsum(0) - bands
    total = int(bands.sum())
    # band k of a chart lies between its rows k and k + 1; a row spans the bands on both sides of it
    rows = bands + solid.long()
    row_chart = torch.repeat_interleave(torch.arange(extent.shape[0], device=points.device), rows)
    row = torch.arange(row_chart.shape[0], device=points.device) - torch.repeat_interleave(rows.cumsum(0) - rows, rows)
    below = first_band[row_chart] + (row - 1).clamp_min(0)
    above = first_band[row_chart] + row.minimum(bands[row_chart] - 1)
    row_left = torch.minimum(left[below], left[above])
    row_right = torch.maximum(right[below], right[above])
    widest = torch.zeros_like(box[:, 0]).scatter_reduce(0, row_chart, row_right, "amax")
    row_right = row_right.where(row_right != widest[row_chart], box[row_chart, 0])  # the box: whole texels
    row_y = row * box[row_chart, 1] / bands[row_chart]  # the last row exactly at the box's whole texels
    vertices = torch.stack([row_left, row_y, row_right, row_y], dim=1).view(-1, 2)
    start = 2 * (torch.arange(total, device=points.device) + (solid.long().cumsum(0) - solid.long())[band_chart])
    strip = torch.stack([start, start + 1, start + 3, start, start + 3, start + 2], dim=1).view(-1, 3)
    return vertices, strip, band_chart.repeat_interleave(2)


def _slab_ranges(level: torch.Tensor, value: torch.Tensor, owner: torch.Tensor, faces: torch.Tensor,
                 slabs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest ``value`` of each chart within each of its slabs, slab after slab, chart after chart.

    ``level`` is each vertex's position across the slabs (slab k between k and k + 1; -1: leave the
    vertex's chart out), ``slabs`` the number of slabs per chart. The chart clipped to a slab has its
    extremes among the vertices in the slab and the edges' crossings of the slab's two lines, so
    every vertex counts for its slab and every crossing for the slabs on both sides of its line.
    An empty slab keeps (inf, -inf).
    """
    device = level.device
    first = slabs.cumsum(0) - slabs
    total = int(slabs.sum())
    low, high = value.new_full((total,), math.inf), value.new_full((total,), -math.inf)
    used = level >= 0
    chart = owner[used]
    slot = first[chart] + level[used].floor().long().minimum(slabs[chart] - 1)
    low.scatter_reduce_(0, slot, value[used], "amin")
    high.scatter_reduce_(0, slot, value[used], "amax")
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).T.contiguous()
    level_start, level_end = level.take(edges[0]), level.take(edges[1])
    first_line = level_start.minimum(level_end).ceil().long()
    lines = (level_start.maximum(level_end).floor().long() - first_line + 1).clamp_min(0)
    lines *= (level_start != level_end) & (level_start >= 0) & (level_end >= 0)
    edge = torch.repeat_interleave(torch.arange(lines.shape[0], device=device), lines)
    nth = torch.arange(edge.shape[0], device=device) - torch.repeat_interleave(lines.cumsum(0) - lines, lines)
    line = first_line.take(edge) + nth
    start, end = edges[0].take(edge), edges[1].take(edge)
    along = (line - level.take(start)) / (level.take(end) - level.take(start))
    crossing = value.take(start) + along * (value.take(end) - value.take(start))
    chart = owner.take(start)
    for side in (line - 1, line):  # the slabs below and above the line
        inside = (side >= 0) & (side < slabs[chart])
        slot = first[chart[inside]] + side[inside]
        low.scatter_reduce_(0, slot, crossing[inside], "amin")
        high.scatter_reduce_(0, slot, crossing[inside], "amax")
    return low, high


def _xatlas_pack(points: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, resolution: int, gap: int) -> Any:
    """An ``xatlas.Atlas`` with ``points`` (texels, on the CPU) packed as they are: not turned, mirrored or scaled.

    A fresh atlas each time: a second ``generate`` on the same one adds the charts a second time.
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_uv_mesh(points.float().numpy(), faces.numpy().astype(np.uint32), chart.numpy().astype(np.uint32)[:, None])
    options = xatlas.PackOptions()
    options.resolution, options.padding, options.texels_per_unit, options.bilinear = resolution, gap, 1.0, False
    options.rotate_charts = options.rotate_charts_to_axis = options.blockAlign = options.bruteForce = False
    atlas.generate(xatlas.ChartOptions(), options)
    return atlas


def _face_areas(corners: torch.Tensor) -> torch.Tensor:
    """Unsigned areas of triangles given as (F, 3, 2) corners."""
    edges = corners[:, 1:] - corners[:, :1]
    return (edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).abs() / 2


def _box_low(points: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """The low corner of each group's bounding box, (groups, 2)."""
    index = group[:, None].expand_as(points)
    return points.new_full((groups, 2), math.inf).scatter_reduce(0, index, points, "amin")
