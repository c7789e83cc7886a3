"""The nearest face of each point in :mod:`closest`'s grid, as one Triton kernel on CUDA.

Why: the torch search lists every candidate (point, face) pair in memory. Narrow-band remeshing asks
about 30 M points of a 2 M-face surface (a default job), each with hundreds of candidates in its 27
cells: 6.5 s on the H200, where cuBVH took 0.04 s. The kernel walks the same cells per point and
keeps only the best face in registers.

How: one lane per point, a program of ``_POINTS`` neighbouring points. The point's own cell first,
then the 26 others, each skipped where it lies farther than the best distance so far (or
``radius``). In a cell the lanes step through its faces together, up to the longest list among the
lanes still searching; each step measures the exact squared distance to one triangle (its plane
where the point projects inside it, else the nearest of its three edges: right for slivers too) in
float32 and keeps the smaller, the lower face id on a tie, as the torch path's packed minimum does.
The triangles' corners are read from a copy laid out in cell order, nine floats per entry, so that
lanes in one cell read the same addresses.

:func:`nearest_faces` gives the float32 squared distance and the face per point (-1 beyond
``radius``); the caller measures the chosen faces again in float64 (``closest.closest_on_triangles``).

Triton comes with torch's CUDA builds, not its CPU builds: there this module defines no kernel and
the torch search runs.
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["AVAILABLE", "entry_corners", "nearest_faces"]

AVAILABLE = importlib.util.find_spec("triton") is not None
_POINTS = 128


def entry_corners(vertices: torch.Tensor, faces: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """The corners of each grid entry's face, ``(E, 9)`` float32 in entry (cell) order."""
    return vertices[faces[entries.long()]].reshape(-1, 9).contiguous()


def nearest_faces(points: torch.Tensor, corners: torch.Tensor, entries: torch.Tensor, offsets: torch.Tensor,
                  origin: torch.Tensor, cell: float, dims: tuple[int, int, int], radius: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance (float32) to and id of the nearest face within ``radius`` of each CUDA point; -1 beyond."""
    points = points.float().contiguous()
    n = points.shape[0]
    squared = torch.empty(n, dtype=torch.float32, device=points.device)
    face = torch.empty(n, dtype=torch.int32, device=points.device)
    if n:
        lower = [float(x) for x in origin.tolist()]
        with torch.cuda.device(points.device):
            _nearest[(triton.cdiv(n, _POINTS),)](
                points, corners, entries, offsets, squared, face, n,
                lower[0], lower[1], lower[2], float(cell), dims[0], dims[1], dims[2], float(radius) ** 2,
                POINTS=_POINTS,
            )
    return squared, face


if AVAILABLE:
    import triton
    import triton.language as tl

    @triton.jit
    def _segment(px, py, pz, ax, ay, az, bx, by, bz):
        """Squared distance from the points to the segments a-b (a point where a == b)."""
        ex, ey, ez = bx - ax, by - ay, bz - az
        qx, qy, qz = px - ax, py - ay, pz - az
        length = ex * ex + ey * ey + ez * ez
        t = tl.where(length > 0, (qx * ex + qy * ey + qz * ez) / tl.where(length > 0, length, 1.0), 0.0)
        t = tl.minimum(tl.maximum(t, 0.0), 1.0)
        dx, dy, dz = qx - t * ex, qy - t * ey, qz - t * ez
        return dx * dx + dy * dy + dz * dz

    @triton.jit
    def _triangle(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
        """Squared distance from the points to the triangles a, b, c."""
        ux, uy, uz = bx - ax, by - ay, bz - az
        vx, vy, vz = cx - ax, cy - ay, cz - az
        nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        area2 = nx * nx + ny * ny + nz * nz
        qx, qy, qz = px - ax, py - ay, pz - az
        # barycentrics of the projection onto the plane, from the sub-triangles' normals
        s = ((uy * qz - uz * qy) * nx + (uz * qx - ux * qz) * ny + (ux * qy - uy * qx) * nz)  # weight of c
        r = ((qy * vz - qz * vy) * nx + (qz * vx - qx * vz) * ny + (qx * vy - qy * vx) * nz)  # weight of b
        inside = (area2 > 0) & (s >= 0) & (r >= 0) & (s + r <= area2)
        plane = qx * nx + qy * ny + qz * nz
        interior = plane * plane / tl.where(area2 > 0, area2, 1.0)
        edges = tl.minimum(_segment(px, py, pz, ax, ay, az, bx, by, bz),
                           tl.minimum(_segment(px, py, pz, bx, by, bz, cx, cy, cz),
                                      _segment(px, py, pz, cx, cy, cz, ax, ay, az)))
        return tl.where(inside, tl.minimum(interior, edges), edges)

    # Triton compiles a variant per integer argument divisible by 16 (or equal to 1) or not: the point
    # count and the grid's dimensions follow the object's size, and a job should not wait for a
    # compilation the warm-up's object did not need (a small object's first remesh: 0.7-1.1 s).
    @triton.jit(do_not_specialize=["n", "dx", "dy", "dz"])
    def _nearest(points, corners, entries, offsets, out_squared, out_face, n,
                 ox, oy, oz, cell, dx, dy, dz, radius2, POINTS: tl.constexpr):
        lane = tl.program_id(0) * POINTS + tl.arange(0, POINTS)
        live = lane < n
        px = tl.load(points + lane * 3, mask=live, other=0.0)
        py = tl.load(points + lane * 3 + 1, mask=live, other=0.0)
        pz = tl.load(points + lane * 3 + 2, mask=live, other=0.0)
        sx, sy, sz = (px - ox) / cell, (py - oy) / cell, (pz - oz) / cell
        cx, cy, cz = tl.math.floor(sx).to(tl.int32), tl.math.floor(sy).to(tl.int32), tl.math.floor(sz).to(tl.int32)
        fx, fy, fz = (sx - cx) * cell, (sy - cy) * cell, (sz - cz) * cell
        best = tl.full((POINTS,), float("inf"), tl.float32)
        best_face = tl.full((POINTS,), -1, tl.int32)
        # A loop, not unrolled: 27 copies of the search compile for minutes
        for k in range(27):
            o = (k + 13) % 27  # the own cell (13) first: its nearest face bounds the others
            ix, iy, iz = o // 9 - 1, (o // 3) % 3 - 1, o % 3 - 1
            gx = tl.where(ix < 0, fx, tl.where(ix > 0, cell - fx, 0.0))
            gy = tl.where(iy < 0, fy, tl.where(iy > 0, cell - fy, 0.0))
            gz = tl.where(iz < 0, fz, tl.where(iz > 0, cell - fz, 0.0))
            gap = gx * gx + gy * gy + gz * gz
            ax, ay, az = cx + ix, cy + iy, cz + iz
            inside = (ax >= 0) & (ax < dx) & (ay >= 0) & (ay < dy) & (az >= 0) & (az < dz)
            search = live & inside & (gap < tl.minimum(best, radius2))
            index = ((ax * dy + ay) * dz + az).to(tl.int64)
            start = tl.load(offsets + index, mask=search, other=0)
            count = tl.where(search, tl.load(offsets + index + 1, mask=search, other=0) - start, 0)
            for j in range(0, tl.max(count, axis=0)):
                step = j < count
                at = (start + j) * 9
                d = _triangle(px, py, pz,
                              tl.load(corners + at, mask=step, other=0.0), tl.load(corners + at + 1, mask=step, other=0.0),
                              tl.load(corners + at + 2, mask=step, other=0.0), tl.load(corners + at + 3, mask=step, other=0.0),
                              tl.load(corners + at + 4, mask=step, other=0.0), tl.load(corners + at + 5, mask=step, other=0.0),
                              tl.load(corners + at + 6, mask=step, other=0.0), tl.load(corners + at + 7, mask=step, other=0.0),
                              tl.load(corners + at + 8, mask=step, other=0.0))
                f = tl.load(entries + start + j, mask=step, other=0)
                better = step & ((d < best) | ((d == best) & (f < best_face)))
                best = tl.where(better, d, best)
                best_face = tl.where(better, f, best_face)
        found = best < radius2
        tl.store(out_squared + lane, best, mask=live)
        tl.store(out_face + lane, tl.where(found, best_face, -1), mask=live)
