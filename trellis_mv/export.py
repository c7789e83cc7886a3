"""Mesh -> GLB bytes. The only module that imports o_voxel, and only inside ``bake_textured_mesh``.

TRELLIS.2 decodes a ``MeshWithVoxel``: a dense triangle mesh plus a sparse voxel volume of PBR
attributes. ``o_voxel.postprocess.to_glb`` cleans and decimates it, optionally remeshes, unwraps UVs
and bakes the volume into textures, giving a textured ``trimesh.Trimesh``; from there the GLB is
trimesh's own writer. Test generators hand over a textured trimesh directly, so everything after
the bake runs in CI exactly as on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import trimesh

__all__ = ["ExportedGlb", "GlbOptions", "bake_textured_mesh", "export_glb", "glb_bytes"]

# TRELLIS.2 decodes into the unit cube centred on the origin (``decode_latent``'s origin and size).
_AABB = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class GlbOptions:
    """The contract's ``glb`` object. Defaults keep a 1024_cascade GLB to a few MB (GPU.md)."""

    decimation_target: int = 200_000
    texture_size: int = 2048
    remesh: bool = True
    # WebP (EXT_texture_webp) makes textures several times smaller than PNG; PNG opens everywhere.
    texture_format: Literal["webp", "png"] = "webp"


@dataclass(frozen=True)
class ExportedGlb:
    """A finished GLB, the size of the mesh in it, and that textured mesh (what previews render)."""

    data: bytes
    vertices: int
    faces: int
    mesh: trimesh.Trimesh = field(repr=False, compare=False)


def export_glb(mesh: Any, options: GlbOptions) -> ExportedGlb:
    """Turn a generator's mesh into GLB bytes: bake it first unless it is already a textured trimesh."""
    textured = mesh if isinstance(mesh, trimesh.Trimesh) else bake_textured_mesh(mesh, options)
    return ExportedGlb(
        data=glb_bytes(textured, texture_format=options.texture_format),
        vertices=len(textured.vertices),
        faces=len(textured.faces),
        mesh=textured,
    )


def bake_textured_mesh(mesh: Any, options: GlbOptions) -> trimesh.Trimesh:
    """Decimate, remesh, unwrap and bake a trellis2 ``MeshWithVoxel`` with o_voxel (CUDA only).

    ``remesh_band=1, remesh_project=0`` are the values of TRELLIS.2's own example.
    """
    import o_voxel

    return o_voxel.postprocess.to_glb(
        vertices=mesh.vertices,
        faces=mesh.faces,
        attr_volume=mesh.attrs,
        coords=mesh.coords,
        attr_layout=mesh.layout,
        voxel_size=mesh.voxel_size,
        aabb=[list(corner) for corner in _AABB],
        decimation_target=options.decimation_target,
        texture_size=options.texture_size,
        remesh=options.remesh,
        remesh_band=1,
        remesh_project=0,
    )


def glb_bytes(mesh: trimesh.Trimesh, *, texture_format: Literal["webp", "png"] = "webp") -> bytes:
    """Serialize a (textured) trimesh to a binary glTF."""
    return mesh.export(file_type="glb", extension_webp=texture_format == "webp")
