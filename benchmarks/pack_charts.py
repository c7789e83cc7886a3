"""Packing finished charts into the texture: ``pack_charts`` against its alternatives, side by side in one run.

    python benchmarks/pack_charts.py [--size 2048] [--padding 2] [--sets 7:300,6:20000,7:75000] [--packers ...]
                                     [--device cuda]

The packers (each turns the charts to their smallest boxes first, as ``pack_charts`` does):

- ``pack_charts``: trellis_mv/export/pack.py as the export calls it (the packer by chart count);
- ``xatlas`` and ``shelves``: its two packers, each on every set: xatlas's packer on outlines of the
  charts (pack_xatlas.py), and our own shelves of boxes;
- ``xatlas_triangles``: xatlas's packer on the charts' own triangles, the usual way to call it;
- ``horizon``: another packer of our own, Lévy et al.'s "Tetris" packing on exact column profiles.

The chart sets are what the GPU unwrap hands over: a displaced icosphere (bumps at several scales;
level 7: 328k faces, level 6: 82k) cut into Voronoi patches around seeds whose density varies over
the surface, so chart sizes spread over two orders of magnitude as a clustering's do (20k patches
of level 6: a median of 3 faces, as CuMesh cuts the noisy default test mesh); each patch projected
onto its own mean plane, its vertices split from its neighbours', its coordinates chart-local (all
centred on 0).

For every chart set and packer the script prints seconds (best of ``--repeat``; wall clock and
this process's CPU time, torch on one thread), the share of the ``size``² texels whose centre a chart
covers (efficiency), the texels two charts cover (overlap), the covered texels closer than ``padding``
to another chart's (padding violations), the vertices outside [0, 1]², and each packer's ratios to
the first packer's. Texel counts are exact texel-centre tests in torch.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from functools import partial
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trellis_mv.export import pack, pack_xatlas  # noqa: E402

Charts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def icosphere(subdivisions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices on the unit sphere and faces of an icosahedron subdivided ``subdivisions`` times."""
    t = (1 + 5 ** 0.5) / 2
    vertices = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t],
                             [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                          [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                          [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1).values
        unique, inverse = torch.unique(edges, dim=0, return_inverse=True)
        middle = (vertices[unique[:, 0]] + vertices[unique[:, 1]]) / 2
        mid = (inverse + vertices.shape[0]).view(3, -1).T  # midpoints of edges 01, 12, 20
        vertices = torch.cat([vertices, middle])
        a, b, c = faces.T
        faces = torch.cat([torch.stack([a, mid[:, 0], mid[:, 2]], 1), torch.stack([b, mid[:, 1], mid[:, 0]], 1),
                           torch.stack([c, mid[:, 2], mid[:, 1]], 1), mid])
    return vertices / vertices.norm(dim=1, keepdim=True), faces


def sphere_charts(subdivisions: int, charts: int, seed: int = 0) -> Charts:
    """Chart-local UVs, faces and chart ids of a bumpy sphere cut into ``charts`` planar patches."""
    generator = torch.Generator().manual_seed(seed)
    vertices, faces = icosphere(subdivisions)
    bumps = torch.zeros(vertices.shape[0], dtype=torch.float64)
    for frequency, amplitude in ((3, 0.08), (7, 0.04), (17, 0.015)):
        direction = torch.randn(3, 3, generator=generator, dtype=torch.float64)
        bumps += amplitude * torch.sin(frequency * vertices @ direction).prod(dim=1)
    vertices = vertices * (1 + bumps)[:, None]
    centroids = vertices[faces].mean(dim=1)
    # seeds denser towards one side: patches from ~20 to ~2000 faces, as a clustering of a real object gives
    toward = torch.nn.functional.normalize(torch.randn(3, generator=generator, dtype=torch.float64), dim=0)
    weight = torch.exp(1.5 * centroids @ toward)
    seeds = F.normalize(centroids[torch.multinomial(weight, charts, replacement=False, generator=generator)], dim=1)
    directions = F.normalize(centroids, dim=1).float()
    chart = torch.cat([(part @ seeds.float().T).argmax(dim=1) for part in directions.split(65536)])
    chart = torch.unique(chart, return_inverse=True)[1]
    # split vertices along chart boundaries: one vertex per (chart, vertex) pair
    pairs = torch.stack([chart.repeat_interleave(3), faces.reshape(-1)], dim=1)
    unique, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    split_faces = inverse.view(-1, 3)
    points = vertices[unique[:, 1]]
    vertex_chart = unique[:, 0]
    # each patch onto the plane of its area-weighted normal, centred on its own centroid
    corners = vertices[faces]
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    count = int(chart.max()) + 1
    normal = F.normalize(torch.zeros(count, 3, dtype=torch.float64).index_add_(0, chart, normals), dim=1)
    helper = torch.where(normal[:, :1].abs() < 0.9, torch.tensor([1.0, 0, 0], dtype=torch.float64),
                         torch.tensor([0, 1.0, 0], dtype=torch.float64))
    tangent = F.normalize(torch.linalg.cross(normal, helper), dim=1)
    bitangent = torch.linalg.cross(normal, tangent)
    sums = torch.zeros(count, 3, dtype=torch.float64).index_add_(0, vertex_chart, points)
    centre = sums / torch.bincount(vertex_chart, minlength=count)[:, None]
    offset = points - centre[vertex_chart]
    uvs = torch.stack([(offset * tangent[vertex_chart]).sum(1), (offset * bitangent[vertex_chart]).sum(1)], dim=1)
    return uvs.float(), split_faces, chart


def _prepared(uvs: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per vertex its chart, the charts turned to their smallest boxes (as pack_charts turns them), box sizes."""
    owner = torch.full((uvs.shape[0],), -1, dtype=torch.int64)
    owner[faces.reshape(-1)] = chart.repeat_interleave(3)
    return (owner, *pack._boxed(uvs.double(), owner, int(chart.max()) + 1))


def _fitted(texels: torch.Tensor, moved: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """The layout moved into the corner and scaled up to the far border, in [0, 1] (as pack_charts ends)."""
    low = texels[moved].amin(dim=0)
    grow = (size - 2 * padding) / float((texels[moved].amax(dim=0) - low).max())
    return torch.where(moved[:, None], padding + (texels - low) * grow, 0) / size


def xatlas_triangles(uvs: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """xatlas handed the charts' own triangles, the usual way (turned, scaled and retried as pack_charts does).

    xatlas stretches every chart to whole texels: each chart is centred in the box xatlas gave it (it
    moves by less than half a texel per axis), so the gap asked for is ``ceil((padding + 1) / 2)``.
    """
    owner, local, extent = _prepared(uvs, faces, chart)
    resolution, gap = size - 2 * padding, (padding + 2) // 2
    scale, areas = pack_xatlas._first_scale(extent, resolution, gap), pack_xatlas._face_areas(local[faces])
    for _ in range(pack_xatlas._ATTEMPTS):
        atlas = pack_xatlas._xatlas_pack(local * scale, faces, chart, resolution, gap)
        if atlas.atlas_count <= 1:
            break
        first = torch.from_numpy(atlas.get_mesh_vertex_assignment(0)[0].astype(np.int64))[faces[:, 0]] == 0
        scale *= math.sqrt(float(areas[first].sum() / areas.sum())) * 0.98
    packed = torch.from_numpy(atlas.get_mesh(0)[2]).double() * atlas.width
    piece = torch.from_numpy(atlas.get_mesh_vertex_assignment(0)[1].astype(np.int64))  # xatlas splits disconnected charts
    moved = piece != np.iinfo(np.uint32).max
    pieces, ours = int(piece[moved].max()) + 1, local * scale

    def centre(points: torch.Tensor) -> torch.Tensor:
        index = piece[moved, None].expand(-1, 2)
        low = points.new_full((pieces, 2), math.inf).scatter_reduce(0, index, points[moved], "amin")
        return (low + points.new_full((pieces, 2), -math.inf).scatter_reduce(0, index, points[moved], "amax")) / 2

    shift = centre(packed) - centre(ours)
    return _fitted(ours + shift[piece.clamp(0, pieces - 1)], moved, size, padding).float()


def horizon(uvs: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """Our own packer: Lévy et al. 2002's "Tetris" packing (LSCM paper, section 6) on texel columns.

    Longest box first, each chart drops onto the horizon (the lowest free height of every texel
    column) at the column and in the quarter turn (0, 90, 180, 270 degrees) that waste the least area
    under it; then the horizon rises to its top plus ``padding``, ``padding`` columns to either side.
    Profiles per column and row come from ``pack_xatlas._slab_ranges`` (exact), the drop from numpy windows.
    """
    owner, local, extent = _prepared(uvs, faces, chart)
    # a strip packer cannot grow its layout afterwards: search the largest scale that fits, in 3 % steps
    scale = pack_xatlas._first_scale(extent, size - 2 * padding, (padding + 1) // 2)
    placed = _drop(local * scale, faces, owner, extent * scale, size, padding)
    step = 1.03 if placed is not None else 1 / 1.03
    while True:
        trial = _drop(local * scale * step, faces, owner, extent * scale * step, size, padding)
        if (trial is None) == (step > 1):
            break
        scale, placed = scale * step, trial
    if placed is None:
        scale, placed = scale * step, trial
    turn, corner, box = placed
    x, y = local[:, 0] * scale, local[:, 1] * scale
    width, height = box[owner.clamp_min(0), 0], box[owner.clamp_min(0), 1]
    turned = torch.stack([torch.stack([x, y], 1), torch.stack([width - x, height - y], 1),
                          torch.stack([height - y, x], 1), torch.stack([y, width - x], 1)])  # rotations only
    texels = turned[turn[owner.clamp_min(0)], torch.arange(x.shape[0])] + corner[owner.clamp_min(0)]
    return _fitted(texels, owner >= 0, size, padding).float()


def _drop(points: torch.Tensor, faces: torch.Tensor, owner: torch.Tensor, extent: torch.Tensor, size: int,
          padding: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Quarter turn and corner of every chart dropped onto the horizon, or None when one does not fit."""
    box = extent.ceil().clamp_min(1)
    profiles = []
    for axis, slabs in ((0, box[:, 0].long()), (1, box[:, 1].long())):
        level = torch.where(owner >= 0, points[:, axis], -1.0)
        low, high = pack_xatlas._slab_ranges(level, points[:, 1 - axis], owner, faces, slabs)
        profiles.append([np.split(part.numpy(), slabs.cumsum(0)[:-1].numpy()) for part in (low, high)])
    (bottoms, tops), (lefts, rights) = profiles
    free = np.full(size, np.inf)
    free[padding:size - padding] = padding
    turn, corner = torch.zeros(box.shape[0], dtype=torch.int64), torch.zeros(box.shape[0], 2, dtype=torch.float64)
    for index in torch.argsort(box.amax(dim=1), descending=True, stable=True).tolist():
        width, height = float(box[index, 0]), float(box[index, 1])
        bottom, top, left, right = bottoms[index], tops[index], lefts[index], rights[index]
        best = None
        for quarter, (under, over) in enumerate(((bottom, top), (height - top[::-1], height - bottom[::-1]),
                                                 (left[::-1], right[::-1]), (width - right, width - left))):
            filled = np.isfinite(under)
            rest = sliding_window_view(free, under.shape[0])[:, filled] - under[filled]  # (columns, filled)
            drop = rest.max(axis=1)
            with np.errstate(invalid="ignore"):  # inf - inf where a column is the border's
                waste = (drop[:, None] - rest).sum(axis=1)
            fits = np.isfinite(drop) & (drop + over[filled].max() <= size - padding)
            if fits.any():
                column = int(np.argmin(np.where(fits, waste, np.inf)))
                if best is None or waste[column] < best[0]:
                    best = (waste[column], quarter, column, drop[column], over)
        if best is None:
            return None
        _, quarter, column, drop, over = best
        edge = np.full(2 * padding, -np.inf)
        raised = np.concatenate([edge, np.where(np.isfinite(over), over, -np.inf), edge])
        raised = sliding_window_view(raised, 2 * padding + 1).max(axis=1)  # columns column - padding .. + width + padding
        span = slice(max(column - padding, 0), min(column + over.shape[0] + padding, size))
        offset = span.start - (column - padding)
        free[span] = np.maximum(free[span], drop + padding + raised[offset:offset + span.stop - span.start])
        free[:padding], free[size - padding:] = np.inf, np.inf
        turn[index], corner[index] = quarter, torch.tensor([column, drop], dtype=torch.float64)
    return turn, corner, box


def texel_labels(uvs01: torch.Tensor, faces: torch.Tensor, chart: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per texel of ``size``²: the smallest and the largest id of the charts covering its centre (-1: none).

    A centre counts when it lies inside a triangle or on its edges (either orientation), so that the
    two labels differ wherever two charts touch a texel centre, edges included.
    """
    texel = uvs01.double() * size - 0.5  # texel centres at integers
    none = int(chart.max()) + 1 if chart.numel() else 0
    low = torch.full((size * size,), none, dtype=torch.int64)
    high = torch.full((size * size,), -1, dtype=torch.int64)
    for part in torch.arange(faces.shape[0]).split(32768):
        corners = texel[faces[part]]  # (P, 3, 2)
        first = corners.amin(dim=1).ceil().clamp(0, size - 1).long()
        last = corners.amax(dim=1).floor().clamp(-1, size - 1).long()
        extent = (last - first + 1).clamp_min(0)
        spans = extent[:, 0] * extent[:, 1]
        owner = torch.repeat_interleave(torch.arange(part.shape[0]), spans)
        offset = torch.arange(int(spans.sum())) - torch.repeat_interleave(spans.cumsum(0) - spans, spans)
        x = first[owner, 0] + offset % extent[owner, 0]
        y = first[owner, 1] + offset // extent[owner, 0]
        a, b, c = corners[owner, 0], corners[owner, 1], corners[owner, 2]
        p = torch.stack([x, y], dim=1).double()

        def edge(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return (v[:, 0] - u[:, 0]) * (p[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (p[:, 0] - u[:, 0])

        area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
        sign = torch.sign(area)
        inside = (area != 0) & (edge(a, b) * sign >= 0) & (edge(b, c) * sign >= 0) & (edge(c, a) * sign >= 0)
        index = (y * size + x)[inside]
        ids = chart[part][owner][inside]
        low.scatter_reduce_(0, index, ids, reduce="amin")
        high.scatter_reduce_(0, index, ids, reduce="amax")
    return torch.where(low == none, -1, low).view(size, size), high.view(size, size)


def padding_violations(label: torch.Tensor, padding: int) -> int:
    """Covered texels with a texel of another chart closer than ``padding`` (Chebyshev distance < padding).

    Charts ``padding`` texels apart cover texel centres at least ``padding`` apart along u or v.
    """
    if padding <= 1:
        return 0
    reach = padding - 1
    big = int(label.max()) + 1
    highest = F.max_pool2d(label[None, None].double(), 2 * reach + 1, 1, reach)[0, 0]
    lowest = -F.max_pool2d(-torch.where(label < 0, big, label)[None, None].double(), 2 * reach + 1, 1, reach)[0, 0]
    covered = label >= 0
    return int(((highest != label) | (lowest != label))[covered].sum())


def measure(packer: Callable[..., torch.Tensor], charts: Charts, size: int, padding: int, repeat: int,
            device: str = "cpu") -> dict:
    """Best-of-``repeat`` seconds (wall clock and this process's CPU time) and the atlas's quality figures."""
    wall, cpu = [], []
    given = tuple(part.to(device) for part in charts)
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        uvs01 = packer(*given, size, padding).cpu()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    low, high = texel_labels(uvs01, charts[1], charts[2], size)
    return {"seconds": min(wall), "cpu_seconds": min(cpu), "efficiency": float((high >= 0).double().mean()),
            "overlap": int((low != high).sum()), "padding_violations": padding_violations(high, padding),
            "outside": int(((uvs01 < 0) | (uvs01 > 1)).any(dim=1).sum())}


PACKERS: dict[str, Callable[..., torch.Tensor]] = {
    "pack_charts": pack.pack_charts,
    "xatlas": partial(pack.pack_charts, packer="xatlas"),
    "shelves": partial(pack.pack_charts, packer="shelves"),
    "xatlas_triangles": xatlas_triangles,
    "horizon": horizon,
}
SLOW = {"xatlas", "xatlas_triangles", "horizon"}  # left out of chart sets above --slow-limit charts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--padding", type=int, default=2)
    parser.add_argument("--sets", default="7:150,7:300,7:800,7:1500,7:3000,6:20000",
                        help="chart sets as icosphere level:charts (level 6: 82k faces, 7: 328k)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--packers", default=",".join(PACKERS), help="the first is the reference of the ratios")
    parser.add_argument("--slow-limit", type=int, default=5000, help=f"charts above which {sorted(SLOW)} are left out")
    parser.add_argument("--device", default="cpu", help="where pack_charts gets the charts (the others: the CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"size {args.size}, padding {args.padding}, torch threads 1, pack_charts on {args.device}, "
          f"xatlas up to {pack.XATLAS_CHARTS} charts", flush=True)
    for level, wanted in (map(int, item.split(":")) for item in args.sets.split(",")):
        charts = sphere_charts(level, wanted, args.seed)
        sizes = torch.bincount(charts[2]).double()
        print(f"\n{int(sizes.numel())} charts, {charts[1].shape[0]} faces; faces per chart: min {int(sizes.min())}, "
              f"median {int(sizes.median())}, max {int(sizes.max())}", flush=True)
        names = [name for name in args.packers.split(",") if name not in SLOW or sizes.numel() <= args.slow_limit]
        results = {name: measure(PACKERS[name], charts, args.size, args.padding, args.repeat,
                                 args.device if name in ("pack_charts", "xatlas", "shelves") else "cpu")
                   for name in names}
        reference = next(iter(results.values()))
        for name, row in results.items():
            print(f"  {name:>16}: {row['seconds']:6.3f} s wall {row['cpu_seconds']:6.3f} s CPU  efficiency "
                  f"{row['efficiency']:.3f}  overlap {row['overlap']}  padding violations {row['padding_violations']}  "
                  f"outside {row['outside']}  CPU time x{row['cpu_seconds'] / reference['cpu_seconds']:.2f}  "
                  f"efficiency x{row['efficiency'] / reference['efficiency']:.3f}", flush=True)


if __name__ == "__main__":
    main()
