"""Warm-up at start: a small job through every stage and the export before the first real job.

A fresh process pays, on its first job, for whatever its GPU has not seen yet: FlexGEMM
autotuning the decoders' sparse convolutions for every new shape bucket (about 90 s of a
109 s first 1024_cascade job on an H200 with no entries for it), kernels compiled on their first
launch, and the first use of the background remover, the bake's Triton kernels and CuMesh. Shipping FlexGEMM
entries (``builder/flex_gemm_autotune/``) is not enough: on the H200 with ours, a fresh process's
first default job still took 34.4 s more than its second, nearly all of it in the shape stage,
which FlexGEMM does not run. So the worker always runs :data:`WARMUP_TYPES` once at start, each one
view through background removal, the three stages, decoding and the export (41 s on the H200 with
our entries, 124 s without); after it the first job took 0.15 s more than the second
(benchmarks/first_job.py, BENCHMARKS.md). Its time is in the start-up log, not in a user's answer.
"""

from __future__ import annotations

import logging
import time
import numpy as np
from PIL import Image

from .export import GlbOptions, export_glb
from .generator import GenerationRequest, Generator

__all__ = ["WARMUP_GLB", "WARMUP_TYPES", "warm_up", "warmup_view"]

log = logging.getLogger(__name__)

# The default pipeline first; 512 decodes at other shapes (and with another texture flow).
WARMUP_TYPES = ("1024_cascade", "512")
# Small output, every export phase: the kernels and libraries are the same at any size.
WARMUP_GLB = GlbOptions(decimation_target=20_000, texture_size=512)


def warm_up(generator: Generator) -> dict[str, float]:
    """Run one view of each of :data:`WARMUP_TYPES` through ``generate`` and the export; seconds per type.

    An error propagates: a worker that cannot finish this job would fail every job, so it stops at start.
    """
    seconds: dict[str, float] = {}
    log.info("warm-up: %s before the first job", ", ".join(WARMUP_TYPES))
    for kind in WARMUP_TYPES:
        start = time.perf_counter()
        request = GenerationRequest(images=(warmup_view(),), seed=0, pipeline_type=kind)
        glb = export_glb(generator.generate(request).mesh, WARMUP_GLB)
        seconds[kind] = round(time.perf_counter() - start, 2)
        log.info("warm-up %s: %.1f s, %d faces, %d bytes", kind, seconds[kind], glb.faces, len(glb.data))
    log.info("warm-up done: %.1f s", sum(seconds.values()))
    return seconds


def warmup_view(size: int = 512) -> Image.Image:
    """A photo stand-in without alpha (so background removal runs): a shaded disc on a light background."""
    axis = np.linspace(-1.0, 1.0, size)
    xs, ys = np.meshgrid(axis, axis)
    radius = np.hypot(xs, ys)
    shade = np.clip(1.0 - 0.5 * (xs + ys + 1.0) / 2.0, 0.3, 1.0)
    disc = radius < 0.6
    rgb = np.full((size, size, 3), 235.0)
    rgb[disc] = np.array([190.0, 110.0, 50.0]) * shade[disc][:, None]
    return Image.fromarray(rgb.astype(np.uint8), "RGB")
