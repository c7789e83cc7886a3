"""The GLB writer (trellis_mv.export.glb) with and without Draco: Khronos validator clean (0 errors,
0 warnings), and read back by glTF-Transform with Google's Draco decoder as a viewer would."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import time

import numpy as np
import pytest
import torch
import trimesh
from helpers import read_glb
from PIL import Image

from trellis_mv.export.clean import vertex_normals
from trellis_mv.export.glb import TexturedMesh, write_glb
from trellis_mv.export.texture import encode_images


def textured(subdivisions=3, image_format="webp", split=False, size=64) -> TexturedMesh:
    """An icosphere with spherical UVs; ``split`` gives every face its own three vertices (all seams)."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices, faces = np.asarray(sphere.vertices, np.float32) * 0.4, np.asarray(sphere.faces)
    if split:
        vertices, faces = vertices[faces.reshape(-1)], np.arange(faces.size).reshape(-1, 3)
    uvs = np.stack([0.5 + np.arctan2(vertices[:, 1], vertices[:, 0]) / (2 * np.pi), 0.5 + vertices[:, 2] * 1.2], 1)
    normals = vertex_normals(torch.from_numpy(vertices), torch.from_numpy(faces)).numpy()
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    base, metallic_roughness = encode_images([pixels, pixels[..., ::-1]], image_format)
    return TexturedMesh(vertices=vertices, faces=faces, normals=normals, uvs=uvs.astype(np.float32),
                        base_color=base, metallic_roughness=metallic_roughness, image_format=image_format)


def gltf_json(data: bytes) -> dict:
    length, kind = struct.unpack("<I4s", data[12:20])
    assert kind == b"JSON"
    return json.loads(data[20:20 + length])


CASES = [  # (compression, image_format, extensions)
    ("draco", "webp", ["EXT_texture_webp", "KHR_draco_mesh_compression"]),
    ("draco", "png", ["KHR_draco_mesh_compression"]),
    ("none", "webp", ["EXT_texture_webp"]),
    ("none", "png", []),
]


@pytest.mark.parametrize(("compression", "image_format", "extensions"), CASES)
def test_the_glb_validates_and_reads_back(compression, image_format, extensions, valid_glb, tmp_path):
    mesh = textured(image_format=image_format)
    data = write_glb(mesh, compression)
    report = valid_glb(data)
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    read = read_glb(data, tmp_path)
    assert sorted(read["extensions"]) == extensions
    assert sorted(gltf_json(data).get("extensionsRequired", [])) == extensions  # no fallback is written
    [primitive] = read["primitives"]
    assert sorted(primitive["attributes"]) == ["NORMAL", "POSITION", "TEXCOORD_0"]
    assert primitive["indices"] == mesh.faces.size
    np.testing.assert_allclose(primitive["min"], mesh.vertices.min(0), atol=1e-4)  # Draco: 14-bit positions
    np.testing.assert_allclose(primitive["max"], mesh.vertices.max(0), atol=1e-4)
    assert abs(primitive["normalLength"][0] - 1) < 1e-5 and abs(primitive["normalLength"][1] - 1) < 1e-5
    if compression == "none":
        assert primitive["vertices"] == len(mesh.vertices)
    assert read["textures"] == [{"mimeType": f"image/{image_format}", "size": [64, 64]}] * 2


def test_draco_keeps_the_mesh():
    """Decoded Draco data against the input, face by face: the encoder reorders faces and vertices."""
    import DracoPy

    mesh = textured()
    gltf = write_glb(mesh, "draco")
    document = gltf_json(gltf)
    extension = document["meshes"][0]["primitives"][0]["extensions"]["KHR_draco_mesh_compression"]
    view = document["bufferViews"][extension["bufferView"]]
    binary_start = 20 + struct.unpack("<I", gltf[12:16])[0] + 8
    decoded = DracoPy.decode(gltf[binary_start + view["byteOffset"]:][: view["byteLength"]])
    by_id = {a["unique_id"]: a["data"] for a in decoded.attributes}
    got = {name: by_id[uid][np.asarray(decoded.faces)] for name, uid in extension["attributes"].items()}
    want = {"POSITION": mesh.vertices[mesh.faces], "TEXCOORD_0": mesh.uvs[mesh.faces], "NORMAL": mesh.normals[mesh.faces]}
    assert len(got["POSITION"]) == len(want["POSITION"])
    # Match faces by centroid, then corners by position; the winding must survive.
    distance = np.linalg.norm(got["POSITION"].mean(1)[:, None] - want["POSITION"].mean(1)[None], axis=2)
    match = distance.argmin(1)
    assert sorted(match.tolist()) == list(range(len(match)))
    corners = np.linalg.norm(got["POSITION"][:, :, None] - want["POSITION"][match][:, None], axis=3).argmin(2)
    rows = np.arange(len(match))[:, None]
    for name, tolerance in (("POSITION", 1e-4), ("TEXCOORD_0", 1e-4), ("NORMAL", 5e-3)):
        np.testing.assert_allclose(got[name], want[name][match][rows, corners], atol=tolerance)
    assert {tuple(row) for row in corners.tolist()} <= {(0, 1, 2), (1, 2, 0), (2, 0, 1)}


def small(vertices, faces) -> TexturedMesh:
    """A textured mesh from a few hand-placed vertices: planar UVs, area-weighted normals, 16² noise textures."""
    vertices, faces = np.asarray(vertices, np.float32), np.asarray(faces)
    uvs = (vertices[:, :2] - vertices[:, :2].min(0)) / np.ptp(vertices[:, :2], 0)
    normals = vertex_normals(torch.from_numpy(vertices), torch.from_numpy(faces)).numpy()
    base, metallic_roughness = encode_images([np.full((16, 16, 3), 128, np.uint8)] * 2, "webp")
    return TexturedMesh(vertices=vertices, faces=faces, normals=normals, uvs=uvs.astype(np.float32),
                        base_color=base, metallic_roughness=metallic_roughness, image_format="webp")


def twice(mesh: TexturedMesh) -> TexturedMesh:
    """Every vertex twice, identical; every other face uses the second copies, so every vertex is used."""
    faces = mesh.faces + len(mesh.vertices) * (np.arange(len(mesh.faces)) % 2)[:, None]
    return dataclasses.replace(mesh, vertices=np.concatenate([mesh.vertices] * 2), normals=np.concatenate([mesh.normals] * 2),
                               uvs=np.concatenate([mesh.uvs] * 2), faces=faces)


_SQUARE = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0.5, 0.5, 0.2]]
_FAN = [[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
# Meshes whose points or faces Draco's encoder changes, and how: the accessors must state what a
# decoder returns, not what went in. (name, mesh, change in points, change in indices)
CHANGED_BY_DRACO = [
    ("identical points merge", lambda: twice(small(_SQUARE, _FAN)), "fewer", "same"),
    ("a vertex joining two fans is split", lambda: small(
        _SQUARE + [[1, 1, 0.5], [2, 1, 0], [2, 2, 0], [1, 2, 0]], _FAN + [[2, 5, 6], [2, 6, 7], [2, 7, 8]]), "more", "same"),
    ("an edge of three faces is split", lambda: small(
        [[0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -1, 0], [0.5, 0, 1]], [[0, 1, 2], [1, 0, 3], [0, 1, 4]]), "more", "same"),
    ("an unused vertex is dropped", lambda: small(_SQUARE + [[5, 5, 5]], _FAN), "fewer", "same"),
    ("a face with a repeated corner is dropped", lambda: small(_SQUARE, _FAN + [[0, 0, 1]]), "same", "fewer"),
]


def _change(after: int, before: int) -> str:
    return "fewer" if after < before else "more" if after > before else "same"


@pytest.mark.parametrize(("name", "make", "points", "indices"), CHANGED_BY_DRACO, ids=[case[0] for case in CHANGED_BY_DRACO])
def test_draco_accessors_state_what_the_decoder_returns(name, make, points, indices, valid_glb, tmp_path):
    """The counts come from decoding the encoded data once: DracoPy does not report the encoder's
    ``num_encoded_points``, and Draco merges, splits and drops points and faces as these cases show."""
    mesh = make()
    data = write_glb(mesh, "draco")
    assert valid_glb(data)["issues"]["numErrors"] == 0
    document = gltf_json(data)
    primitive = document["meshes"][0]["primitives"][0]
    stated = {name: document["accessors"][index]["count"] for name, index in primitive["attributes"].items()}
    [read] = read_glb(data, tmp_path)["primitives"]  # Google's decoder, through glTF-Transform
    assert stated == dict.fromkeys(["POSITION", "NORMAL", "TEXCOORD_0"], read["vertices"])
    assert document["accessors"][primitive["indices"]]["count"] == read["indices"]
    assert (_change(read["vertices"], len(mesh.vertices)), _change(read["indices"], mesh.faces.size)) == (points, indices)


def test_a_draco_primitive_encoded_ahead_writes_the_same_file():
    from trellis_mv.export.compress import draco_encode

    mesh = textured()
    ahead = draco_encode(mesh.vertices, mesh.faces, mesh.normals, mesh.uvs)
    assert write_glb(mesh, "draco", draco=ahead) == write_glb(mesh, "draco")


def test_images_are_stored_as_encoded():
    mesh = textured(image_format="png")
    data = write_glb(mesh, "none")
    document = gltf_json(data)
    binary_start = 20 + struct.unpack("<I", data[12:16])[0] + 8
    for image, encoded in zip(document["images"], [mesh.base_color, mesh.metallic_roughness]):
        view = document["bufferViews"][image["bufferView"]]
        assert data[binary_start + view["byteOffset"]:][: view["byteLength"]] == encoded
        assert Image.open(io.BytesIO(encoded)).format == "PNG"


def test_a_mesh_without_metallic_roughness_texture_uses_factors(valid_glb):
    mesh = textured()
    plain = TexturedMesh(**{**mesh.__dict__, "metallic_roughness": None, "metallic": 0.0, "roughness": 0.7})
    document = gltf_json(write_glb(plain, "none"))
    assert document["materials"][0]["pbrMetallicRoughness"] == {
        "metallicFactor": 0.0, "roughnessFactor": 0.7, "baseColorTexture": {"index": 0}
    }
    assert valid_glb(write_glb(plain, "draco"))["issues"]["numWarnings"] == 0


# Geometry bytes per vertex and per face, and Draco's encoding time, on a mesh whose every face has
# its own vertices (the worst case for seams). The measured numbers behind the choice of Draco
# (trellis_mv/export/compress.py) come from a 176k-face mesh; this table keeps their order true in CI.
GEOMETRY = [  # (compression, most bytes per face)
    ("none", 3 * 32 + 12),  # three float32 vertices (position, normal, UV: 32 bytes) + three uint32 indices
    ("draco", 12),
]


@pytest.mark.parametrize(("compression", "most_bytes_per_face"), GEOMETRY)
def test_geometry_size_per_face(compression, most_bytes_per_face, valid_glb):
    mesh = textured(subdivisions=5, split=True, size=16)  # 20480 faces, 61440 vertices
    start = time.perf_counter()
    data = write_glb(mesh, compression)
    seconds = time.perf_counter() - start
    geometry = len(data) - len(mesh.base_color) - len(mesh.metallic_roughness)
    assert geometry / len(mesh.faces) <= most_bytes_per_face
    assert seconds < 2
    assert valid_glb(data)["issues"]["numWarnings"] == 0


def test_a_worker_without_dracopy_fails_at_start_not_at_its_first_job():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys; sys.modules['DracoPy'] = None; import handler; from trellis_mv.config import Settings; "
            "handler.build_handler(Settings(generator='trellis_mv.standin:create'), send_progress=False)")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "DracoPy" in done.stderr.splitlines()[-1]
