"""A textured mesh -> GLB bytes: one mesh, one PBR material, textures already encoded.

We write the container ourselves rather than through trimesh, whose writer re-encodes every image
with Pillow's defaults one after the other and has no Draco: here the textures arrive encoded (WebP
or PNG, in parallel: ``texture.encode_images``) and the geometry is Draco data (``compress``) or
plain float32. glTF 2.0's rules kept: every buffer view 4-byte aligned, ``min``/``max`` on positions,
``EXT_texture_webp`` and ``KHR_draco_mesh_compression`` listed as used *and* required (no fallback
is written, so a viewer without them refuses the file rather than showing it wrong). The tests put
every variant through the Khronos validator and read it back with glTF-Transform.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .compress import DracoPrimitive, draco_encode
from .options import Compression

__all__ = ["Compression", "TexturedMesh", "write_glb"]

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UNSIGNED_SHORT, _UNSIGNED_INT = 5126, 5123, 5125
_TRIANGLES = 4
_MIME = {"webp": "image/webp", "png": "image/png"}


@dataclass(frozen=True)
class TexturedMesh:
    """What goes into the GLB, in glTF's conventions: +Y up, UV origin at the image's top-left.

    ``metallic_roughness`` holds roughness in G and metallic in B (glTF's packing); ``None`` means
    constant ``metallic`` / ``roughness`` factors only.
    """

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) integer
    normals: np.ndarray  # (V, 3) float32, unit length
    uvs: np.ndarray  # (V, 2) float32
    base_color: bytes  # encoded image
    metallic_roughness: bytes | None
    image_format: Literal["webp", "png"]
    metallic: float = 1.0
    roughness: float = 1.0
    double_sided: bool = False


def write_glb(mesh: TexturedMesh, compression: Compression = "draco", *, draco: DracoPrimitive | None = None) -> bytes:
    """Serialize ``mesh`` as a binary glTF 2.0 file, its geometry Draco-compressed or as float32.

    ``draco``: ``compress.draco_encode`` of the mesh's geometry when it is already done (the export
    starts it while the GPU bakes); encoded here otherwise.
    """
    body = _Body()
    if compression == "draco":
        primitive = body.draco_primitive(draco or draco_encode(mesh.vertices, mesh.faces, mesh.normals, mesh.uvs))
    else:
        primitive = body.plain_primitive(mesh)
    pbr: dict = {"metallicFactor": mesh.metallic, "roughnessFactor": mesh.roughness}
    pbr["baseColorTexture"] = {"index": body.texture(mesh.base_color, mesh.image_format)}
    if mesh.metallic_roughness is not None:
        pbr["metallicRoughnessTexture"] = {"index": body.texture(mesh.metallic_roughness, mesh.image_format)}
    gltf = {
        "asset": {"version": "2.0", "generator": "trellis-mv"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [primitive]}],
        "materials": [{"pbrMetallicRoughness": pbr, "doubleSided": mesh.double_sided}],
        **body.tables(),
    }
    required = (["KHR_draco_mesh_compression"] if compression == "draco" else []) + (
        ["EXT_texture_webp"] if mesh.image_format == "webp" else []
    )
    if required:
        gltf["extensionsUsed"], gltf["extensionsRequired"] = required, list(required)
    return _container(json.dumps(gltf, separators=(",", ":")).encode("utf-8"), bytes(body.data))


class _Body:
    """The binary chunk and the JSON tables that point into it (buffer views, accessors, images)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []
        self.images: list[dict] = []
        self.textures: list[dict] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(self, accessor: dict, payload: np.ndarray | None = None, target: int | None = None) -> int:
        if payload is not None:
            accessor = {"bufferView": self.view(np.ascontiguousarray(payload).tobytes(), target), **accessor}
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def plain_primitive(self, mesh: TexturedMesh) -> dict:
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        wide = len(vertices) > 0xFFFF
        indices = mesh.faces.astype(np.uint32 if wide else np.uint16).reshape(-1)
        bounds = {"min": vertices.min(axis=0).tolist(), "max": vertices.max(axis=0).tolist()}
        attributes = {
            "POSITION": self.accessor(_vertex_accessor(len(vertices), "VEC3") | bounds, vertices, _ARRAY_BUFFER),
            "NORMAL": self.accessor(_vertex_accessor(len(vertices), "VEC3"), mesh.normals.astype(np.float32), _ARRAY_BUFFER),
            "TEXCOORD_0": self.accessor(_vertex_accessor(len(vertices), "VEC2"), mesh.uvs.astype(np.float32), _ARRAY_BUFFER),
        }
        index = self.accessor(_index_accessor(len(indices), wide), indices, _ELEMENT_ARRAY_BUFFER)
        return {"attributes": attributes, "indices": index, "material": 0, "mode": _TRIANGLES}

    def draco_primitive(self, draco: DracoPrimitive) -> dict:
        # KHR_draco_mesh_compression: the accessors state counts and bounds but point at no data;
        # the extension's buffer view holds everything, decoded by the viewer.
        count = draco.vertex_count
        bounds = {"min": draco.position_min, "max": draco.position_max}
        kinds = {"POSITION": "VEC3", "NORMAL": "VEC3", "TEXCOORD_0": "VEC2"}
        attributes = {name: self.accessor(_vertex_accessor(count, kinds[name]) | (bounds if name == "POSITION" else {}))
                      for name in draco.attributes}
        return {
            "attributes": attributes,
            "indices": self.accessor(_index_accessor(draco.index_count, count > 0xFFFF)),
            "material": 0,
            "mode": _TRIANGLES,
            "extensions": {"KHR_draco_mesh_compression": {"bufferView": self.view(draco.data), "attributes": draco.attributes}},
        }

    def texture(self, encoded: bytes, image_format: str) -> int:
        self.images.append({"bufferView": self.view(encoded), "mimeType": _MIME[image_format]})
        source = len(self.images) - 1
        self.textures.append({"extensions": {"EXT_texture_webp": {"source": source}}} if image_format == "webp" else {"source": source})
        return len(self.textures) - 1

    def tables(self) -> dict:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        return {
            "buffers": [{"byteLength": len(self.data)}],
            "bufferViews": self.views,
            "accessors": self.accessors,
            "images": self.images,
            "textures": self.textures,
        }


def _vertex_accessor(count: int, kind: str) -> dict:
    return {"componentType": _FLOAT, "count": count, "type": kind}


def _index_accessor(count: int, wide: bool) -> dict:
    return {"componentType": _UNSIGNED_INT if wide else _UNSIGNED_SHORT, "count": count, "type": "SCALAR"}


def _container(json_chunk: bytes, binary_chunk: bytes) -> bytes:
    json_chunk += b" " * (-len(json_chunk) % 4)
    length = 12 + 8 + len(json_chunk) + 8 + len(binary_chunk)
    return b"".join([
        struct.pack("<4sII", b"glTF", 2, length),
        struct.pack("<I4s", len(json_chunk), b"JSON"), json_chunk,
        struct.pack("<I4s", len(binary_chunk), b"BIN\0"), binary_chunk,
    ])
