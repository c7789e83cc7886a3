"""How good a UV atlas is, per face, per chart and for the whole atlas (torch, CPU or CUDA).

The per-face primitive is the Jacobian of the map from UV space onto the surface, after Sander,
Snyder, Gortler and Hoppe, "Texture mapping progressive meshes" (SIGGRAPH 2001), section 3: its
singular values Γ ≥ γ say how far one unit of texture stretches on the surface; the L2 stretch
``sqrt((Γ² + γ²) / 2)`` is 1 for an isometry and grows with any distortion, L∞ is Γ. A chart's
or an atlas's L2 stretch is the area-weighted root mean square of the faces' (Sander's L2 norm),
taken after scaling the UVs so that their total area equals the surface's, so that it does not
depend on how large the atlas is drawn. ``charts.py`` decides with these numbers which charts to
solve again; the GPU tests report ``atlas_quality`` for both unwraps on one mesh.

A face is flipped when its UV winding disagrees with the rest of its chart: a chart as a whole may
be mirrored (xatlas's may), which the bake follows, but a face turned over inside a chart puts its
texels on top of its neighbours'. A face whose UV area is zero in float32 covers no texel and no
other face's; it is counted apart (``uv_degenerate_faces``). On the GPU tests' mesh these are
slivers a few billionths of the mesh's size thick, alone in their charts, in either unwrap's atlas.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch

from ..raster import texel_counts
from .segments import components, compact, segment_sum

__all__ = ["FaceStretch", "atlas_quality", "chart_stretch", "face_stretch", "flipped_faces", "overlapping_charts",
           "seam_length", "vertex_charts"]

# Texels across each chart's tile in ``overlapping_charts``, and how many of them may be covered twice
# (a texel centre exactly on a corner that several faces share can count twice).
TILE = 64
CHARTS_PER_GRID = 4096  # 64 x 64 tiles: 4096² texels, ~70 MB per count buffer
OVERLAP_TEXELS = 1


@dataclass(frozen=True)
class FaceStretch:
    """Per face, float64: surface area, signed UV area, and Sander's L2 and L∞ stretch (inf at zero UV area)."""

    area: torch.Tensor
    uv_area: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor


def face_stretch(vertices: torch.Tensor, uvs: torch.Tensor, faces: torch.Tensor) -> FaceStretch:
    """Sander et al.'s per-triangle stretch of the map from ``uvs`` onto ``vertices`` (section 3, eq. for S_s, S_t)."""
    q = vertices.double()[faces.long()]  # (F, 3, 3)
    s, t = uvs.double()[faces.long()].unbind(-1)  # (F, 3) each
    uv_area = ((s[:, 1] - s[:, 0]) * (t[:, 2] - t[:, 0]) - (s[:, 2] - s[:, 0]) * (t[:, 1] - t[:, 0])) / 2
    twice = torch.where(uv_area == 0, torch.ones_like(uv_area), 2 * uv_area)[:, None]
    d_s = (q[:, 0] * (t[:, 1] - t[:, 2])[:, None] + q[:, 1] * (t[:, 2] - t[:, 0])[:, None]
           + q[:, 2] * (t[:, 0] - t[:, 1])[:, None]) / twice
    d_t = (q[:, 0] * (s[:, 2] - s[:, 1])[:, None] + q[:, 1] * (s[:, 0] - s[:, 2])[:, None]
           + q[:, 2] * (s[:, 1] - s[:, 0])[:, None]) / twice
    a, b, c = (d_s * d_s).sum(1), (d_s * d_t).sum(1), (d_t * d_t).sum(1)
    degenerate = uv_area == 0
    l2 = torch.where(degenerate, torch.inf, ((a + c) / 2).sqrt())
    linf = torch.where(degenerate, torch.inf, (((a + c) + ((a - c).square() + 4 * b.square()).sqrt()) / 2).sqrt())
    area = torch.linalg.cross(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]).norm(dim=1) / 2
    return FaceStretch(area=area, uv_area=uv_area, l2=l2, linf=linf)


def chart_stretch(stretch: FaceStretch, chart: torch.Tensor, count: int, counted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sander's L2 norm per chart, and each face's L∞, both at its chart's own scale (UV area = surface area).

    Only faces marked in ``counted`` take part in a chart's scale and norm (e.g. not the degenerate
    ones); a counted face with zero UV area makes its chart's numbers infinite.
    """
    tiny = torch.finfo(stretch.area.dtype).tiny
    surface = segment_sum(torch.where(counted, stretch.area, 0.0), chart, count).clamp_min(tiny)
    uv = segment_sum(torch.where(counted, stretch.uv_area.abs(), 0.0), chart, count)
    scale = (uv / surface).sqrt()
    l2 = (segment_sum(torch.where(counted, stretch.l2.square() * stretch.area, 0.0), chart, count) / surface).sqrt() * scale
    return torch.where(surface > tiny, l2, 1.0), stretch.linf * scale[chart]


def overlapping_charts(uvs: torch.Tensor, faces: torch.Tensor, vertex_chart: torch.Tensor, count: int) -> torch.Tensor:
    """Per chart: whether its ``faces`` cover a texel twice when the chart is drawn alone, ``TILE`` texels across.

    Every chart gets a tile of its own in a grid, so one ``raster.texel_counts`` call sees
    ``CHARTS_PER_GRID`` of them at once: a grid for all of a noisy mesh's ~50k charts would be 14k
    texels across, gigabytes of counts. A flipped face overlaps its neighbours by definition; among
    unflipped ones this finds a fan that turns more than once around a vertex, and a chart's boundary
    running over itself. ``vertex_chart`` is each vertex's chart; no vertex is shared by two charts.
    """
    def extreme(reduce: str, start: float) -> torch.Tensor:
        out = torch.full((count, 2), start, dtype=uvs.dtype, device=uvs.device)
        return out.scatter_reduce(0, vertex_chart[:, None].expand(-1, 2), uvs, reduce)

    low, high = extreme("amin", math.inf), extreme("amax", -math.inf)
    extent = (high - low).amax(dim=1).clamp_min(torch.finfo(uvs.dtype).tiny)
    # off the texel grid by an irrational step, so that regular meshes do not put vertices on texel centres
    placed = (uvs - low[vertex_chart]) / extent[vertex_chart, None] * (TILE - 3) + 1 / math.pi + 1
    face_chart = vertex_chart[faces[:, 0].long()]
    overlapping = torch.zeros(count, dtype=torch.bool, device=uvs.device)
    for first in range(0, count, CHARTS_PER_GRID):
        charts = min(CHARTS_PER_GRID, count - first)
        across = math.ceil(math.sqrt(charts))
        local = (vertex_chart - first).clamp(0, charts - 1)
        tile = torch.stack([local % across, torch.div(local, across, rounding_mode="floor")], dim=1)
        mine = (face_chart >= first) & (face_chart < first + charts)
        counts = texel_counts((placed + tile * TILE) / (across * TILE), faces[mine], across * TILE)
        rows, columns = (counts > 1).nonzero(as_tuple=True)
        chart = torch.div(rows, TILE, rounding_mode="floor") * across + torch.div(columns, TILE, rounding_mode="floor")
        overlapping[first:first + charts] = torch.bincount(chart, minlength=charts)[:charts] > OVERLAP_TEXELS
    return overlapping


def vertex_charts(faces: torch.Tensor, vertex_count: int) -> tuple[torch.Tensor, int]:
    """The charts of a UV-split mesh: faces joined through shared vertices, one compact id per face."""
    faces = faces.long()
    corner_face = torch.arange(faces.shape[0], device=faces.device).repeat_interleave(3)
    first = torch.full((vertex_count,), faces.shape[0], dtype=torch.long, device=faces.device)
    first.scatter_reduce_(0, faces.reshape(-1), corner_face, reduce="amin")
    pairs = torch.stack([corner_face, first[faces.reshape(-1)]], dim=1)
    return compact(components(pairs, faces.shape[0]))


def seam_length(vertices: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor) -> float:
    """Surface length of the edges where two charts meet (each counted once), for a mesh split along its seams.

    Split copies of a vertex hold the same position, so positions weld the mesh back together.
    """
    _, welded = torch.unique(vertices, dim=0, return_inverse=True)
    corners = welded[faces.long()]
    ends = torch.stack([corners, corners.roll(-1, dims=1)], dim=2).reshape(-1, 2)
    low, high = ends.min(dim=1).values, ends.max(dim=1).values
    edge, count = compact(low * (int(welded.max()) + 1) + high)
    owner = chart.long().repeat_interleave(3)
    smallest = torch.full((count,), torch.iinfo(torch.long).max, device=owner.device).scatter_reduce(0, edge, owner, "amin")
    largest = torch.full((count,), -1, device=owner.device).scatter_reduce(0, edge, owner, "amax")
    length = torch.zeros(count, dtype=torch.float64, device=owner.device)
    positions = vertices.double()
    length[edge] = (positions[faces.long().reshape(-1)] - positions[faces.long().roll(-1, dims=1).reshape(-1)]).norm(dim=1)
    return float(length[smallest != largest].sum())


def flipped_faces(uv_area: torch.Tensor, chart: torch.Tensor, count: int) -> torch.Tensor:
    """Per face: whether its signed UV area has the sign opposite to its chart's total (zero is not)."""
    return uv_area * torch.sign(segment_sum(uv_area, chart, count))[chart] < 0


def atlas_quality(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, size: int) -> dict[str, float | int]:
    """Chart count, flipped faces, overlap, packing, stretch and texel-density spread of a packed, UV-split mesh.

    ``overlap_share``: texels covered twice or more over texels covered, in a ``size``² atlas
    (``raster.texel_counts``); ``packing_efficiency``: texels covered over all texels;
    ``stretch_l2_mean`` is Sander's L2 norm of the whole atlas (uniform-density atlases score lower),
    ``stretch_l2_max`` its worst face at the same scale; ``density_spread`` is the 95th over the 5th
    percentile of the charts' UV area / surface area; ``seam_length`` in the mesh's unit.
    """
    counts = texel_counts(uvs, faces, size)
    covered = int((counts > 0).sum())
    chart, count = vertex_charts(faces, vertices.shape[0])
    stretch = face_stretch(vertices, uvs, faces)
    flipped = flipped_faces(stretch.uv_area, chart, count)
    uv_degenerate = stretch.uv_area == 0
    surface, uv = float(stretch.area.sum()), float(stretch.uv_area.abs().sum())
    scale = (uv / surface) ** 0.5 if surface > 0 else 1.0
    good = ~flipped & ~uv_degenerate
    l2 = stretch.l2[good] * scale
    mean = float(((l2.square() * stretch.area[good]).sum() / stretch.area[good].sum()).sqrt()) if bool(good.any()) else float("nan")
    density = segment_sum(stretch.uv_area.abs(), chart, count) / segment_sum(stretch.area, chart, count).clamp_min(1e-300)
    low, high = torch.quantile(density, torch.tensor([0.05, 0.95], dtype=density.dtype, device=density.device)).tolist()
    return {
        "charts": count,
        "flipped_faces": int(flipped.sum()),
        "uv_degenerate_faces": int(uv_degenerate.sum()),
        "overlap_share": round(int((counts > 1).sum()) / max(covered, 1), 6),
        "packing_efficiency": round(covered / size**2, 4),
        "stretch_l2_mean": round(mean, 4),
        "stretch_l2_max": round(float(l2.max()), 4) if l2.numel() else float("nan"),
        "density_spread": round(high / low, 4) if low > 0 else float("inf"),
        "seam_length": round(seam_length(vertices, faces, chart), 4),
    }
