"""The GPU half of the export, step by step: o_voxel's ``to_glb`` taken apart (CUDA only).

The same algorithm as ``o_voxel.postprocess.to_glb`` (TRELLIS.2 @5565d240), with the options of
TRELLIS.2's example (``remesh_band=1, remesh_project=0``), as separate calls so that each is timed:

- ``prepare``: CuMesh fills holes up to a perimeter of 0.03; ``surface_bvh``: cuBVH of that surface;
- ``remesh``: narrow-band dual contouring, then ``simplify`` to the target (``remesh: true``), or
  ``simplify_and_repair``: o_voxel's simplify / repair / simplify / repair sequence (``remesh: false``);
- ``unwrap``: CuMesh's GPU clustering, then xatlas per cluster (CPU);
- ``bake``: rasterize in UV space (``trellis_mv.raster``), project every texel back onto the original surface
  through the BVH, read the attribute volume there (FlexGEMM's ``grid_sample_3d``).

What differs, and why (xatlas measured on the CPU; tests/gpu/test_export_gpu.py records every phase
on the GPU, and simplify after remeshing at 512 against 1024):

- ``REMESH_RESOLUTION``: dual contouring at 512 rather than at the grid's 1024 gives about a quarter
  of the faces (5.0 M at 1024 on the H200). Every ``simplify_step`` is linear in faces and a 6x
  reduction needs fewer threshold rounds than a 25x one, so simplify (5.0 s at 1024) should take
  about a quarter; the 200k-face result is still 3x coarser than the 512 grid. (Reasoned, not yet
  measured on the GPU.)
- ``CLUSTER_FACES`` and ``CHART_FACES``: xatlas re-segments each CuMesh cluster as one serial task,
  and every face it adds to a chart re-fits and re-checks the whole chart, quadratic in chart size
  (87% of the unwrap's CPU time). o_voxel's clusters stop only at a 90° normal cone, so one can hold
  much of the mesh: on a 176k-face stand-in, its largest cluster (73.6k faces) alone took 24.7 s.
  Capping clusters at the area of 2000 mean faces (CuMesh's own area penalty: cone half angle +
  penalty x area must stay under 90°) and xatlas's charts at 200 cut the whole unwrap from 29.4 to
  4.5 s of CPU, its largest serial task to about 0.1 s, for 9% more vertices and 62% instead of 74%
  of the atlas used. Packing options barely matter (default 0.4 s; at 2048² 1.0 s; brute force 3.1 s).
- the texel count handed to ``grid_sample_3d`` is padded to ``size²``: FlexGEMM autotunes its Triton
  kernel per (log2 voxels, points, channels) and the number of covered texels differs per job, so
  every export re-ran the autotune (read from FlexGEMM's code; the phase took 1.6 s warm).
- degenerate faces and normals are handled by ``clean.tidy_unwrapped`` (torch), not CuMesh.

Every function imports CuMesh or FlexGEMM inside itself, so this module imports anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..raster import interpolate, rasterize_uv
from .clean import UnwrappedMesh, mean_face_area, tidy_unwrapped

__all__ = [
    "CHART_FACES",
    "CLUSTER_FACES",
    "HOLE_PERIMETER",
    "REMESH_RESOLUTION",
    "Surface",
    "Volume",
    "bake",
    "prepare",
    "remesh",
    "simplify",
    "simplify_and_repair",
    "surface_bvh",
    "unwrap",
    "volume_of",
]

HOLE_PERIMETER = 3e-2  # o_voxel's fill_holes(max_hole_perimeter=3e-2)
REMESH_RESOLUTION = 512
REMESH_BAND = 1.0
CHART_FACES = 200
CLUSTER_FACES = 2000
# o_voxel's clustering before xatlas: clusters merge while their normal cone's half angle plus the
# area penalty stays below 90°; ``unwrap`` sets the penalty so that no cluster outgrows CLUSTER_FACES.
_CONE = math.pi / 2
_CLUSTERING = {"threshold_cone_half_angle_rad": _CONE, "refine_iterations": 0, "global_iterations": 1, "smooth_strength": 1}


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


def surface_bvh(surface: Surface) -> Any:
    """cuBVH of the surface (built on the CPU, queried on the GPU)."""
    import cumesh

    return cumesh.cuBVH(surface.vertices, surface.faces)


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
    """CuMesh's GPU simplification down to ``target_faces``."""
    cu.simplify(target_faces)


def simplify_and_repair(cu: Any, target_faces: int) -> None:
    """o_voxel's path without remeshing: simplify to 3x the target, repair, simplify, repair, orient."""
    for faces in (target_faces * 3, target_faces):
        cu.simplify(faces)
        cu.remove_duplicate_faces()
        cu.repair_non_manifold_edges()
        cu.remove_small_connected_components(1e-5)
        cu.fill_holes(max_hole_perimeter=HOLE_PERIMETER)
    cu.unify_face_orientations()


def unwrap(cu: Any) -> UnwrappedMesh:
    """UV charts and atlas for ``cu``'s mesh, then degenerate faces dropped and unit normals (``clean``)."""
    face_area = mean_face_area(*cu.read())
    _, split_faces, uvs, vmap = cu.uv_unwrap(
        compute_charts_kwargs={**_CLUSTERING, "area_penalty_weight": _CONE / (CLUSTER_FACES * face_area)},
        xatlas_compute_charts_kwargs={"max_chart_area": CHART_FACES * face_area},
        xatlas_pack_charts_kwargs={},
        return_vmaps=True,
    )
    welded, _ = cu.read()  # after uv_unwrap's own removal of exact-zero faces; vmap indexes it
    device = welded.device
    return tidy_unwrapped(welded, split_faces.to(device).int(), uvs.to(device).float(), vmap.to(device).long())


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
    # Read attributes where the texel lies on the *original* surface, not on the simplified one.
    _, face_id, uvw = bvh.unsigned_distance(positions, return_uvw=True)
    positions = (surface.vertices[surface.faces[face_id.long()].long()] * uvw[..., None]).sum(dim=1)
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
