"""Closest points on a triangle surface, in torch: the one query the export asked of CuMesh's cuBVH.

cuBVH (cubvh's ``src/bvh.cu``) derives from instant-ngp's triangle BVH and carries its licence
(research or evaluation only). The export asks it ``unsigned_distance(points, return_uvw)``, near
the surface only: narrow-band remeshing (``cumesh.remeshing.remesh_narrow_band_dc`` takes any
object with that method as ``bvh``) and the bake's projection of texels onto the decoded surface.
:func:`build` answers with cuBVH's conventions (float32 distances, int64 face ids, ``uvw`` the
weights of the face's three vertices in order) from a uniform grid:

- each face is listed in the cells its bounding box touches; cells are at least ``radius`` wide,
  so a face within ``radius`` of a point is listed in the point's cell or one of its 26 neighbours;
- the point's own cell first, then the neighbours nearer than the best distance so far; in each,
  the face of the nearest centroid is measured exactly, bounding spheres drop the faces that cannot
  beat it, and the exact point-triangle distance (Ericson, *Real-Time Collision Detection*,
  §5.1.5, in float64) runs on the rest; the nearest per point is a ``scatter_reduce`` ``amin`` of
  the squared distance's bits packed above the face id;
- beyond ``radius``: a lower bound of the distance (at least ``radius``) from an occupancy
  pyramid, face -1, weights 0.

On CUDA (with Triton) one kernel walks those cells instead (``closest_kernel.py``) and keeps only
the best face per point; the torch search above is the path without it, and what the kernel is
tested against. Either way the chosen face is measured again in float64.

Remeshing stays exact: its coarse levels keep a cell while the distance at its centre is under a
threshold, so a lower bound keeps a superset, which the next level tests again; its finest levels
and the corner values that place vertices need exact distances up to a few cells only
(``bake.SEARCH_RADIUS``). Queries go ``max_pairs`` candidate pairs at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trellis_mv.export import closest_kernel

__all__ = ["ClosestPoints", "build"]

MAX_CELLS_PER_AXIS = 256  # wider cells beyond this: the dense cell table stays under ~150 MB
# Float rounding of |p - centre| - sphere radius must never prune the true nearest face.
_SPHERE_SLACK = 1e-5
_NONE = torch.iinfo(torch.int64).max  # packed "no face yet": beyond every squared distance


@dataclass(frozen=True)
class ClosestPoints:
    """The faces of a surface in a uniform grid; :meth:`unsigned_distance` is cuBVH's query."""

    vertices: torch.Tensor  # (N, 3) float32
    faces: torch.Tensor  # (M, 3) int64
    radius: float  # distances below it are exact
    cell: float  # grid cell size, >= radius
    origin: torch.Tensor  # (3,) corner of cell (0, 0, 0)
    dims: tuple[int, int, int]
    offsets: torch.Tensor  # (cells + 1,) int64: cell i lists entries[offsets[i]:offsets[i + 1]]
    entries: torch.Tensor  # int32 face ids, by cell
    centres: torch.Tensor  # (M, 3) bounding sphere centres (face centroids)
    spheres: torch.Tensor  # (M,) their radii
    empty: tuple[torch.Tensor, ...]  # per pyramid level k (cells 2**k wide): no face in the 3x3x3 around
    max_pairs: int
    corners: torch.Tensor | None = None  # (E, 9) the entries' corners, for the CUDA kernel (closest_kernel.py)

    def unsigned_distance(self, points: torch.Tensor, return_uvw: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Distance to the closest face, its id and (with ``return_uvw``) its vertices' weights there.

        Exact below ``radius``; at or beyond it a lower bound of the distance (at least ``radius``),
        face id -1 and weights 0.
        """
        shape = points.shape[:-1]
        points = points.reshape(-1, 3).to(self.vertices.device, torch.float32)
        distances = torch.empty(points.shape[0], dtype=torch.float32, device=points.device)
        face_id = torch.full_like(distances, -1, dtype=torch.int64)
        uvw = torch.zeros_like(points)
        if self.corners is not None and points.is_cuda:
            squared, nearest = closest_kernel.nearest_faces(points, self.corners, self.entries, self.offsets,
                                                            self.origin, self.cell, self.dims, self.radius)
            step = self.max_pairs // 2  # points measured again in float64 at a time: ~200 bytes each

            def search(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
                return squared[part], nearest[part].long()
        else:
            step = max(1, self.max_pairs // 32)  # points per slice: their 27 cells take ~800 bytes each

            def search(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
                return _unpack(self._nearest(points[part]))
        for start in range(0, points.shape[0], step):
            part = slice(start, start + step)
            distances[part], face_id[part], uvw[part] = self._measured(points[part], *search(part))
        far = face_id < 0
        distances[far] = self._lower_bound(points[far])
        return distances.view(shape), face_id.view(shape), uvw.view(*shape, 3) if return_uvw else None

    def _nearest(self, points: torch.Tensor) -> torch.Tensor:
        """The nearest face of each point of a slice, as :func:`_pack`'s (squared distance, face) minimum.

        The point's own cell first: the nearest face there bounds the distance, and of the 26 other
        cells only those nearer than that bound are searched (near the surface, a few).
        """
        index, counts, gap = self._neighbour_cells(points)
        best = torch.full((points.shape[0],), _NONE, device=points.device)
        best = self._search(points, index[:, 13:14], counts[:, 13:14], best)
        others = [*range(13), *range(14, 27)]
        bound = _unpack(best)[0].clamp(max=self.radius ** 2)
        return self._search(points, index[:, others], torch.where(gap[:, others] < bound[:, None], counts[:, others], 0), best)

    def _measured(self, points: torch.Tensor, squared: torch.Tensor, face: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distances, face ids and weights of the nearest faces found, measured again in float64; face -1
        (distance 0 until the lower bound) where none is within radius."""
        n = points.shape[0]
        found = squared < self.radius ** 2
        corners = self.vertices[self.faces[face[found]]].double()
        squared, weights = closest_on_triangles(points[found].double(), corners[:, 0], corners[:, 1], corners[:, 2])
        distances, uvw = torch.zeros(n, device=points.device), torch.zeros((n, 3), device=points.device)
        distances[found], uvw[found] = squared.sqrt().float(), weights.float()
        return distances, torch.where(found, face, -1), uvw

    def _neighbour_cells(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each point's 27 cells (x, then y, then z from -1 to 1; its own is 13): linear index, entries
        listed (0 outside the grid or beyond radius) and squared distance from the point to the cell."""
        dims = torch.tensor(self.dims, device=points.device)
        scaled = (points - self.origin) / self.cell
        cell = torch.floor(scaled).long()
        fraction = (scaled - cell) * self.cell
        along = cell[:, :, None] + torch.arange(-1, 2, device=points.device)  # (n, axis, offset)
        gap = torch.stack([fraction, torch.zeros_like(fraction), self.cell - fraction], dim=-1) ** 2
        gap = torch.where((along >= 0) & (along < dims[:, None]), gap, torch.inf)
        along = torch.minimum(along.clamp(min=0), dims[:, None] - 1)
        gap = (gap[:, 0, :, None, None] + gap[:, 1, None, :, None] + gap[:, 2, None, None, :]).reshape(-1, 27)
        index = ((along[:, 0, :, None, None] * self.dims[1] + along[:, 1, None, :, None]) * self.dims[2]
                 + along[:, 2, None, None, :]).reshape(-1, 27)
        counts = torch.where(gap < self.radius ** 2, self.offsets[index + 1] - self.offsets[index], 0)
        return index, counts, gap

    def _search(self, points: torch.Tensor, index: torch.Tensor, counts: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """``best`` lowered by the faces listed in the given cells of each point, ``max_pairs`` pairs at a time."""
        width = counts.shape[1]
        counts, starts = counts.reshape(-1), self.offsets[index.reshape(-1)]
        for group in _groups(counts, self.max_pairs):
            total = int(counts[group].sum())
            query = torch.repeat_interleave(group, counts[group], output_size=total)
            entry = torch.arange(total, device=points.device) + starts[query]
            entry -= torch.repeat_interleave(torch.cumsum(counts[group], 0) - counts[group], counts[group], output_size=total)
            face, query = self.entries[entry], query.div_(width, rounding_mode="floor")
            del entry
            # 1. per point, the face of the nearest centroid, exactly: a first bound
            centre_distance = (points[query] - self.centres[face]).norm(dim=1)
            nearest = torch.full_like(best, _NONE).scatter_reduce(
                0, query, _pack(centre_distance, torch.arange(total, device=points.device)), "amin")
            best = self._lower(best, points, query, face, _unpack(nearest[nearest != _NONE])[1])
            # 2. bounding spheres: only faces whose sphere's near side is within that bound and every far side
            sphere = self.spheres[face].mul_(1 + _SPHERE_SLACK).add_(_SPHERE_SLACK * self.cell)
            reach = _unpack(best)[0].sqrt().clamp(max=self.radius)
            reach = reach.view(torch.int32).scatter_reduce(0, query, (centre_distance + sphere).view(torch.int32), "amin")
            best = self._lower(best, points, query, face,
                               torch.nonzero(centre_distance.sub_(sphere) <= reach.view(torch.float32)[query]).squeeze(1))
        return best

    def _lower(self, best: torch.Tensor, points: torch.Tensor, query: torch.Tensor, face: torch.Tensor,
               pairs: torch.Tensor) -> torch.Tensor:
        """``best`` lowered by the exact squared distances of the given (point, face) pairs, in float64:
        about 400 bytes a pair at the peak, so a sixteenth of ``max_pairs`` at a time."""
        for part in torch.split(pairs, max(1, self.max_pairs // 16)):
            ids, at = face[part].long(), query[part]
            corners = self.vertices[self.faces[ids]].double()
            squared, _ = closest_on_triangles(points[at].double(), corners[:, 0], corners[:, 1], corners[:, 2])
            best = best.scatter_reduce(0, at, _pack(squared.float(), ids), "amin")
        return best

    def _lower_bound(self, points: torch.Tensor) -> torch.Tensor:
        """A lower bound of the distance of points that have no face within radius: at least radius.

        The point clamped into the grid is no farther from any face (faces lie inside it), and the
        clamping distance is a bound too. At pyramid level k, where the point's 3x3x3 cells (each 2**k
        grid cells wide) hold no face, every face is beyond that block's boundary.
        """
        low, high = self.origin, self.origin + torch.tensor(self.dims, device=points.device) * self.cell
        inside = torch.minimum(torch.maximum(points, low), high)
        bound = torch.maximum((points - inside).norm(dim=1), torch.tensor(self.radius, device=points.device))
        for level, empty in enumerate(self.empty):
            size = self.cell * 2 ** level
            cell = torch.floor((inside - low) / size).long().clamp(
                min=torch.zeros(3, dtype=torch.int64, device=points.device),
                max=torch.tensor(empty.shape, device=points.device) - 1)
            block = low + (cell - 1) * size
            to_boundary = torch.minimum(inside - block, block + 3 * size - inside).amin(dim=1)
            bound = torch.where(empty[cell[:, 0], cell[:, 1], cell[:, 2]], torch.maximum(bound, to_boundary), bound)
        return bound


def build(vertices: torch.Tensor, faces: torch.Tensor, radius: float, max_pairs: int = 1 << 22) -> ClosestPoints:
    """The grid of a surface's faces, on the vertices' device, exact within ``radius``.

    ``max_pairs`` caps the candidate (point, face) pairs a query holds at once, and so its memory:
    about 80 bytes each at the peak (measured on the CPU), ~0.35 GiB for the default.
    """
    vertices = vertices.float().contiguous()
    faces = faces.long().contiguous()
    corners = vertices[faces]
    low, high = corners.amin(dim=1), corners.amax(dim=1)
    extent = float((high.amax(dim=0) - low.amin(dim=0)).max())
    cell = max(radius, extent / (MAX_CELLS_PER_AXIS - 2))
    origin = low.amin(dim=0) - cell  # one empty cell around the faces
    dims = tuple(int(d) for d in torch.floor((high.amax(dim=0) - origin) / cell).long() + 2)
    first = torch.floor((low - origin) / cell).long()
    span = torch.floor((high - origin) / cell).long() - first + 1
    # every (face, cell of its bounding box), as one flat list
    per_face = span.prod(dim=1)
    face = torch.repeat_interleave(torch.arange(faces.shape[0], device=vertices.device), per_face)
    local = torch.arange(face.numel(), device=vertices.device) - (torch.cumsum(per_face, 0) - per_face)[face]
    sx, sy = span[face, 0], span[face, 1]
    at = first[face] + torch.stack([local % sx, (local // sx) % sy, local // (sx * sy)], dim=1)
    key = (at[:, 0] * dims[1] + at[:, 1]) * dims[2] + at[:, 2]
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=math.prod(dims))
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    centres = corners.mean(dim=1)
    entries = face[order].int()
    return ClosestPoints(
        vertices=vertices, faces=faces, radius=float(radius), cell=cell, origin=origin, dims=dims,
        offsets=offsets, entries=entries, centres=centres,
        spheres=(corners - centres[:, None]).norm(dim=2).amax(dim=1),
        empty=_emptiness_pyramid(counts.view(dims) > 0), max_pairs=max_pairs,
        corners=closest_kernel.entry_corners(vertices, faces, entries) if vertices.is_cuda and closest_kernel.AVAILABLE else None,
    )


def closest_on_triangles(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance from each point to its triangle, and the weights of a, b, c at the closest point.

    Ericson's Voronoi-region test (§5.1.5), every region computed and the first that holds chosen,
    as his branches do. His region signs are differences of products, which lose their meaning on
    slivers: where the triangle has no area at the working precision or the weights leave the
    triangle, the nearest point of its three edges is taken instead. The export calls it in float64.
    """
    ab, ac, ap = b - a, c - a, p - a
    ab2, ac2, abac = _dot(ab, ab), _dot(ac, ac), _dot(ab, ac)
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4, d5, d6 = d1 - ab2, d2 - abac, d1 - abac, d2 - ac2  # the same against p - b and p - c
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    area = va + vb + vc  # |ab x ac|^2
    v, w = _ratio(vb, area), _ratio(vc, area)
    # Ericson's tests from the last to the first, so that the first that holds is the one kept
    bc_v = _ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    v, w = _region((va <= 0) & (d4 >= d3) & (d5 >= d6), v, w, 1 - bc_v, bc_v)  # edge BC
    v, w = _region((vb <= 0) & (d2 >= 0) & (d6 <= 0), v, w, 0.0, _ratio(d2, d2 - d6))  # edge AC
    v, w = _region((d6 >= 0) & (d5 <= d6), v, w, 0.0, 1.0)  # vertex C
    v, w = _region((vc <= 0) & (d1 >= 0) & (d3 <= 0), v, w, _ratio(d1, d1 - d3), 0.0)  # edge AB
    v, w = _region((d3 >= 0) & (d4 <= d3), v, w, 1.0, 0.0)  # vertex B
    v, w = _region((d1 <= 0) & (d2 <= 0), v, w, 0.0, 0.0)  # vertex A
    longest = torch.maximum(torch.maximum(ab2, ac2), ab2 + ac2 - 2 * abac)
    tolerance = torch.finfo(p.dtype).eps ** 0.5
    flat = (area <= tolerance * tolerance * longest * longest) | (v < -tolerance) | (w < -tolerance) | (v + w > 1 + tolerance)
    if bool(flat.any()):
        v[flat], w[flat] = _nearest_on_edges(ap[flat], ab[flat], ac[flat])
    offset = ap - v[:, None] * ab - w[:, None] * ac
    return _dot(offset, offset), torch.stack([1 - v - w, v, w], dim=1)


def _region(holds: torch.Tensor, v: torch.Tensor, w: torch.Tensor, region_v, region_w) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.where(holds, region_v, v), torch.where(holds, region_w, w)


def _nearest_on_edges(ap: torch.Tensor, ab: torch.Tensor, ac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, w) of the nearest point on the three edges of (degenerate) triangles, relative to a."""
    bc = ac - ab
    t_ab = torch.clamp(_ratio(_dot(ap, ab), _dot(ab, ab)), 0, 1)
    t_ac = torch.clamp(_ratio(_dot(ap, ac), _dot(ac, ac)), 0, 1)
    t_bc = torch.clamp(_ratio(_dot(ap - ab, bc), _dot(bc, bc)), 0, 1)
    zero = torch.zeros_like(t_ab)
    options = torch.stack([torch.stack([t_ab, zero]), torch.stack([zero, t_ac]), torch.stack([1 - t_bc, t_bc])])
    points = options[:, 0, :, None] * ab + options[:, 1, :, None] * ac  # (3, n, 3)
    best = ((ap - points) ** 2).sum(dim=-1).argmin(dim=0)
    chosen = options[best, :, torch.arange(ap.shape[0], device=ap.device)]
    return chosen[:, 0], chosen[:, 1]


def _pack(squared: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """Squared distance (float32, non-negative: its bits order as the values) above the face id, one int64."""
    return (squared.view(torch.int32).long() << 32) | face


def _unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distance, face id) of :func:`_pack`; infinity where nothing was packed."""
    squared = (packed >> 32).int().view(torch.float32)
    return torch.where(packed == _NONE, torch.inf, squared), packed & 0xFFFFFFFF


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum(dim=-1)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is not positive (the region then never holds)."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=torch.finfo(denominator.dtype).tiny), 0.0)


def _emptiness_pyramid(occupied: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per level (cells 2**level wide): whether the 3x3x3 cells around each cell hold no face."""
    pool = torch.nn.functional.max_pool3d
    levels = []
    grid = occupied.to(torch.float16 if occupied.is_cuda else torch.float32)[None, None]
    while max(grid.shape[2:]) > 3:
        levels.append(pool(grid, 3, stride=1, padding=1)[0, 0] == 0)
        grid = pool(grid, 2, stride=2, ceil_mode=True)
    return tuple(levels)


def _groups(counts: torch.Tensor, max_pairs: int) -> list[torch.Tensor]:
    """The indices of the non-empty ``counts``, in consecutive groups of about ``max_pairs`` in total."""
    listed = torch.nonzero(counts).squeeze(1)
    if listed.numel() == 0:
        return []
    ends = torch.cumsum(counts[listed], 0)
    marks = torch.arange(1, int(ends[-1]) // max_pairs + 1, device=counts.device) * max_pairs
    cuts = torch.searchsorted(ends, marks, right=True).tolist()
    bounds = sorted({0, listed.numel(), *cuts})
    return [listed[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]
