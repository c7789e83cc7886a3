"""Jobs through ``handler.build_handler`` on the session's GPU pipeline, with test settings.

Three sampler steps per stage and a small GLB: these jobs prove plumbing, faults and bookkeeping,
not quality. Views are RGBA (real alpha), so background removal is skipped.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Callable

from harness import register, rgba_view, set_low_vram

FEW = {"steps": 3}
SMALL_GLB = {"decimation_target": 20000, "texture_size": 512, "remesh": False}


def gpu_handler(pipeline: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The handler a worker builds, on ``pipeline`` kept resident, answering base64 GLBs."""
    import handler

    from trellis_mv.config import Settings
    from trellis_mv.pipeline import TrellisGenerator

    set_low_vram(pipeline, False)
    register(TrellisGenerator(pipeline))
    settings = Settings(generator="harness:registered_generator", max_base64_glb_bytes=60_000_000)
    return handler.build_handler(settings, send_progress=False)


def job(job_id: str, *, pipeline_type: str, views: int, mode: str, seed: int = 7) -> dict[str, Any]:
    """A job of ``views`` RGBA views with test settings."""
    return {"id": job_id, "input": {
        "images": [_b64_png(rgba_view(10 + index)) for index in range(views)],
        "seed": seed, "mode": mode, "pipeline_type": pipeline_type,
        "sparse_structure": FEW, "shape_slat": FEW, "tex_slat": FEW,
        "glb": SMALL_GLB, "output": {"type": "base64"},
    }}


def glb_of(answer: dict[str, Any]) -> bytes:
    """The answer's GLB, checked to start as a binary glTF 2.0 does."""
    data = base64.b64decode(answer["glb"]["base64"])
    assert data[:4] == b"glTF" and int.from_bytes(data[4:8], "little") == 2
    return data


def _b64_png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
