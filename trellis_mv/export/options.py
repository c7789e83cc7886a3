"""The contract's ``glb`` object: what a job may ask of its GLB, with no mesh library or torch behind it.

The request schema, the local command and the ``remote`` client read these options; only the export
itself (``run``) needs torch, trimesh and the GPU libraries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Compression", "GlbOptions", "UnwrapMethod"]

Compression = Literal["draco", "none"]
UnwrapMethod = Literal["fast", "xatlas"]


@dataclass(frozen=True)
class GlbOptions:
    """The contract's ``glb`` object. The defaults keep a 1024_cascade GLB under 8 MB."""

    decimation_target: int = 200_000
    texture_size: int = 2048
    remesh: bool = True
    # WebP (EXT_texture_webp) makes textures several times smaller than PNG; PNG opens everywhere.
    texture_format: Literal["webp", "png"] = "webp"
    # Draco (KHR_draco_mesh_compression) shrinks the geometry about 18x; "none" writes float32.
    compression: Compression = "draco"
    # "fast": charts flattened on the GPU and packed by us; "xatlas": CuMesh + xatlas as o_voxel does, to compare.
    unwrap: UnwrapMethod = "fast"
