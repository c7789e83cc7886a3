"""A generator's mesh -> GLB bytes, phase by phase, each phase timed (like ``worker.run_job``).

TRELLIS.2 decodes a ``MeshWithVoxel``: a dense triangle mesh plus a sparse voxel volume of PBR
attributes. ``bake`` turns it into an unwrapped mesh and baked attributes on the GPU, ``texture``
pads and encodes the textures, ``glb`` writes the file with Draco geometry (``compress``). Test
generators hand over a textured ``trimesh.Trimesh`` instead: its texture is resampled to
``texture_size``², it skips the GPU phases (``remesh``, ``decimation_target`` and ``unwrap`` do not
apply to it) and goes through the same normals, encoding and writing, so CI runs everything after the bake.

Phases and their timing keys: clean (fill holes; for a trimesh: normals), bvh, remesh, simplify,
unwrap (charts, atlas, degenerate faces, normals; with ``glb.unwrap: "fast"`` also its steps
unwrap_cluster, unwrap_charts, unwrap_pack), bake (rasterize, project, sample), pad (push-pull
and packing), encode (both textures at once), write (the Draco data, then the GLB). Each is timed by
``trellis_mv.timing.timed``, which waits for CUDA work at both ends so that a phase's time is its own.

The geometry is final after the unwrap, before any texel is baked: its Draco encoding (about 1 s of
CPU for the default 200k faces, the GIL released inside DracoPy) starts then on a worker thread and
runs while the GPU bakes and the textures encode; ``write`` only waits for what is left of it. The
export's threads are as many as torch was given at start (``trellis_mv.threads``: the container's CPU
quota), at most one for the geometry and one per texture.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, ContextManager

import numpy as np
import torch
import trimesh
from PIL import Image

from . import bake
from .clean import UnwrappedMesh, vertex_normals, y_up
from .compress import DracoPrimitive, draco_encode
from .glb import TexturedMesh, write_glb
from .options import Compression, GlbOptions
from ..timing import timed
from .texture import encode_images, texture_images
from .unwrap import unwrap

__all__ = ["ExportedGlb", "GlbOptions", "export_glb"]

log = logging.getLogger(__name__)

Phase = Callable[[str], ContextManager[None]]


@dataclass(frozen=True)
class ExportedGlb:
    """A finished GLB, the size of the mesh in it, the seconds each export phase took, and what it
    holds before serialization (what previews render)."""

    data: bytes
    vertices: int
    faces: int
    mesh: TexturedMesh = field(repr=False, compare=False)
    timings: dict[str, float] = field(default_factory=dict)


def export_glb(mesh: Any, options: GlbOptions) -> ExportedGlb:
    """Turn a generator's mesh (a trellis2 ``MeshWithVoxel`` or a textured trimesh) into GLB bytes."""
    timings: dict[str, float] = {}
    phase = partial(timed, timings)
    with ThreadPoolExecutor(max_workers=_export_threads(), thread_name_prefix="export") as pool:
        if isinstance(mesh, trimesh.Trimesh):
            with phase("clean"):
                geometry, images = _from_trimesh(mesh, options.texture_size)
            draco = _encode_geometry(pool, geometry, options.compression)
        else:
            geometry, images, draco = _bake(mesh, options, phase, pool)
        with phase("encode"):
            encoded = encode_images(images, options.texture_format, pool)
        with phase("write"):
            metallic_roughness = encoded[1] if len(encoded) > 1 else None
            textured = TexturedMesh(**geometry, base_color=encoded[0], metallic_roughness=metallic_roughness,
                                    image_format=options.texture_format)
            data = write_glb(textured, options.compression, draco=draco.result() if draco else None)
    log.info("export: %d vertices, %d faces, %d bytes; %s", len(textured.vertices), len(textured.faces), len(data), timings)
    return ExportedGlb(data=data, vertices=len(textured.vertices), faces=len(textured.faces), mesh=textured,
                       timings=timings)


def _export_threads() -> int:
    """Threads for the export's CPU work: torch's count (the CPU budget set at start), at most 3 (geometry, two textures)."""
    return max(1, min(torch.get_num_threads(), 3))


def _encode_geometry(pool: Executor, geometry: dict[str, Any], compression: Compression) -> Future[DracoPrimitive] | None:
    """Start the Draco encoding of the final geometry on ``pool``; None when the GLB stores plain float32."""
    if compression != "draco":
        return None
    return pool.submit(draco_encode, geometry["vertices"], geometry["faces"], geometry["normals"], geometry["uvs"])


def _bake(mesh: Any, options: GlbOptions, phase: Phase, pool: Executor
          ) -> tuple[dict[str, Any], list[np.ndarray], Future[DracoPrimitive] | None]:
    volume = bake.volume_of(mesh)
    # 1. clean: fill the decoded surface's small holes
    with phase("clean"):
        cu, surface = bake.prepare(mesh)
    # 2. bvh: the surface that remeshing measures and textures are projected onto
    with phase("bvh"):
        bvh = bake.surface_bvh(surface)
    # 3. remesh and simplify, or simplify and repair
    if options.remesh:
        with phase("remesh"):
            bake.remesh(cu, surface, bvh)
        with phase("simplify"):
            bake.simplify(cu, options.decimation_target)
    else:
        with phase("simplify"):
            bake.simplify_and_repair(cu, options.decimation_target)
    # 4. unwrap: charts, atlas, then no degenerate face and unit normals
    with phase("unwrap"):
        unwrapped = unwrap(cu, options.unwrap, options.texture_size, phase)
    geometry = {**_gltf_geometry(unwrapped), "double_sided": not options.remesh}
    draco = _encode_geometry(pool, geometry, options.compression)  # on the CPU while the GPU bakes
    # 5. bake: the attribute volume into texels
    with phase("bake"):
        attrs, mask = bake.bake(unwrapped, surface, bvh, volume, options.texture_size)
    # 6. pad: texels outside the charts, then the two glTF textures
    with phase("pad"):
        images = list(texture_images(attrs, mask, volume.layout))
    return geometry, images, draco


def _gltf_geometry(mesh: UnwrappedMesh) -> dict[str, Any]:
    """glTF's axes; UVs stay as rasterized: the bake's row 0 is v = 0, and so is a glTF image's first row."""
    return {
        "vertices": y_up(mesh.vertices).cpu().numpy(),
        "normals": y_up(mesh.normals).cpu().numpy(),
        "faces": mesh.faces.cpu().numpy(),
        "uvs": mesh.uvs.float().cpu().numpy(),
    }


def _from_trimesh(mesh: trimesh.Trimesh, texture_size: int) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A textured trimesh (test generators) as glTF geometry plus its base-colour image, ``texture_size``² texels."""
    material = mesh.visual.material
    if not isinstance(material, trimesh.visual.material.PBRMaterial):
        material = material.to_pbr()
    vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))
    faces = torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64))
    uvs = np.asarray(mesh.visual.uv, dtype=np.float32) * [1.0, -1.0] + [0.0, 1.0]  # trimesh's v points up, glTF's down
    geometry = {
        "vertices": vertices.numpy(),
        "normals": vertex_normals(vertices, faces).numpy(),
        "faces": faces.numpy(),
        "uvs": uvs.astype(np.float32),
        "metallic": float(material.metallicFactor if material.metallicFactor is not None else 1.0),
        "roughness": float(material.roughnessFactor if material.roughnessFactor is not None else 1.0),
        "double_sided": bool(material.doubleSided),
    }
    texture = material.baseColorTexture.convert("RGB")
    if texture.size != (texture_size, texture_size):
        texture = texture.resize((texture_size, texture_size), Image.Resampling.BILINEAR)
    return geometry, [np.asarray(texture)]
