"""GPU faults and long runs through the handler: a 20-job soak, then a forced CUDA out-of-memory.

- Soak: 20 jobs mixing pipeline types (512, 1024_cascade), view counts (1-4) and modes, in one
  process, after one warm-up job per pipeline type (FlexGEMM autotune, cuBLAS workspaces): no job is
  lost, and the GPU memory allocated after each job is back at the baseline (the largest drift is
  recorded with and without a garbage collection first; ``gpu_soak_max_drift_gib``, goal 0.5 GiB).
- OOM: the process's memory is capped just above what it holds (``set_per_process_memory_fraction``)
  and a heavy job is sent: the answer is the out-of-memory error with ``refresh_worker`` (RunPod then
  replaces the worker), nothing of the failed job stays allocated once the answer is back, before any
  garbage collection (``gpu_oom_drift_gib``, goal 0.05 GiB: ``run_job`` clears the failure's frames),
  and, with the cap lifted, the next job in the same process works.

Every key is recorded before the assertions, so a failing run still reports what it measured.
"""

from __future__ import annotations

import gc
import re
import time

import pytest
from jobs import glb_of, gpu_handler, job

GIB = 2**30
# (pipeline_type, views, mode) for the 20 soak jobs: every combination of 2 x 4 x 2, then four more.
SOAK = [(kind, views, mode) for kind in ("512", "1024_cascade") for views in (1, 2, 3, 4)
        for mode in ("stochastic", "multidiffusion")]
SOAK += SOAK[:4]
SOAK_MAX_DRIFT_GIB = 0.5  # issue 19's bars
OOM_MAX_DRIFT_GIB = 0.05


def _allocated_gib() -> float:
    import torch

    return torch.cuda.memory_allocated() / GIB


# The warm-up's first 1024_cascade job alone can take two minutes (FlexGEMM autotune on a new GPU).
@pytest.mark.timeout(900)
def test_a_20_job_soak_loses_no_job_and_memory_returns_to_baseline(pipeline_bf16, record):
    run = gpu_handler(pipeline_bf16)
    for kind in ("512", "1024_cascade"):
        warm = run(job(f"warm-{kind}", pipeline_type=kind, views=1, mode="stochastic"))
        assert "error" not in warm, warm
    gc.collect()
    baseline = _allocated_gib()
    lost, drifts, drifts_after_gc = [], [], []
    start = time.perf_counter()
    for index, (kind, views, mode) in enumerate(SOAK):
        answer = run(job(f"soak-{index}", pipeline_type=kind, views=views, mode=mode, seed=index))
        if "error" in answer or "glb" not in answer:
            lost.append({"job": index, "answer": answer})
        else:
            glb_of(answer)
        drifts.append(_allocated_gib() - baseline)
        gc.collect()
        drifts_after_gc.append(_allocated_gib() - baseline)
    record("gpu_soak_jobs", len(SOAK))
    record("gpu_soak_lost", len(lost))
    record("gpu_soak_max_drift_gib", round(max(drifts, key=abs), 4))
    record("gpu_soak_max_drift_after_gc_gib", round(max(drifts_after_gc, key=abs), 4))
    record("gpu_soak", {"seconds": round(time.perf_counter() - start, 1), "baseline_gib": round(baseline, 3),
                        "drift_gib": [round(d, 4) for d in drifts], "lost": lost})
    assert lost == []
    assert max(abs(d) for d in drifts) <= SOAK_MAX_DRIFT_GIB, drifts


@pytest.mark.timeout(400)
def test_a_cuda_oom_answers_refresh_worker_and_the_next_job_works(pipeline_bf16, record):
    import torch

    run = gpu_handler(pipeline_bf16)
    gc.collect()
    torch.cuda.empty_cache()
    before = _allocated_gib()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = torch.cuda.memory_reserved() + 256 * 2**20  # room for a few tensors, not for a 4-view cascade
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        answer = run(job("oom", pipeline_type="1024_cascade", views=4, mode="multidiffusion"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    drift = _allocated_gib() - before  # no garbage collection: nothing may hold the failed job at all
    gc.collect()
    torch.cuda.empty_cache()
    drift_after_gc = _allocated_gib() - before
    after = run(job("after-oom", pipeline_type="512", views=1, mode="stochastic"))
    next_ok = "error" not in after and "glb" in after
    record("gpu_oom_refresh_worker", answer.get("refresh_worker") is True)
    record("gpu_oom_next_job_ok", next_ok)
    record("gpu_oom_drift_gib", round(drift, 4))
    record("gpu_oom", {"cap_gib": round(cap / GIB, 3), "answer": answer, "drift_gib": round(drift, 4),
                       "drift_after_gc_gib": round(drift_after_gc, 4), "next_job": after if not next_ok else "ok"})
    assert answer.get("refresh_worker") is True, answer
    assert re.fullmatch(r"internal error [0-9a-f]{8}: the GPU ran out of memory; .*", answer["error"])
    assert abs(drift) <= OOM_MAX_DRIFT_GIB, (drift, drift_after_gc)
    assert next_ok, after
    glb_of(after)
