"""The request users send, ``{"images": [...]}`` and nothing else, through the handler on the GPU.

That is 1024_cascade, 12 steps per stage, decimation 200 000, ``remesh: true``, 2048² WebP
textures (DESIGN.md, "Test what ships"), for 1 and 4 views; then the same request with one export
option changed (``remesh: false``; PNG textures at 1024²), on the 512 pipeline to keep them short.
The GLB comes back as base64 (no bucket), under a cap large enough for any of them.

A warm-up (``trellis_mv.warmup.warm_up``, the worker's own) runs first, so the timings are those
of a warm worker: ``export_over_generate_1024_cascade`` compares the export step with the generate
step (sampling and decoding) of the second 1-view default job (the first can still meet a slow shape
stage, which hides the export behind it). Every GLB is written to ``out_dir`` as
``default_<case>.glb``; the device has no node, so the Khronos validator runs on them afterwards
(``benchmarks/validate_glbs.py``), which gives ``default_glb_validator_errors``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import time

import pytest
from harness import register, rgba_view
from PIL import Image

from trellis_mv.config import Settings
from trellis_mv.export import GlbOptions

CASES = [  # (case, views, what the request sets beside the images)
    ("n1", 1, {}),
    ("n1_again", 1, {}),  # steady state: the export/generate ratio and the unwrap's seconds come from this one
    ("n4", 4, {}),
    ("512_remesh_false", 1, {"pipeline_type": "512", "glb": {"remesh": False}}),
    ("512_png", 1, {"pipeline_type": "512", "glb": {"texture_format": "png", "texture_size": 1024}}),
]


@pytest.fixture(scope="module")
def warm_generator(loaded_bf16, record):
    """The session's pipeline as the worker's generator (``load_generator``'s: with the latents of the
    flows' warm-up the load ran), after the worker's warm-up."""
    from trellis_mv.pipeline import TrellisGenerator
    from harness import flexgemm_entries
    from trellis_mv.pipeline.warm import SHELLS, shell_coords
    from trellis_mv.warmup import warm_up

    pipeline, warmed = loaded_bf16
    shape, texture = warmed  # the load ran every flow once, while it loaded
    assert shape.feats.shape[0] == texture.feats.shape[0] == shell_coords(*SHELLS[512]).shape[0]
    generator = TrellisGenerator(pipeline, warmed_latents=warmed)
    record("flexgemm_entries_at_start", flexgemm_entries())
    start = time.perf_counter()
    parts = warm_up(generator)
    record("warmup_in_test_session", {"seconds": round(time.perf_counter() - start, 2), "parts": parts})
    return generator


def _photos(views: int) -> list[str]:
    """One view: a JPEG on white (no alpha: the background remover runs). Several: RGBA PNGs, alpha kept."""
    encoded = []
    for index in range(views):
        view = rgba_view(30 + index, size=512)
        buffer = io.BytesIO()
        if views == 1:
            Image.alpha_composite(Image.new("RGBA", view.size, "white"), view).convert("RGB").save(buffer, "JPEG", quality=90)
        else:
            view.save(buffer, "PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def _glb_json(data: bytes) -> dict:
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack("<II", data[12:20])
    assert chunk_type == 0x4E4F534A
    return json.loads(data[20:20 + chunk_length])


@pytest.mark.parametrize(("case", "views", "extra"), CASES)
def test_default_request_answers_a_glb(warm_generator, out_dir, record, case, views, extra):
    import handler

    register(warm_generator)
    settings = Settings(generator="harness:registered_generator", max_base64_glb_bytes=200_000_000)
    run = handler.build_handler(settings, send_progress=False)
    start = time.perf_counter()
    answer = run({"id": f"default-{case}", "input": {"images": _photos(views), **extra}})
    seconds = time.perf_counter() - start
    assert "error" not in answer, answer
    data = base64.b64decode(answer["glb"]["base64"])
    (out_dir / f"default_{case}.glb").write_bytes(data)
    gltf = _glb_json(data)
    timings = answer["timings"]
    record(f"default_{case}", {
        "seconds": round(seconds, 2), "bytes": len(data), "sha256": answer["glb"]["sha256"], "views": views,
        "seed": answer["seed"], "pipeline_type": answer["pipeline_type"], "request": extra, "mesh": answer["mesh"],
        "timings": timings, "extensions_used": gltf.get("extensionsUsed", []),
        "images": [image.get("mimeType") for image in gltf.get("images", [])]})
    if case == "n1":
        record("glb_bytes_1024_cascade_default", len(data))
    if case == "n1_again":
        record("export_over_generate_1024_cascade", round(timings["export"] / timings["generate"], 3))
    assert answer["glb"]["bytes"] == len(data) and answer["glb"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert answer["pipeline_type"] == extra.get("pipeline_type", "1024_cascade")
    assert 0 < answer["mesh"]["faces"] <= GlbOptions().decimation_target
    # Structure only (the GLB may use compression extensions trimesh cannot read); the validator checks the rest.
    assert gltf["asset"]["version"] == "2.0" and gltf.get("meshes") and gltf.get("images")
