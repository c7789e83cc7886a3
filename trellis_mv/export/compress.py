"""Geometry compression: the GLB's one primitive as Draco data (``KHR_draco_mesh_compression``).

Why Draco, measured on a mesh shaped like the default 1024_cascade output (176k faces, 328k vertices
after UV seams, normals, UVs): geometry 12.6 MB as float32; KHR_mesh_quantization 7.4 MB (gltfpack);
EXT_meshopt_compression 2.9 MB (gltfpack -cc); Draco 1.0 MB (glTF-Transform's defaults) and 0.94 MB
(this module). With two 2048² WebP textures of noise (what random weights bake, 5.6 MB) only Draco
keeps the GLB under 8 MB. It is also what the most viewers read: Blender's importer (every release;
its released versions cannot read meshopt), three.js (``DRACOLoader``), model-viewer, Babylon.js and
Unity glTFast (with its Draco package).

DracoPy (Python bindings of Google's Draco) needs no Node.js in the image and releases the GIL while
it works, so the export runs it on a worker thread while the GPU bakes (``run``). On a 200k-face,
341k-vertex mesh cut into small charts (benchmarks/export_cpu.py) it takes 1.05 s of CPU, 0.19 s of
which is one decode. The encoder merges identical points, splits non-manifold vertices and edges and
drops unused points and degenerate faces (tests/test_export_glb.py shows each), so the glTF accessors'
counts are only known after it. Draco's encoder reports them (``Encoder::num_encoded_points``, what
glTF-Transform reads), but DracoPy 2.2 does not return them; its ``preserve_order`` keeps the input's
counts through sequential encoding, which made that mesh's geometry 3.2 times larger (3.83 MB
against 1.20: the default GLB over 8 MB); computing them ourselves means redoing Draco's corner
table and attribute-seam walk (``MeshEdgebreakerEncoder::ComputeNumberOfEncodedPoints``). So the
buffer is decoded once, on the same worker thread.

Quantization, on the same mesh: UVs at 12 bits would save 0.11 MB but round to half a texel of a
2048² texture (a whole one at 4096²); normals at 8 bits 0.16 MB for errors near a degree. The
default GLB has 1-2 MB to spare under 8 MB, so the bits below stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import DracoPy
import numpy as np

__all__ = ["DRACO_LEVEL", "DracoPrimitive", "draco_encode"]

DRACO_LEVEL = 7  # 10: 4% smaller, slower to decode; 4 and below: three times the size (edgebreaker off)
# Positions: 14 bits over the unit cube, 1/16 of a 1024³ voxel. UVs: 14 bits, a quarter texel of a
# 4096² texture. Normals: 10 bits (octahedral), glTF-Transform's default.
POSITION_BITS, UV_BITS, NORMAL_BITS = 14, 14, 10
_GLTF_NAME = {0: "POSITION", 1: "NORMAL", 3: "TEXCOORD_0"}  # draco::GeometryAttribute::Type


@dataclass(frozen=True)
class DracoPrimitive:
    """Draco data for one primitive and what its glTF accessors must say."""

    data: bytes
    attributes: dict[str, int]  # glTF attribute name -> Draco unique id
    vertex_count: int
    index_count: int
    position_min: list[float]
    position_max: list[float]


def draco_encode(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, uvs: np.ndarray) -> DracoPrimitive:
    """Encode positions, normals and UVs of one indexed triangle mesh."""
    data = DracoPy.encode(
        np.ascontiguousarray(vertices, dtype=np.float32),
        np.ascontiguousarray(faces, dtype=np.uint32),
        quantization_bits=POSITION_BITS,
        compression_level=DRACO_LEVEL,
        normals=np.ascontiguousarray(normals, dtype=np.float64),
        normal_quantization_bits=NORMAL_BITS,
        tex_coord=np.ascontiguousarray(uvs, dtype=np.float64),
        tex_coord_quantization_bits=UV_BITS,
    )
    decoded = DracoPy.decode(data)
    attributes = {_GLTF_NAME[a["attribute_type"]]: int(a["unique_id"]) for a in decoded.attributes}
    points = np.asarray(decoded.points, dtype=np.float32).reshape(-1, 3)
    return DracoPrimitive(
        data=data,
        attributes=attributes,
        vertex_count=len(points),
        index_count=int(np.asarray(decoded.faces).size),
        position_min=points.min(axis=0).tolist(),
        position_max=points.max(axis=0).tolist(),
    )
