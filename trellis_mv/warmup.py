"""Warm-up at start: every kernel a job launches, launched once before the first job, where it costs least.

A fresh process pays on its first job for whatever its GPU has not run yet: FlexGEMM's Triton
kernels in the decoders (compiled per configuration and specialisation; tuned first where the GPU
has no entries of ours), kernels and libraries loaded at their first launch, each model's first
use. On the H200 with our FlexGEMM entries, a fresh worker's first default job took 34.4 s more
than its second. Running whole jobs first (1024_cascade and 512, twelve steps per stage: the
warm-up until issue 19) cut that to 0.15 s but took 41 s, after the 25 s the worker took to load.
Kernels are per shape, not per step, and most of them need no weights, so the warm-up is now four
parts, each done once and overlapped with what it does not depend on:

1. ``kernels``: the decoders' Triton kernels, compiled by child processes that start before the
   weights are read (``trellis_mv.pipeline.kernels``, started by ``trellis_mv.headstart``);
2. ``export``: a small sphere through the export at the default texture size, and the previews'
   coverage kernel once (``raster.coverage_kernel.warm_up``), on a thread while
   the models load (``start_export_warm_up``), once a child process has run the same export
   (``python -m trellis_mv.warmup --compile``, one of 1's children): the compiles of our Triton
   kernels are then read from Triton's cache, not done beside the load (the export's warm-up took
   10.8 s that way, the load waiting on the interpreter lock for most of it);
3. ``stages``: background removal, DINOv3 at both resolutions, one sampling step of each flow on a
   typical object's token count. Where the GPU has room for every model (not low-VRAM mode), the
   loader runs these as soon as each model is loaded, while the later ones still load
   (``pipeline.warm.warm_encoders`` and ``warm_flows``), which takes them off the start's path;
   otherwise they run here (``pipeline.warm.warm_stages``);
4. ``decoders``: the cascade's upsampling and ``decode_latent`` on the latents of 3, after 1 (they
   use its kernels). On a GPU we ship no FlexGEMM entries for, the decoders' typical shape keys are
   tuned here first, minutes on such a GPU's first start (builder/autotune_flexgemm.py makes entries).

Each part's seconds are logged and returned; the worker takes no job before all four are done.
An error propagates: a worker that cannot finish its warm-up would fail every job.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future
from typing import Any

from .gpu_random import RANDOM_OR_CAPTURE
from .threads import on_a_thread

__all__ = ["WARMUP_FACES", "start_export_warm_up", "warm_up"]

log = logging.getLogger(__name__)

# Few faces (unwrap and simplify are per face), the default texture size: FlexGEMM's grid_sample
# kernel is chosen per texel count, so the default request's is the one to compile.
WARMUP_FACES = 20_000


def start_export_warm_up(compiling: Any = None) -> Future:
    """Export a small sphere (``pipeline.warm.warmup_mesh``) on a thread, after ``compiling``'s child
    that compiles our kernels (``kernels.OWN``) has reported; the future answers the export's seconds and phases.
    The export's modules (trimesh, networkx, ...) are imported on that thread too, beside the load."""
    return on_a_thread("export-warm-up", _export_warm_up, compiling)


def warm_up(generator: Any, *, compiling: Any = None, export: Future | None = None) -> dict[str, Any]:
    """Parts 2 to 4 of the module docstring for a ``TrellisGenerator``, after waiting for 1; what each took.

    ``compiling`` is ``trellis_mv.pipeline.kernels.Compiling`` (None: no child processes were
    started); ``export`` the future of :func:`start_export_warm_up` (None: the export is warmed here).
    """
    from .pipeline.kernels import cache_path, conv_probes
    from .pipeline.warm import warm_decoders, warm_stages, warmup_view

    started = time.perf_counter()
    report: dict[str, Any] = {}
    report["stages"], latents = warm_stages(generator, warmup_view())
    log.info("warm-up stages: %s", report["stages"])
    if compiling is not None:
        report["kernels"] = compiling.wait(*compiling.shards())
        log.info("warm-up kernels: %s", report["kernels"])
    import torch

    path = cache_path()
    tuned = bool(conv_probes(json.loads(path.read_text()) if path.is_file() else {}, torch.cuda.get_device_name()))
    if not tuned:
        log.warning("warm-up: no FlexGEMM entries for %s in %s: tuning the decoders' typical sizes now; "
                    "builder/autotune_flexgemm.py tune on this GPU makes entries to ship", torch.cuda.get_device_name(),
                    path)
    with RANDOM_OR_CAPTURE:  # the export's warm-up may be capturing a CUDA graph on its thread
        report["decoders"] = warm_decoders(generator, latents, tune=not tuned)
    log.info("warm-up decoders: %s", report["decoders"])
    report["export_s"] = (export.result() if export is not None else _export_warm_up())[0]
    log.info("warm-up export: %.2f s", report["export_s"])
    report["seconds"] = round(time.perf_counter() - started, 2)
    log.info("warm-up done: %.1f s after the load", report["seconds"])
    return report


def _export_warm_up(compiling: Any = None) -> tuple[float, dict[str, float]]:
    """The warm-up's export and coverage launch, after ``compiling``'s child (if any); its seconds and
    the export's phases."""
    from .export import GlbOptions, export_glb  # trimesh, networkx, ... imported while the child compiles
    from .pipeline.kernels import OWN
    from .pipeline.warm import warmup_mesh
    from .raster.coverage_kernel import warm_up as warm_coverage

    if compiling is not None and OWN in compiling.processes:
        own = compiling.wait(OWN)
        log.info("warm-up: our kernels compiled in a child process (%s)", own)
    start = time.perf_counter()
    glb = export_glb(warmup_mesh(), GlbOptions(decimation_target=WARMUP_FACES))
    warm_coverage()  # the previews' silhouettes (views_fit), which the export does not draw
    seconds = round(time.perf_counter() - start, 2)
    log.info("warm-up export of a sphere: %d faces, %d bytes, %.1f s", glb.faces, len(glb.data), seconds)
    return seconds, glb.timings


def main(argv: list[str] | None = None) -> None:
    """``python -m trellis_mv.warmup --compile``: the export's warm-up in a child process (``kernels.OWN``),
    to fill Triton's cache; reports one JSON line (``kernels.report``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--compile", action="store_true", required=True, help="export a small sphere once")
    parser.parse_args(argv)
    from .pipeline.kernels import report, since_spawn

    start, startup_s = time.perf_counter(), since_spawn(time.time())
    import torch

    if not torch.cuda.is_available():
        report({"compiled": 0, "skipped": "no CUDA GPU"})
        return
    export_s, phases = _export_warm_up()
    report({"export_s": export_s, "seconds": round(time.perf_counter() - start, 2), "startup_s": startup_s,
            "phases": phases})


if __name__ == "__main__":
    main()
