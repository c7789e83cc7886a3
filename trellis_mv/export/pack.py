"""Finished UV charts -> one ``size``² texture atlas: each chart turned to its smallest box, xatlas places them.

The GPU unwrap hands over charts in chart-local coordinates (mesh units); this module gives them one
common scale, a rotation each and a place in the texture, and nothing else: no chart is re-cut,
re-parameterised or stretched, so the unwrap's texel density stays uniform. xatlas (jpcy/xatlas, the
PyPI bindings of mworchel/xatlas-python) only packs here: ``add_uv_mesh`` with the chart id as face
material (charts are found by flood fill over *co-located* UVs, so charts that all start at the
origin would merge without it), then its bitmap packer (``PackCharts``: largest chart first, 4096
random positions each, best by atlas extent).

What we do around it, and why (read from xatlas.cpp ``pack::Atlas::packCharts``):

- Rotation is ours: each chart is turned to the smallest of its bounding boxes over ``_ANGLES``
  orientations. xatlas's ``rotate_charts`` swaps u and v, a mirror that flips every triangle, so it
  stays off; ``rotate_charts_to_axis`` would turn the charts too but then the turn is unknown here.
- Scale is ours: xatlas fits ``texels_per_unit`` to a 75 % fill and then grows the atlas past
  ``resolution`` when the charts do not fit (a 2048² request came back 3160²). We pick the texels per
  unit from the charts' area (``_FILL``), ask for ``resolution`` = ``size - 2 * padding``, and when
  charts spill into a second atlas, shrink by the share of the area that fitted and pack again.
  Afterwards the layout is scaled up about its corner until it touches the far border: a uniform
  scale > 1 only widens the gaps.
- Position only is taken from xatlas: it stretches each chart until its box is a whole number of
  texels (up to one texel per side, a few percent on small charts). We read where it put each
  chart's box and centre our unstretched chart in it, which moves no point by more than half a
  texel per axis; so xatlas's gap (its ``padding`` dilates the conservative raster of both
  neighbours: at least ``2 * padding`` texels) is asked for as ``ceil((padding + 1) / 2)``.
- Triangles of zero area in the UVs are left out by xatlas; they move with their chart. A chart with
  no area at all collapses onto the texture's corner (0, 0), a point that covers no texel centre.

Time: xatlas's packer is serial (one chart after another on one thread whatever its thread pool),
about linear in charts; benchmarks/pack_charts.py measures it against the chart count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["pack_charts"]

_ANGLES = 16  # orientations per chart, evenly over 90°, for its smallest bounding box
_FILL = 0.6  # first guess: chart area / atlas area that xatlas's packer reaches at our padding
_ATTEMPTS = 6  # packings tried before giving up (each shrinks by what did not fit)
_INVALID = np.iinfo(np.uint32).max  # xatlas's "no chart" in get_mesh_vertex_assignment


def pack_charts(uvs: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """Chart-local ``uvs`` (V, 2) -> texture coordinates in [0, 1]² of a ``size``² texture, on ``uvs``'s device.

    ``faces`` (F, 3) index ``uvs``; ``chart`` (F,) numbers each face's chart 0..C-1, and no vertex is
    shared by two charts (the contract in CONTRACTS.md, between the unwrap and this packer). Every
    chart keeps its shape and orientation sense (moved and rotated, never mirrored), all at one
    scale; charts lie at least ``padding`` texels apart and from the border. Row convention: v = 0
    is the first texel row. Vertices no face uses go to (0, 0).
    """
    if size <= 2 * padding + 2:
        raise ValueError(f"size: {size} leaves no room inside a padding of {padding} texels")
    device = uvs.device
    points = uvs.detach().to("cpu", torch.float64)
    faces = faces.detach().to("cpu", torch.int64)
    chart = chart.detach().to("cpu", torch.int64)
    owner = torch.full((points.shape[0],), -1, dtype=torch.int64)
    owner[faces.reshape(-1)] = chart.repeat_interleave(3)
    count = int(chart.max()) + 1 if chart.numel() else 0
    local = _boxed(points, owner, count)
    texels = _place(local, faces, chart, owner, size, padding)
    return (texels / size).clamp(0, 1).to(device=device, dtype=torch.float32)


def _boxed(points: torch.Tensor, owner: torch.Tensor, count: int) -> torch.Tensor:
    """Every chart rotated to its smallest bounding box among ``_ANGLES`` turns, that box's corner at 0."""
    used = owner >= 0
    angles = torch.arange(_ANGLES, dtype=torch.float64) * (math.pi / 2 / _ANGLES)
    cos, sin = angles.cos(), angles.sin()
    x, y = points[used, :1], points[used, 1:]
    turned = torch.stack([x * cos + y * sin, y * cos - x * sin])  # (2, used, angles)
    index = owner[used][None, :, None].expand_as(turned)
    low = torch.full((2, count, _ANGLES), math.inf, dtype=torch.float64).scatter_reduce(1, index, turned, "amin")
    high = torch.full((2, count, _ANGLES), -math.inf, dtype=torch.float64).scatter_reduce(1, index, turned, "amax")
    best = ((high - low).prod(dim=0)).argmin(dim=1)
    chart_of = owner[used]
    pick = best[chart_of]
    local = torch.zeros_like(points)
    local[used] = (turned[:, torch.arange(chart_of.shape[0]), pick] - low[:, chart_of, pick[None]][:, 0]).T
    return local


def _place(local: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, owner: torch.Tensor, size: int,
           padding: int) -> torch.Tensor:
    """Texel coordinates (V, 2) in the ``size``² texture: ``local`` at one scale, each chart where xatlas puts it."""
    areas = _face_areas(local[faces])
    area = float(areas.sum())
    texels = torch.zeros_like(local)
    if area == 0:
        return texels
    resolution = size - 2 * padding
    gap = (padding + 2) // 2
    extent = float(local[owner >= 0].max())
    # xatlas shrinks a chart (non-uniformly) that is wider than the atlas less a texel: never let one be.
    scale = min(math.sqrt(_FILL * resolution**2 / area), (resolution - 2 * gap - 2) / extent)
    for _ in range(_ATTEMPTS):
        atlas = _xatlas_pack(local * scale, faces, chart, resolution, gap)
        if atlas.atlas_count <= 1:
            break
        first = torch.from_numpy(atlas.get_mesh_vertex_assignment(0)[0].astype(np.int64))[faces[:, 0]] == 0
        scale *= math.sqrt(float(areas[first].sum()) / area) * 0.98
    else:
        raise RuntimeError(f"xatlas could not pack {int(chart.max()) + 1} charts into one atlas of {size}²")
    _, _, uv = atlas.get_mesh(0)
    piece = torch.from_numpy(atlas.get_mesh_vertex_assignment(0)[1].astype(np.int64))
    placed = piece != _INVALID
    packed = torch.from_numpy(uv).double() * atlas.width
    ours = local * scale
    pieces = atlas.chart_count
    shift = _box_centre(packed[placed], piece[placed], pieces) - _box_centre(ours[placed], piece[placed], pieces)
    # a vertex only zero-area faces use has no piece: it moves with a piece of its own chart
    piece_of_chart = torch.full((int(chart.max()) + 1,), -1, dtype=torch.int64)
    piece_of_chart[owner[placed]] = piece[placed]
    piece = torch.where(placed, piece, torch.where(owner >= 0, piece_of_chart[owner.clamp_min(0)], -1))
    moved = piece >= 0
    layout = ours[moved] + shift[piece[moved]]
    # xatlas leaves half a texel or more before the first chart: move the layout into the corner and
    # scale it up until it meets the far border (a scale above 1 only widens the gaps)
    low = layout.amin(dim=0)
    grow = (size - 2 * padding) / float((layout.amax(dim=0) - low).max())
    texels[moved] = padding + (layout - low) * grow
    return texels


def _xatlas_pack(points: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, resolution: int, gap: int) -> Any:
    """An ``xatlas.Atlas`` with ``points`` (in texels) packed as they are: no rotation, mirror or rescale.

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


def _box_centre(points: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """Centre of each group's bounding box, (groups, 2)."""
    index = group[:, None].expand_as(points)
    low = torch.full((groups, 2), math.inf, dtype=points.dtype).scatter_reduce(0, index, points, "amin")
    high = torch.full((groups, 2), -math.inf, dtype=points.dtype).scatter_reduce(0, index, points, "amax")
    return (low + high) / 2
