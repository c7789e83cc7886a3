"""Charts made flat, all at once: planar projection, a conformal solve where it fails, splits where that fails.

Input: a welded mesh and a chart id per face (CuMesh's GPU clustering in production, known
partitions in tests). Each round works on every pending chart together, as xatlas does for one
chart at a time (its ``Chart::parameterize``: planar or orthogonal projection when valid, else LSCM,
then a quality check that sends bad charts back to be split):

1. cut: charts become edge-connected components (a cluster in two pieces or touching itself at one
   vertex is two charts) and each (chart, vertex) pair becomes a vertex of its own;
2. project: each chart onto its best-fit plane (area-weighted PCA of the surface; the normal turned
   towards the area-weighted mean normal, or that mean normal where PCA's lies across it);
3. check (``Limits``): no folded face (flipped, or overlapping its neighbours around a vertex),
   Sander's L2 stretch of the chart within bound, and faces whose L∞ exceeds its bound at most a
   small share of the chart's area (a worst-face bound would fail charts for slivers, which LSCM
   stretches at will and which hold no texture to speak of); degenerate faces
   (``clean.degenerate_faces``) are dropped later and not checked;
4. solve: the charts that fail get LSCM in one batch (``lscm``), started from the projection;
5. check again, now also whether a chart covers itself (``uv_quality.overlapping_charts``). A chart
   whose only fault is a few folded faces (``Limits.mend``: folds in the surface itself, which no
   flattening can unfold, a face wound against its neighbours, or LSCM's own on bad triangles) lets
   them go as charts of their own; any other that fails is cut in two across its widest spread (of
   normals when they spread wide, a tube or a cap; else of positions) for the next round.

A chart with a hole is no problem for projection or LSCM; a closed band (a tube) folds onto itself
under both, flips, and is cut across its normals; a spiral ramp covers itself, and is cut until no
piece does. In the last of ``ROUNDS`` rounds neither stretch nor covering itself fails a chart any
more (either is better than its faces scattered one by one); the faces of charts that still have many folds become
one chart per face, laid out in its own plane: a single triangle never fails. Each chart's UVs are
scaled so that its UV area equals its surface area (uniform texel density), in the mesh's unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .clean import degenerate_faces
from .lscm import lscm
from .segments import compact, components, edge_neighbours, segment_sum
from .uv_quality import chart_stretch, face_stretch, overlapping_charts

__all__ = ["Charts", "Limits", "parameterize"]

ROUNDS = 4
# Mean normal length (|Σ area·normal| / Σ area) below which a failing chart is cut across its normals:
# 0.64 for a half cylinder, 0.5 for a hemisphere, 0 for a tube; about 0.9 for a 45° cap.
SPREAD_NORMALS = 0.8
# A chart may let this many folded faces go, however small it is: one fold takes a vertex's ring of faces.
MEND_FACES = 16
# Radians beyond a full turn before a vertex's UV angles count as overlapping (float32 UVs, float64 sums).
FULL_TURN_SLACK = 1e-4
# Charts per call of the eigensolver. cuSOLVER's batched one (torch 2.11, CUDA 13) takes about 0.5 MiB of
# workspace per matrix: 20 GiB for a default mesh's charts, and an internal error past ~100k of them.
# In slices of 1024 it keeps to 0.5 GiB for a few milliseconds more (measured on an H200, 2026-12-04).
EIGH_SLICE = 1024


@dataclass(frozen=True)
class Limits:
    """The check a chart must pass (at its own scale, UV area = surface area); see ``uv_quality``."""

    l2: float = 1.10  # Sander's L2 norm of the chart
    linf: float = 2.0  # a face's L∞ ...
    linf_share: float = 0.01  # ... may exceed ``linf`` on at most this share of the chart's area
    mend: float = 0.01  # folded faces after LSCM leave the chart when at most this share of its faces (or MEND_FACES)


@dataclass(frozen=True)
class Charts:
    """Chart-local UVs of a mesh split along its chart boundaries (what ``pack.pack_charts`` takes)."""

    uvs: torch.Tensor  # (V, 2) float32, in the mesh's length unit
    faces: torch.Tensor  # (F, 3) int64 into uvs; same order as the input faces
    vmap: torch.Tensor  # (V,) int64: the welded vertex of each split vertex
    chart: torch.Tensor  # (F,) int64, 0..count-1
    count: int
    stats: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Cut:
    """Pending faces with their own vertices: ``faces`` index ``vmap``; ids are compact."""

    faces: torch.Tensor
    vmap: torch.Tensor
    vertex_chart: torch.Tensor
    chart: torch.Tensor
    count: int


def parameterize(vertices: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, limits: Limits = Limits(),
                 rounds: int = ROUNDS) -> Charts:
    """UVs for every chart of the welded mesh ``vertices`` (V, 3), ``faces`` (F, 3), ``chart`` (F,).

    ``rounds`` bounds the project-solve-split rounds; what still fails after them is cut into single faces.
    """
    faces = faces.long()
    positions = vertices.float()
    checked = ~degenerate_faces(vertices, faces)
    corner_uv = torch.zeros((faces.shape[0], 3, 2), dtype=torch.float32, device=faces.device)
    label = chart.long().clone()
    next_label = int(label.max()) + 1 if label.numel() else 0
    pending = torch.ones(faces.shape[0], dtype=torch.bool, device=faces.device)
    single = torch.zeros_like(pending)
    stats = {"projected": 0, "solved": 0, "mended": 0, "split": 0, "lscm_iterations": 0, "single_faces": 0}
    for round_ in range(rounds):
        index = pending.nonzero()[:, 0]
        if index.numel() == 0:
            break
        # 1. cut into connected charts with vertices of their own
        cut = _cut(faces[index], label[index])
        local = positions[cut.vmap]
        # 2. project onto the best-fit planes
        frames = _frames(local, cut)
        uv = torch.einsum("nk,nck->nc", local.double() - frames.centroid[cut.vertex_chart],
                          frames.axes[cut.vertex_chart, :2]).float()
        # 3. check
        projected = _check(local, uv, cut, checked[index], limits).passes
        # 4. LSCM for the charts that fail
        uv, iterations = _solve(local, uv, cut, checked[index], ~projected)
        # 5. check again: let a few flipped faces go (in the last round, whatever the stretch); cut the rest in two
        check = _check(local, uv, cut, checked[index], limits, overlap=True)
        mended = ~check.passes & check.few_folds & (check.stretch_ok | (round_ == rounds - 1))
        alone = mended[cut.chart] & check.folded
        done = (check.passes | mended)[cut.chart] & ~alone
        stats["projected"] += int((projected & check.passes).sum())
        stats["solved"] += int((check.passes & ~projected).sum())
        stats["mended"] += int(mended.sum())
        stats["split"] += int((~check.passes & ~mended).sum())
        stats["lscm_iterations"] += iterations
        corner_uv[index[done]] = _true_area(local, uv, cut, checked[index] & ~check.folded)[cut.faces[done]]
        label[index] = next_label + torch.where(done, cut.chart, cut.count + 2 * cut.chart + _side(local, cut, frames))
        next_label += 3 * cut.count
        pending[index[done | alone]] = False
        single[index[alone]] = True
    rest = (pending | single).nonzero()[:, 0]
    stats["single_faces"] = int(rest.numel())
    label[rest] = next_label + torch.arange(rest.numel(), device=faces.device)
    corner_uv[rest] = _own_plane(positions[faces[rest]])
    return _assemble(faces, label, corner_uv, stats)


def _cut(faces: torch.Tensor, label: torch.Tensor) -> _Cut:
    """Edge-connected charts, compact ids, and one vertex per (chart, welded vertex)."""
    chart, _ = compact(label)
    chart, count = compact(components(edge_neighbours(faces, chart), faces.shape[0]))
    size = int(faces.max()) + 1
    keys, local = torch.unique(chart[:, None] * size + faces, return_inverse=True)
    return _Cut(faces=local, vmap=keys % size, vertex_chart=keys // size, chart=chart, count=count)


@dataclass(frozen=True)
class _Frames:
    """Per chart, float64: centroid, rows (major axis, minor axis, normal), and how its normals spread."""

    centroid: torch.Tensor  # (C, 3)
    axes: torch.Tensor  # (C, 3, 3)
    normal_axis: torch.Tensor  # (C, 3): the direction of widest normal spread
    mean_normal: torch.Tensor  # (C,): |Σ area·normal| / Σ area


def _frames(local: torch.Tensor, cut: _Cut) -> _Frames:
    """Area-weighted PCA of each chart's surface (exact second moments of its triangles)."""
    corners = local.double()[cut.faces]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = cross.norm(dim=1) / 2
    chart_area = segment_sum(area, cut.chart, cut.count).clamp_min(torch.finfo(area.dtype).tiny)
    centroid = segment_sum(area[:, None] * corners.mean(1), cut.chart, cut.count) / chart_area[:, None]
    v = corners - centroid[cut.chart, None]
    s = v.sum(1)
    moment = (torch.einsum("fik,fil->fkl", v, v) + s[:, :, None] * s[:, None, :]) * (area / 12)[:, None, None]
    _, vectors = _eigh(segment_sum(moment, cut.chart, cut.count))
    weighted = segment_sum(cross / 2, cut.chart, cut.count)
    mean = torch.nn.functional.normalize(weighted, dim=1)
    normal = vectors[:, :, 0] * torch.where((vectors[:, :, 0] * mean).sum(1) < 0, -1.0, 1.0)[:, None]
    across = ((normal * mean).sum(1).abs() < 0.5) & (weighted.norm(dim=1) > 0)
    normal = torch.where(across[:, None], mean, normal)
    major = vectors[:, :, 2] - (vectors[:, :, 2] * normal).sum(1, keepdim=True) * normal
    other = torch.linalg.cross(normal, torch.eye(3, dtype=normal.dtype, device=normal.device)[
        normal.abs().argmin(dim=1)])  # any direction in the plane, where the major axis lies across it
    major = torch.nn.functional.normalize(torch.where(major.norm(dim=1, keepdim=True) > 0.1, major, other), dim=1)
    axes = torch.stack([major, torch.linalg.cross(normal, major), normal], dim=1)
    unit = torch.nn.functional.normalize(cross, dim=1)
    spread = segment_sum(area[:, None, None] * unit[:, :, None] * unit[:, None, :], cut.chart, cut.count)
    bar = weighted / chart_area[:, None]
    spread = spread - chart_area[:, None, None] * bar[:, :, None] * bar[:, None, :]
    return _Frames(centroid=centroid, axes=axes, normal_axis=_eigh(spread)[1][:, :, 2],
                   mean_normal=weighted.norm(dim=1) / chart_area)


def _eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of small symmetric matrices, ``EIGH_SLICE`` of them at a time."""
    if matrices.shape[0] <= EIGH_SLICE:
        return torch.linalg.eigh(matrices)
    values, vectors = zip(*(torch.linalg.eigh(part) for part in matrices.split(EIGH_SLICE)))
    return torch.cat(values), torch.cat(vectors)


@dataclass(frozen=True)
class _Check:
    """A check's verdict: which faces are folded; per chart whether it passes, and whether its folds are few."""

    folded: torch.Tensor  # (S,)
    passes: torch.Tensor  # (C,) no fold, no overlap, stretch within limits
    stretch_ok: torch.Tensor  # (C,) stretch within limits and no overlap, folded faces left out
    few_folds: torch.Tensor  # (C,) at most ``Limits.mend`` of its faces folded (or ``MEND_FACES``)


def _check(local: torch.Tensor, uv: torch.Tensor, cut: _Cut, checked: torch.Tensor, limits: Limits,
           overlap: bool = False) -> _Check:
    """Folded faces, and each chart's stretch (without its folded faces) against ``limits``; with
    ``overlap``, a chart that overlaps itself (``uv_quality.overlapping_charts``) fails as if too stretched.

    A face is folded when it is flipped, or when one of its corners is a vertex whose faces' UV angles
    add up to more than a full turn: around such a vertex the faces overlap although none is flipped
    (LSCM does that to a face wound against its neighbours, or to a fold in the surface).
    """
    stretch = face_stretch(local, uv, cut.faces)
    flipped = checked & (stretch.uv_area <= 0)
    corners = uv.double()[cut.faces]
    ahead, behind = corners.roll(-1, dims=1) - corners, corners.roll(-2, dims=1) - corners
    angle = torch.atan2((ahead[..., 0] * behind[..., 1] - ahead[..., 1] * behind[..., 0]).abs(), (ahead * behind).sum(-1))
    turn = segment_sum(torch.where((checked & ~flipped)[:, None], angle, 0.0).reshape(-1), cut.faces.reshape(-1), len(uv))
    folded = flipped | (checked & (turn[cut.faces] > 2 * math.pi + FULL_TURN_SLACK).any(dim=1))
    kept = checked & ~folded
    l2, linf = chart_stretch(stretch, cut.chart, cut.count, kept)
    area = torch.where(kept, stretch.area, 0.0)
    beyond = segment_sum(torch.where(linf > limits.linf, area, 0.0), cut.chart, cut.count)
    stretch_ok = (l2 <= limits.l2) & (beyond <= limits.linf_share * segment_sum(area, cut.chart, cut.count))
    if overlap:
        stretch_ok &= ~overlapping_charts(uv, cut.faces[kept], cut.vertex_chart, cut.count)
    folds = segment_sum(folded.double(), cut.chart, cut.count)
    faces = segment_sum(torch.ones_like(folds[cut.chart]), cut.chart, cut.count)
    return _Check(folded=folded, passes=stretch_ok & (folds == 0), stretch_ok=stretch_ok,
                  few_folds=folds <= torch.clamp_min(limits.mend * faces, MEND_FACES))


def _solve(local: torch.Tensor, uv: torch.Tensor, cut: _Cut, checked: torch.Tensor, solve: torch.Tensor) -> tuple[torch.Tensor, int]:
    """LSCM for the charts marked in ``solve``; the other charts' UVs are returned as they came."""
    faces_in, vertices_in = solve[cut.chart], solve[cut.vertex_chart]
    if not bool(faces_in.any()):
        return uv, 0
    renumber = torch.cumsum(vertices_in, 0) - 1
    chart, count = compact(cut.vertex_chart[vertices_in])
    solved, iterations = lscm(local[vertices_in], renumber[cut.faces[faces_in]], chart, count, uv[vertices_in],
                              checked[faces_in])
    uv = uv.clone()
    uv[vertices_in] = solved
    return uv, iterations


def _true_area(local: torch.Tensor, uv: torch.Tensor, cut: _Cut, checked: torch.Tensor) -> torch.Tensor:
    """Each chart's UVs scaled so that their area equals the surface's (checked faces only)."""
    stretch = face_stretch(local, uv, cut.faces)
    surface = segment_sum(torch.where(checked, stretch.area, 0.0), cut.chart, cut.count)
    flat = segment_sum(torch.where(checked, stretch.uv_area.abs(), 0.0), cut.chart, cut.count)
    scale = torch.where((surface > 0) & (flat > 0), (surface / flat.clamp_min(1e-300)).sqrt(), 1.0)
    return uv * scale.float()[cut.vertex_chart, None]


def _side(local: torch.Tensor, cut: _Cut, frames: _Frames) -> torch.Tensor:
    """0 or 1 per face: which half of its chart it goes to if the chart is cut (area-weighted mean as the cut)."""
    corners = local.double()[cut.faces]
    cross = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = cross.norm(dim=1) / 2
    across_normals = frames.mean_normal[cut.chart] < SPREAD_NORMALS
    key = torch.where(across_normals, (torch.nn.functional.normalize(cross, dim=1) * frames.normal_axis[cut.chart]).sum(1),
                      (corners.mean(1) * frames.axes[cut.chart, 0]).sum(1))
    cut_at = segment_sum(area * key, cut.chart, cut.count) / segment_sum(area, cut.chart, cut.count).clamp_min(1e-300)
    return (key > cut_at[cut.chart]).long()


def _own_plane(corners: torch.Tensor) -> torch.Tensor:
    """Each triangle ``(R, 3, 3)`` laid flat in its own plane, first corner at 0: ``(R, 3, 2)``."""
    corners = corners.double()
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    e1 = torch.nn.functional.normalize(first, dim=1)
    e2 = torch.linalg.cross(torch.nn.functional.normalize(torch.linalg.cross(first, second), dim=1), e1)
    flat = torch.stack([(corners - corners[:, :1]) @ e[:, :, None] for e in (e1, e2)], dim=2)[..., 0]
    return flat.float()


def _assemble(faces: torch.Tensor, label: torch.Tensor, corner_uv: torch.Tensor, stats: dict[str, int]) -> Charts:
    chart, count = compact(label)
    size = int(faces.max()) + 1 if faces.numel() else 1
    keys, split = torch.unique(chart[:, None] * size + faces, return_inverse=True)
    uvs = torch.zeros((keys.shape[0], 2), dtype=torch.float32, device=faces.device)
    uvs[split.reshape(-1)] = corner_uv.reshape(-1, 2)
    return Charts(uvs=uvs, faces=split, vmap=keys % size, chart=chart, count=count, stats=stats)
