"""One job, start to finish — and the one place where an exception stops.

``run_job`` reads in the order a job runs: 1 validate, 2 decode, 3 generate, 4 export, 5 preview
(only when ``output.preview`` asks: turntable renders and the per-view fit, ``trellis_mv.preview``),
6 store, then the answer. Each step is one call and one timing, and reports its start through
``progress``; the generator reports every denoising step. Everything the job needs is passed in (settings, generator,
store, progress), so tests run the same function with a CPU generator and a loopback S3 server.

Answers to failures, all as ``{"error": ...}`` and never a traceback:

- the client's mistakes (``UserError``): the message as is, e.g. ``"seed: -1 is not in the range ..."``;
- a worker that cannot generate at all (``StartupError``, e.g. no CUDA GPU): the message as is;
- a bucket that refused the upload or could not be reached (``StorageError``): the message as is,
  naming the bucket and the cause, one log line and no traceback: a configuration problem, not ours;
- CUDA out of memory: a short message plus ``"refresh_worker": True``, so RunPod replaces the worker
  rather than letting a fragmented GPU fail the next job too;
- anything else: ``"internal error <id>: <short>"``, with ``<id>`` in the logged traceback.

Nothing of a failed job outlives its answer: the exception's traceback holds every frame the failure
unwound through, and their locals hold the job's tensors (0.51 GiB of GPU memory stayed allocated
after a forced out-of-memory on the H200). The catch site logs the traceback as text, never as
``exc_info`` (a handler that keeps records, as pytest's or a ``MemoryHandler`` do, would keep the
frames), then clears the frames of the whole exception chain.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator

import torch

from . import images, schema, storage
from .config import Settings
from .errors import StartupError, StorageError, UserError, WorkerError
from .export import export_glb
from .generator import Generator, ProgressFn
from .licences import job_warnings
from .messages import counted
from .preview import make_preview
from .timing import timed

__all__ = ["Progress", "run_job"]

log = logging.getLogger(__name__)

# Receives {"stage": name} when a step starts and {"stage", "step", "steps"} per denoising step;
# handler.py connects it to runpod.serverless.progress_update.
Progress = Callable[[dict[str, Any]], None]


def run_job(
    job: dict[str, Any],
    *,
    settings: Settings,
    generator: Generator,
    store: storage.S3Store | None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run one RunPod job and answer its output, or ``{"error": ...}``; never raises."""
    job_id = str(job.get("id") or "local")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    step = partial(_step, timings=timings, progress=progress)
    try:
        # 1. validate: a wrong request costs no download, no decoding and no GPU time
        with step("validate"):
            request = schema.parse_job_input(job.get("input"), settings, has_bucket=store is not None)
        # 2. decode: fetch URLs, decode pixels, EXIF orientation, real alpha kept
        with step("decode"):
            views = images.load_all(request.images, settings)
        # 3. generate: all views steer one sample through the three stages
        with step("generate"):
            result = generator.generate(request.generation_request(views), progress=_denoising(progress))
        # 4. export
        with step("export"):
            glb = export_glb(result.mesh, request.glb.to_options())
        # 5. preview, when asked: turntable renders and how the result fits each view
        preview = None
        if request.output.preview:
            with step("preview"):
                preview = make_preview(glb.mesh, result.views)
        # 6. store
        with step("store"):
            stored = storage.store_glb(glb.data, request.output, job_id=job_id, settings=settings, store=store)
            shown = preview and storage.store_preview(
                preview.png, request.output, glb=stored, settings=settings, store=store
            )
    except UserError as error:
        log.info("job %s refused: %s", job_id, error)
        return _released({"error": str(error)}, error)
    except (StartupError, StorageError) as error:
        log.error("job %s cannot run: %s", job_id, error)
        return _released({"error": str(error)}, error)
    except Exception as error:  # the one catch site: no job may stop the worker
        return _released(_internal_error(job_id, error), error)
    timings["total"] = round(time.perf_counter() - started, 3)
    log.info("job %s done: %s, %d faces, %d bytes, %.1f s", job_id, counted(len(views), "view"), glb.faces, len(glb.data),
             timings["total"])
    warnings = [*result.warnings, *job_warnings(result.components)]
    for warning in warnings:
        log.warning("job %s: %s", job_id, warning)
    answer = {
        "glb": stored,
        "seed": request.seed,
        "views": len(views),
        "mode": request.mode,
        "pipeline_type": request.pipeline_type,
        "resolution": result.resolution,
        "warnings": warnings,
        "mesh": {"vertices": glb.vertices, "faces": glb.faces},
        "timings": {**result.timings, **timings, **{f"export_{name}": value for name, value in glb.timings.items()},
                    **(preview.timings if preview else {})},
    }
    if preview:
        answer.update(preview=shown, views_fit=preview.views_fit)
    return answer


@contextmanager
def _step(name: str, *, timings: dict[str, float], progress: Progress | None) -> Iterator[None]:
    if progress is not None:
        progress({"stage": name})
    with timed(timings, name):
        yield


def _denoising(progress: Progress | None) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda stage, done, total: progress({"stage": stage, "step": done, "steps": total})


def _internal_error(job_id: str, error: Exception) -> dict[str, Any]:
    error_id = secrets.token_hex(4)
    # The traceback as text: a record carrying exc_info would keep the failed job's frames alive.
    trace = "".join(traceback.format_exception(error)).rstrip()
    log.error("internal error %s in job %s\n%s", error_id, job_id, trace)
    if _is_cuda_out_of_memory(error):
        return {
            "error": f"internal error {error_id}: the GPU ran out of memory; try fewer views, "
            'mode "stochastic" or a smaller pipeline_type',
            "refresh_worker": True,
        }
    return {"error": f"internal error {error_id}: {_short(error)}"}


def _released(answer: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """``answer``, once the frames of ``error``'s traceback, its cause's and its context's have let go of their locals.

    ``traceback.clear_frames`` skips the frame still running (``run_job``'s own); every other frame the
    failure unwound through is finished, and clearing it frees the tensors it held.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current.__traceback__ = None
        pending += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
    return answer


def _is_cuda_out_of_memory(error: Exception) -> bool:
    # torch's caching allocator raises OutOfMemoryError; kernels that allocate on their own (extensions,
    # Triton) raise RuntimeError("CUDA error: out of memory") and the like.
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not isinstance(error, WorkerError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
