"""Mesh hygiene in plain torch (CPU or CUDA): no zero-area face and no zero or non-unit normal reaches the GLB.

CuMesh's ``uv_unwrap`` drops a face only when its float32 area is below ``min(1e-12·longest_edge², 1e-24)``,
in practice only exact zeros, and its ``compute_vertex_normals`` falls back to the *unnormalised*
normal of a vertex's first face when the normals around the vertex cancel. Slivers and folds then
leave zero or non-unit normals: the Khronos validator counted 41 ``ACCESSOR_VECTOR3_NON_UNIT`` errors
on the default 1024_cascade job. Here areas are measured in float64 against the face's own size,
and every normal is unit length by construction (area-weighted mean, else the largest face's
normal, else +Z).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SLIVER", "UnwrappedMesh", "degenerate_faces", "drop_faces", "mean_face_area", "tidy_unwrapped", "vertex_normals", "y_up"]

# A face whose area is below SLIVER x (its longest edge)² is a line in float32: its normal is noise.
SLIVER = 1e-10
# Around a vertex whose area-weighted normal sum is shorter than this share of the summed face areas,
# the faces fold onto each other and the direction of the sum says nothing.
CANCELLED = 1e-3
_UP = (0.0, 0.0, 1.0)


def _face_vectors(vertices: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face: the cross product of two edges (length = twice the area) and the longest edge squared, in float64."""
    a, b, c = (vertices.double()[faces[:, k].long()] for k in range(3))
    cross = torch.linalg.cross(b - a, c - a)
    longest = torch.stack([(b - a).square().sum(1), (c - b).square().sum(1), (a - c).square().sum(1)], 1).amax(1)
    return cross, longest


def degenerate_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """A bool per face: true for a repeated corner, zero area or a sliver thinner than ``SLIVER``."""
    cross, longest = _face_vectors(vertices, faces)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    return repeated | (cross.norm(dim=1) / 2 <= SLIVER * longest)


def drop_faces(faces: torch.Tensor, drop: torch.Tensor, *per_vertex: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Remove the faces marked in ``drop``, then the vertices no face uses; returns ``(faces, *per_vertex)``.

    Every tensor in ``per_vertex`` is indexed by vertex and is compacted the same way.
    """
    kept = faces[~drop]
    count = per_vertex[0].shape[0] if per_vertex else int(faces.max()) + 1 if faces.numel() else 0
    used = torch.zeros(count, dtype=torch.bool, device=faces.device)
    used[kept.reshape(-1).long()] = True
    new_index = torch.cumsum(used, 0) - 1
    return (new_index[kept.long()].to(faces.dtype), *(values[used] for values in per_vertex))


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit float32 normal per vertex: area-weighted mean of its faces' normals.

    Where those cancel (see ``CANCELLED``), the normal of the vertex's largest face; a vertex with no
    face of nonzero area gets +Z. Never zero, never NaN.
    """
    count = vertices.shape[0]
    if faces.shape[0] == 0:
        return torch.tensor(_UP, device=vertices.device).expand(count, 3).clone()
    cross, _ = _face_vectors(vertices, faces)
    corners = faces.reshape(-1).long()
    corner_cross = cross.repeat_interleave(3, dim=0)
    corner_area = corner_cross.norm(dim=1)
    total = torch.zeros(count, 3, dtype=torch.float64, device=vertices.device).index_add_(0, corners, corner_cross)
    weight = torch.zeros(count, dtype=torch.float64, device=vertices.device).index_add_(0, corners, corner_area)
    # The largest face at each vertex: its area, then (among faces of that area) the highest face index.
    largest = torch.zeros(count, dtype=torch.float64, device=vertices.device).scatter_reduce(0, corners, corner_area, "amax")
    is_largest = (corner_area == largest[corners]) & (corner_area > 0)
    face_of_corner = torch.arange(faces.shape[0], device=vertices.device).repeat_interleave(3)
    chosen = torch.full((count,), -1, dtype=torch.long, device=vertices.device)
    chosen = chosen.scatter_reduce(0, corners[is_largest], face_of_corner[is_largest], "amax")
    up = torch.tensor(_UP, dtype=torch.float64, device=vertices.device).expand(count, 3)
    fallback = torch.where((chosen >= 0)[:, None], cross[chosen.clamp_min(0)], up)
    normals = torch.where((total.norm(dim=1) > CANCELLED * weight)[:, None], total, fallback)
    return torch.nn.functional.normalize(normals, dim=1).float()


@dataclass(frozen=True)
class UnwrappedMesh:
    """A UV-unwrapped mesh ready for baking: one position, normal and UV per (split) vertex."""

    vertices: torch.Tensor  # (V, 3) float32
    faces: torch.Tensor  # (F, 3) int32
    uvs: torch.Tensor  # (V, 2) float32, 0..1
    normals: torch.Tensor  # (V, 3) float32, unit


def tidy_unwrapped(welded: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, vmap: torch.Tensor) -> UnwrappedMesh:
    """Drop degenerate faces of an unwrapped mesh and give it smooth unit normals.

    ``welded`` holds the positions before the unwrap split vertices along seams; normals are computed
    there, so they stay smooth across UV seams (as o_voxel's ``to_glb`` does), then copied to the splits.
    """
    drop = degenerate_faces(welded, vmap[faces.long()])
    faces, uvs, vmap = drop_faces(faces, drop, uvs, vmap)
    normals = vertex_normals(welded, vmap[faces.long()])
    return UnwrappedMesh(welded[vmap.long()], faces, uvs, normals[vmap.long()])


def mean_face_area(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """The mean area of the faces (0 for no face): the unit of the unwrap's size limits."""
    cross, _ = _face_vectors(vertices, faces)
    return float(cross.norm(dim=1).sum() / 2 / max(len(faces), 1))


def y_up(points: torch.Tensor) -> torch.Tensor:
    """TRELLIS.2's Z-up frame to glTF's Y-up one: (x, y, z) -> (x, z, -y), as o_voxel's ``to_glb`` does."""
    x, y, z = points.float().unbind(-1)
    return torch.stack([x, z, -y], dim=-1)
