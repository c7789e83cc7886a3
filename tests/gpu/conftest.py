"""GPU test session: attention backends, random weights, loaded pipelines. Imports no trellis2 at module level.

CI collects this folder on CPU machines (tests/conftest.py marks every test here skipped), so
everything that needs CUDA, trellis2 or transformers happens inside fixtures, which skipped tests
never run. On a GPU machine without flash-attn, ``shims/`` (a per-segment SDPA ``flash_attn``)
goes on ``sys.path`` and trellis2's sparse attention is pointed at it; dense attention uses SDPA.
Results worth reporting are appended to ``$OUT/gpu_results.json`` (or a temporary folder) as each test ends.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    if not torch.cuda.is_available():
        return
    # Read by trellis2 when it is first imported, which happens later, inside fixtures.
    os.environ.setdefault("ATTN_BACKEND", "sdpa")
    if importlib.util.find_spec("flash_attn") is None:
        sys.path.insert(0, str(HERE / "shims"))
        os.environ.setdefault("SPARSE_ATTN_BACKEND", "flash_attn")


@pytest.fixture(scope="session")
def out_dir() -> Path:
    """Where GLBs and results go: the device run's ``$OUT`` when set."""
    folder = Path(os.environ.get("TRELLIS_MV_GPU_OUT") or os.environ.get("OUT") or tempfile.mkdtemp(prefix="trellis_mv_gpu_"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def record(out_dir: Path):
    """``record(name, value)``: keep a measured number, rewritten to gpu_results.json at once."""
    results: dict[str, Any] = {}

    def keep(name: str, value: Any) -> None:
        results[name] = value
        (out_dir / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str))

    return keep


@pytest.fixture(scope="session")
def weights_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="trellis_mv_weights_"))


def _loaded(root: Path, *, dtype: str, models: tuple[str, ...] | None) -> tuple[Any, Any]:
    from harness import load_shell_pipeline
    from random_weights import write_weights

    return load_shell_pipeline(write_weights(root, dtype=dtype, models=models), root / "BiRefNet")


@pytest.fixture(scope="session")
def pipeline_fp32(weights_root: Path) -> Any:
    """The 512 models with fp32 flows, resident: for parity at float32 tolerance."""
    from random_weights import MODELS_512

    pipeline, _warmed = _loaded(weights_root / "fp32", dtype="float32", models=MODELS_512)
    return pipeline


@pytest.fixture(scope="session")
def loaded_bf16(weights_root: Path) -> tuple[Any, Any]:
    """All eight models as released (bf16 flows, fp16 decoders), resident; with them, the 512 latents
    of the flows' warm-up during the load (``TrellisGenerator``'s ``warmed_latents``)."""
    return _loaded(weights_root / "bf16", dtype="bfloat16", models=None)


@pytest.fixture(scope="session")
def pipeline_bf16(loaded_bf16: tuple[Any, Any]) -> Any:
    """``loaded_bf16``'s pipeline."""
    return loaded_bf16[0]


@pytest.fixture(scope="session")
def decoded(pipeline_bf16: Any, record) -> Any:
    """A default job's decoded mesh: 1024_cascade, 12 steps, one view, seed 7, random weights (once per
    session, shared by the export, unwrap and rasterizer tests)."""
    import time

    from harness import rgba_view

    from trellis_mv.generator import GenerationRequest
    from trellis_mv.pipeline import TrellisGenerator

    request = GenerationRequest(images=(rgba_view(10),), seed=7, pipeline_type="1024_cascade")
    start = time.perf_counter()
    result = TrellisGenerator(pipeline_bf16).generate(request)
    record("export_gpu_generate", {"seconds": round(time.perf_counter() - start, 2), "timings": result.timings})
    mesh = result.mesh
    record("export_gpu_decoded", {"vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0]),
                                  "voxels": int(mesh.coords.shape[0]), "voxel_size": float(mesh.voxel_size)})
    return mesh
