"""export_glb end to end on the CPU (a test generator's textured trimesh) and through run_job:
every GLB validated (0 errors, 0 warnings) and read back; the export's phases in the answer's timings."""

from __future__ import annotations

import base64

import pytest
from cpu_generator import CpuGenerator
from helpers import png_b64, read_glb

import trellis_mv.export as export
from trellis_mv.config import Settings
from trellis_mv.export import ExportedGlb, GlbOptions, export_glb
from trellis_mv.generator import GenerationRequest, StageOptions
from trellis_mv.worker import run_job


def sphere():
    from PIL import Image

    request = GenerationRequest(
        images=(Image.new("RGB", (16, 16), (200, 40, 40)),), seed=3, mode="stochastic", pipeline_type="512",
        sparse_structure=StageOptions(), shape_slat=StageOptions(), tex_slat=StageOptions(), remove_background=None,
    )
    return CpuGenerator().generate(request).mesh


OPTIONS = [  # (options, extensions)
    (GlbOptions(), ["EXT_texture_webp", "KHR_draco_mesh_compression"]),
    (GlbOptions(compression="none", texture_size=512), ["EXT_texture_webp"]),
    (GlbOptions(texture_format="png", texture_size=1024), ["KHR_draco_mesh_compression"]),
    (GlbOptions(texture_format="png", compression="none", texture_size=512), []),
]


@pytest.mark.parametrize(("options", "extensions"), OPTIONS)
def test_a_textured_trimesh_exports_a_valid_glb(options, extensions, valid_glb, tmp_path):
    mesh = sphere()
    glb = export_glb(mesh, options)
    assert isinstance(glb, ExportedGlb)
    assert (glb.vertices, glb.faces) == (len(mesh.vertices), len(mesh.faces)) == (642, 1280)
    assert set(glb.timings) == {"clean", "encode", "write"}
    assert valid_glb(glb.data)["issues"]["numWarnings"] == 0
    read = read_glb(glb.data, tmp_path)
    assert sorted(read["extensions"]) == extensions
    [primitive] = read["primitives"]
    assert primitive["indices"] == 3 * 1280
    assert abs(primitive["normalLength"][0] - 1) < 1e-5 and abs(primitive["normalLength"][1] - 1) < 1e-5
    # The test generator's texture (64²) at texture_size: one base colour image, constant metallic and roughness factors.
    size = options.texture_size
    assert read["textures"] == [{"mimeType": f"image/{options.texture_format}", "size": [size, size]}]


def test_the_answer_times_every_export_phase(valid_glb):
    job = {"id": "export-1", "input": {"images": [png_b64()], "seed": 1, "output": {"type": "base64"}}}
    answer = run_job(job, settings=Settings(), generator=CpuGenerator(), store=None)
    assert {"export_clean", "export_encode", "export_write"} <= set(answer["timings"])
    assert answer["timings"]["export"] >= answer["timings"]["export_write"]
    report = valid_glb(base64.b64decode(answer["glb"]["base64"]))
    assert report["issues"]["numWarnings"] == 0
    assert report["info"]["extensionsUsed"] == ["KHR_draco_mesh_compression", "EXT_texture_webp"]


def test_the_export_package_exports_what_the_worker_and_schema_use():
    assert export.__all__ == ["Compression", "ExportedGlb", "GlbOptions", "export_glb"]
