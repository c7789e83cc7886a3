"""The GPU half of the export, step by step: o_voxel's ``to_glb`` taken apart (CUDA only).

The same algorithm as ``o_voxel.postprocess.to_glb`` (TRELLIS.2 @5565d240), with the options of
TRELLIS.2's example (``remesh_band=1, remesh_project=0``), as separate calls so that each is timed:

- ``prepare``: CuMesh fills holes up to a perimeter of 0.03; ``surface_bvh``: that surface's faces in our
  closest-point grid (``closest``; o_voxel used CuMesh's cuBVH, whose licence allows research only);
- ``remesh``: narrow-band dual contouring, then ``simplify`` to the target (``remesh: true``), or
  ``simplify_and_repair``: o_voxel's simplify / repair / simplify / repair sequence (``remesh: false``);
- ``unwrap`` (in ``unwrap.py``): CuMesh's GPU clustering, then charts and their atlas;
- ``bake``: rasterize in UV space (``trellis_mv.raster``), project every texel back onto the original
  surface through that grid, read the attribute volume there (FlexGEMM's ``grid_sample_3d``).

What differs, and why (xatlas measured on the CPU; tests/gpu/test_export_gpu.py records every phase
on the GPU, simplify after remeshing with CuMesh's first thresholds 1e-8 to 1e-6 and at 256 against
512, with the result's distance to the decoded surface):

- ``REMESH_RESOLUTION``: dual contouring at 512 rather than at the grid's 1024 gives about a quarter
  of the faces (5.0 M at 1024 on the H200). Every ``simplify_step`` is linear in faces and a 6x
  reduction needs fewer threshold rounds than a 25x one, so simplify (5.0 s at 1024) should take
  about a quarter; the 200k-face result is still 3x coarser than the 512 grid. (Reasoned, not yet
  measured on the GPU.)
- the texel count handed to ``grid_sample_3d`` is padded to ``size²``: FlexGEMM autotunes its Triton
  kernel per (log2 voxels, points, channels) and the number of covered texels differs per job, so
  every export re-ran the autotune (read from FlexGEMM's code; the phase took 1.6 s warm).
- degenerate faces and normals are handled by ``clean.tidy_unwrapped`` (torch), not CuMesh.

Every function imports CuMesh or FlexGEMM inside itself, so this module imports anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..raster import interpolate, rasterize_uv
from . import closest
from .clean import UnwrappedMesh

__all__ = [
    "HOLE_PERIMETER",
    "REMESH_RESOLUTION",
    "SEARCH_RADIUS",
    "Surface",
    "Volume",
    "bake",
    "prepare",
    "remesh",
    "simplify",
    "simplify_and_repair",
    "surface_bvh",
    "volume_of",
]

HOLE_PERIMETER = 3e-2  # o_voxel's fill_holes(max_hole_perimeter=3e-2)
REMESH_RESOLUTION = 512
REMESH_BAND = 1.0
# CuMesh's simplify starts its collapse threshold at 1e-8 and raises it tenfold whenever a pass
# removes under 1% of the faces. From the remeshed default mesh (10 M faces) to 200k, starting at 1e-6
# took 0.69-0.93 s instead of 1.04-1.51 s, and the result lay as close to the decoded surface both
# ways (mean 1.39 and 4.45-4.50 voxels of the 1024 grid, p99 3.0 and 21.6-22.0; H200, 2026-12-04,
# tests/gpu/test_export_gpu.py's simplify variants).
SIMPLIFY_THRESHOLD = 1e-6
# Closest points are exact within it (export/closest.py; beyond it: a lower bound, no face). Dual
# contouring at REMESH_RESOLUTION reads exact distances up to (band + 1) cells (the corners of edges
# whose sign changes) and its two finest levels test |distance - band| < 0.87 and 1.74 cells, up to
# 2.74 cells; the bake's texels lie about one cell (the band) off the decoded surface, plus what
# simplification moved them.
SEARCH_RADIUS = 2.8 * (REMESH_RESOLUTION + 3 * REMESH_BAND) / REMESH_RESOLUTION**2


@dataclass(frozen=True)
class Surface:
    """The decoded surface after hole filling: what textures are projected back onto."""

    vertices: torch.Tensor  # (N, 3) float32, CUDA
    faces: torch.Tensor  # (M, 3) int32, CUDA


@dataclass(frozen=True)
class Volume:
    """The sparse attribute voxels of a trellis2 ``MeshWithVoxel`` in the unit cube."""

    attrs: torch.Tensor  # (L, C)
    coords: torch.Tensor  # (L, 3) integer voxel coordinates
    layout: Mapping[str, slice]
    resolution: int  # voxels per side

    @property
    def voxel_size(self) -> float:
        return 1.0 / self.resolution


def volume_of(mesh: Any) -> Volume:
    """The attribute volume of a trellis2 ``MeshWithVoxel`` (origin -0.5, size 1, as ``decode_latent`` builds it)."""
    return Volume(attrs=mesh.attrs, coords=mesh.coords, layout=mesh.layout, resolution=round(1.0 / mesh.voxel_size))


def prepare(mesh: Any) -> tuple[Any, Surface]:
    """A CuMesh of the decoded mesh with small holes filled, and that surface."""
    import cumesh

    cu = cumesh.CuMesh()
    cu.init(mesh.vertices.cuda().float().contiguous(), mesh.faces.cuda().int().contiguous())
    cu.fill_holes(max_hole_perimeter=HOLE_PERIMETER)
    vertices, faces = cu.read()
    return cu, Surface(vertices, faces)


def surface_bvh(surface: Surface) -> closest.ClosestPoints:
    """The surface's faces in a grid for closest points within ``SEARCH_RADIUS``, on the GPU.

    It answers cuBVH's ``unsigned_distance``, the one query remeshing (its ``bvh`` argument) and the
    bake make, with cuBVH's conventions; cubvh's BVH derives from instant-ngp's and carries its
    licence (research or evaluation only).
    """
    return closest.build(surface.vertices, surface.faces, SEARCH_RADIUS)


def remesh(cu: Any, surface: Surface, bvh: Any, resolution: int = REMESH_RESOLUTION) -> None:
    """Replace ``cu``'s mesh by the dual-contoured ``REMESH_BAND``-voxel offset of the surface."""
    import cumesh

    device = surface.vertices.device
    cu.init(*cumesh.remeshing.remesh_narrow_band_dc(
        surface.vertices,
        surface.faces,
        center=torch.zeros(3, device=device),
        scale=(resolution + 3 * REMESH_BAND) / resolution,
        resolution=resolution,
        band=REMESH_BAND,
        project_back=0,
        bvh=bvh,
    ))


def simplify(cu: Any, target_faces: int) -> None:
    """CuMesh's GPU simplification down to ``target_faces``, from ``SIMPLIFY_THRESHOLD``."""
    cu.simplify(target_faces, options={"thresh": SIMPLIFY_THRESHOLD})


def simplify_and_repair(cu: Any, target_faces: int) -> None:
    """o_voxel's path without remeshing: simplify to 3x the target, repair, simplify, repair, orient."""
    for faces in (target_faces * 3, target_faces):
        cu.simplify(faces)
        cu.remove_duplicate_faces()
        cu.repair_non_manifold_edges()
        cu.remove_small_connected_components(1e-5)
        cu.fill_holes(max_hole_perimeter=HOLE_PERIMETER)
    cu.unify_face_orientations()


def bake(mesh: UnwrappedMesh, surface: Surface, bvh: Any, volume: Volume, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribute volume baked into ``size``² texels: (size, size, C) values and the covered mask.

    Each texel centre inside a UV triangle gets that triangle's point (``raster.rasterize_uv``: row 0 is
    v = 0, as in glTF's images; charts do not overlap, so no depth test).
    """
    from flex_gemm.ops.grid_sample import grid_sample_3d

    device = mesh.vertices.device
    rast = rasterize_uv(mesh.uvs, mesh.faces, size)
    mask = rast[..., 3] > 0
    positions = interpolate(mesh.vertices.float(), rast[mask], mesh.faces)
    # Read attributes where the texel lies on the *original* surface, not on the simplified one; a
    # texel farther than SEARCH_RADIUS from it (face -1) keeps its place.
    _, face_id, uvw = bvh.unsigned_distance(positions, return_uvw=True)
    projected = (surface.vertices[surface.faces[face_id.clamp(min=0)].long()] * uvw[..., None]).sum(dim=1)
    positions = torch.where((face_id >= 0)[:, None], projected, positions)
    points = torch.zeros((size * size, 3), device=device, dtype=torch.float32)
    points[: positions.shape[0]] = (positions + 0.5) / volume.voxel_size
    channels = volume.attrs.shape[1]
    sampled = grid_sample_3d(
        volume.attrs,
        torch.cat([torch.zeros_like(volume.coords[:, :1]), volume.coords], dim=-1),
        shape=torch.Size([1, channels, volume.resolution, volume.resolution, volume.resolution]),
        grid=points[None],
        mode="trilinear",
    )[0]
    attrs = torch.zeros((size, size, channels), device=device, dtype=torch.float32)
    attrs[mask] = sampled[: positions.shape[0]]
    return attrs, mask
