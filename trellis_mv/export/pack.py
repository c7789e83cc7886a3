"""Finished UV charts -> one ``size``² texture atlas: each chart turned to its smallest box, then placed.

The GPU unwrap hands over charts in chart-local coordinates (mesh units); this module gives them one
common scale, a rotation each and a place in the texture, and nothing else: no chart is re-cut,
re-parameterised or stretched, so the unwrap's texel density stays uniform.

Two packers, chosen by the number of charts on measurement (benchmarks/pack_charts.py: 2048²,
padding 2, a bumpy sphere cut into 150 to 75k charts; CPU seconds on a shared 2-core machine):

- up to ``XATLAS_CHARTS`` charts, xatlas's bitmap packer (``pack_xatlas``): it interlocks the
  shapes of a few large charts and fills the most (150 charts: 0.65 of the texels against 0.58 on
  shelves; 300: 0.61 against 0.59; 400: 0.60 against 0.595) in 0.3-0.45 s of serial CPU;
- beyond, shelves of our own (``_shelves``): the charts' boxes on rows, the largest scale found by
  bisection, vectorised but for one ``searchsorted`` per row. They fill more from about 500 charts
  on (500: 0.60 against 0.58; 800: 0.60 against 0.56; 3000: 0.57 against 0.46; 20k tiny charts:
  0.47 against 0.27) in a fraction of xatlas's time (20k charts: 0.34 s against 38 s; 75k charts,
  as CuMesh cuts the noisy default test mesh: 0.9 s, of which 0.6 s turning the charts to their
  boxes in torch on one CPU thread; xatlas needed 4-6 s for those on the H200's CPU).

Rotation: each chart is first turned to the smallest of its bounding boxes over ``_ANGLES``
orientations; shelves turn a box standing upright by a further quarter turn. Only rotations, never
a mirror (a mirror flips every triangle). Afterwards the layout is moved into the corner and scaled
up until it meets the far border: a uniform scale above 1 only widens the gaps.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from .pack_xatlas import xatlas_layout

__all__ = ["XATLAS_CHARTS", "pack_charts"]

XATLAS_CHARTS = 400  # up to this many charts xatlas packs (it fills more), beyond it shelves (measured)
_ANGLES = 16  # orientations per chart, evenly over 90°, for its smallest bounding box
_PRECISION = 1e-4  # relative, of the shelves' scale


def pack_charts(uvs: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, size: int, padding: int, *,
                packer: Literal["auto", "xatlas", "shelves"] = "auto") -> torch.Tensor:
    """Chart-local ``uvs`` (V, 2) -> texture coordinates in [0, 1]² of a ``size``² texture, on ``uvs``'s device.

    ``faces`` (F, 3) index ``uvs``; ``chart`` (F,) numbers each face's chart 0..C-1, and no vertex is
    shared by two charts (CONTRACTS.md: the unwrap's side of it). Every chart keeps its shape and its
    sense (moved and rotated, never mirrored), all at one scale; charts lie at least ``padding``
    texels apart and from the border. v = 0 is the first texel row. Vertices no face uses, and charts
    of no area, go to (0, 0). ``packer`` "auto" picks by the chart count (``XATLAS_CHARTS``).
    """
    if size <= 2 * padding + 2:
        raise ValueError(f"size: {size} leaves no room inside a padding of {padding} texels")
    points = uvs.detach().double()
    faces = faces.detach().to(points.device, torch.int64)
    chart = chart.detach().to(points.device, torch.int64)
    owner = torch.full((points.shape[0],), -1, dtype=torch.int64, device=points.device)
    owner[faces.reshape(-1)] = chart.repeat_interleave(3)
    count = int(chart.max()) + 1 if chart.numel() else 0
    local, extent = _boxed(points, owner, count)
    edges = local[faces[:, 1:]] - local[faces[:, :1]]
    twice_area = (edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).abs()
    area = torch.zeros_like(extent[:, 0]).index_add_(0, chart, twice_area)
    texels = torch.zeros_like(local)
    if packer == "xatlas" or (packer == "auto" and count <= XATLAS_CHARTS):
        scale, corner, solid = xatlas_layout(local, faces, owner, extent, size, padding)
        upright = torch.zeros_like(solid)
    else:
        scale, corner, solid, upright = _shelves(extent, area > 0, size, padding)
    solid &= area > 0
    if bool(solid.any()):
        box = torch.where(upright[:, None], extent.flip(1), extent) * scale
        low = corner[solid].amin(dim=0)
        grow = (size - 2 * padding) / float((corner + box)[solid].sub(low).max())
        moved = (owner >= 0) & solid[owner.clamp_min(0)]
        at, x, y = owner[moved], local[moved, 0] * scale, local[moved, 1] * scale
        turned = torch.where(upright[at, None], torch.stack([box[at, 0] - y, x], dim=1), torch.stack([x, y], dim=1))
        texels[moved] = padding + (turned + corner[at] - low) * grow
    return (texels / size).clamp(0, 1).float()


def _boxed(points: torch.Tensor, owner: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every chart turned to its smallest bounding box among ``_ANGLES`` turns, that box's corner at 0; box sizes (C, 2)."""
    used = owner >= 0
    angles = torch.arange(_ANGLES, dtype=points.dtype, device=points.device) * (math.pi / 2 / _ANGLES)
    cos, sin = angles.cos(), angles.sin()
    x, y = points[used, :1], points[used, 1:]
    turned = torch.stack([x * cos + y * sin, y * cos - x * sin])  # (2, used, angles): rotations, never mirrors
    chart_of = owner[used]
    index = chart_of[None, :, None].expand_as(turned)
    low = turned.new_full((2, count, _ANGLES), math.inf).scatter_reduce(1, index, turned, "amin")
    high = turned.new_full((2, count, _ANGLES), -math.inf).scatter_reduce(1, index, turned, "amax")
    best = (high - low).prod(dim=0).argmin(dim=1)
    pick = best[chart_of]
    local = torch.zeros_like(points)
    local[used] = (turned[:, torch.arange(chart_of.shape[0], device=points.device), pick] - low[:, chart_of, pick]).T
    return local, (high - low)[:, torch.arange(count, device=points.device), best].T


def _shelves(extent: torch.Tensor, solid: torch.Tensor, size: int, padding: int
             ) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Texels per unit, each box's corner (C, 2), which boxes are placed (``solid`` ones), which stand upright (turned).

    Next-fit decreasing height: every box lying (its long side along u), the lowest last, filled
    left to right into rows ``padding`` apart, a row as high as its first box. The rows for one
    scale cost one ``searchsorted`` each; the scale is the largest at which they fit, by bisection
    (to ``_PRECISION``).
    """
    upright = extent[:, 1] > extent[:, 0]
    order = torch.argsort(extent.amin(dim=1).where(solid, -1.0), descending=True, stable=True)[: int(solid.sum())]
    width, height = extent.amax(dim=1)[order].cpu().numpy(), extent.amin(dim=1)[order].cpu().numpy()
    corner = torch.zeros_like(extent)
    if width.size == 0:
        return 0.0, corner, solid, upright
    # the boxes' own area, or the widest box's length, bounds the scale from above; halve until it fits
    high = min((size - 2 * padding) / float(width.max()), size / math.sqrt(float((width * height).sum())))
    low = high
    while _rows(width, height, low, size, padding, corners=False) is None:
        high, low = low, low / 2
    while high > low * (1 + _PRECISION):
        middle = (low + high) / 2
        low, high = (middle, high) if _rows(width, height, middle, size, padding, corners=False) is not None else (low, middle)
    corner[order] = torch.from_numpy(_rows(width, height, low, size, padding)).to(corner)
    return low, corner, solid, upright


def _rows(width: np.ndarray, height: np.ndarray, scale: float, size: int, padding: int,
          corners: bool = True) -> np.ndarray | None:
    """Corners (N, 2) of boxes (sorted by height, highest first) filled into rows at ``scale``; None if they overflow.

    With ``corners`` false, only whether they fit (an empty array).
    """
    advance = np.cumsum(width * scale + padding)  # box i ends at advance[i] - padding past its row's start
    placed = np.empty((width.shape[0] if corners else 0, 2))
    start, before, top = 0, 0.0, float(padding)
    while start < width.shape[0]:
        end = int(advance.searchsorted(before + size - padding, side="right"))
        if end <= start or top + height[start] * scale + padding > size:
            return None
        if corners:
            placed[start:end, 0] = padding + advance[start:end] - before - (width[start:end] * scale + padding)
            placed[start:end, 1] = top
        top += height[start] * scale + padding
        before = advance[end - 1]
        start = end
    return placed
