"""The one timer of a job's steps, phases and stages: ``with timed(timings, "export"): ...``.

``run_job``'s steps, the export's phases, the preview's phases and the generator's stages all time
themselves with it, so their numbers mean the same thing: wall seconds of the block, with the CUDA
work queued before the block waited for first and the work the block queued waited for at its end
(the GPU runs asynchronously; without this a phase would be billed for its predecessor's kernels).
A name timed twice adds up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .gpu_random import synchronize

__all__ = ["timed"]


@contextmanager
def timed(timings: dict[str, float], name: str, *, digits: int = 3) -> Iterator[None]:
    """Add the block's seconds to ``timings[name]``, rounded to ``digits`` decimals."""
    _synchronize()
    start = time.perf_counter()
    yield
    _synchronize()
    timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, digits)


def _synchronize() -> None:
    if torch.cuda.is_initialized():  # at start, blocks are timed beside the export's graph captures
        synchronize()
