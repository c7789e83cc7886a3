"""The worker end to end on the GPU: handler.build_handler -> run_job -> TRELLIS.2 -> o_voxel GLB.

The handler gets the loaded random-weight generator through its ``TRELLIS_MV_GENERATOR`` hook.
Sampler steps are cut to 4 per stage and the GLB kept small: this proves plumbing, not quality.
The GLBs are written to ``$OUT`` and checked there for structure; the Khronos validator (npm
``gltf-validator``, absent on the device) runs on them afterwards with ``node tests/gltf_validate.mjs``.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time

import pytest
from harness import register, rgba_view, set_low_vram

from trellis_mv.config import Settings

FEW = {"steps": 4}
CASES = [  # (pipeline_type, views, mode, low_vram)
    ("512", 1, "stochastic", False),
    ("512", 4, "stochastic", False),
    ("512", 4, "multidiffusion", False),
    ("1024_cascade", 1, "stochastic", False),
    ("1024_cascade", 4, "stochastic", False),
    ("1024_cascade", 4, "multidiffusion", False),
    ("512", 1, "multidiffusion", True),
    ("1024_cascade", 4, "multidiffusion", True),
]


def _b64_png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.mark.parametrize(("pipeline_type", "views", "mode", "low_vram"), CASES)
def test_handler_answers_a_valid_glb(pipeline_bf16, out_dir, record, pipeline_type, views, mode, low_vram):
    import handler
    import trimesh

    from trellis_mv.pipeline import TrellisGenerator

    set_low_vram(pipeline_bf16, low_vram)
    register(TrellisGenerator(pipeline_bf16))
    settings = Settings(generator="harness:registered_generator", max_base64_glb_bytes=60_000_000)
    run = handler.build_handler(settings, send_progress=False)
    images = [_b64_png(rgba_view(10 + i)) for i in range(views)]
    if views == 1 and pipeline_type == "512":
        images = [_b64_png(rgba_view(10).convert("RGB"))]  # no alpha: the background remover runs
    job = {"id": f"e2e-{pipeline_type}-{views}-{mode}-{low_vram}", "input": {
        "images": images, "seed": 7, "mode": mode, "pipeline_type": pipeline_type,
        "sparse_structure": FEW, "shape_slat": FEW, "tex_slat": FEW,
        "glb": {"decimation_target": 20000, "texture_size": 512, "remesh": False},
        "output": {"type": "base64"},
    }}
    start = time.perf_counter()
    answer = run(job)
    seconds = time.perf_counter() - start
    set_low_vram(pipeline_bf16, False)
    assert "error" not in answer, answer
    data = base64.b64decode(answer["glb"]["base64"])
    name = f"{pipeline_type}_n{views}_{mode}{'_lowvram' if low_vram else ''}.glb"
    (out_dir / name).write_bytes(data)
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert (magic, version, length) == (b"glTF", 2, len(data))
    chunk_length, chunk_type = struct.unpack("<II", data[12:20])
    assert chunk_type == 0x4E4F534A and json.loads(data[20:20 + chunk_length])["asset"]["version"] == "2.0"
    scene = trimesh.load(io.BytesIO(data), file_type="glb")
    assert len(scene.geometry) >= 1
    record(f"e2e_{name}", {"seconds": round(seconds, 2), "bytes": len(data), "mesh": answer["mesh"],
                           "timings": answer["timings"]})
