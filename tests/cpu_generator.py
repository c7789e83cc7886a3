"""Generators for the worker's GPU seam in tests: the packaged stand-in, and one that fails on purpose.

``CpuGenerator`` is ``trellis_mv.standin.StandInGenerator`` (the generator a user tries the worker
with on a laptop), under the name the tests use. ``create_faulty`` is a ``TRELLIS_MV_GENERATOR``
factory for subprocess tests (``cpu_generator:create_faulty`` with ``tests/`` on ``PYTHONPATH``): the
stand-in, except that a job with seed ``OOM_SEED`` fails the way a GPU out of memory does.
"""

from __future__ import annotations

import torch

from trellis_mv.config import Settings
from trellis_mv.generator import GenerationRequest, GenerationResult, ProgressFn
from trellis_mv.standin import StandInGenerator

CpuGenerator = StandInGenerator
OOM_SEED = 4242


class Faulty:
    """The stand-in, raising ``torch.cuda.OutOfMemoryError`` for a job whose seed is ``OOM_SEED``."""

    def __init__(self) -> None:
        self.inner = StandInGenerator()

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        if request.seed == OOM_SEED:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner.generate(request, progress)


def create_faulty(settings: Settings) -> Faulty:
    """``TRELLIS_MV_GENERATOR=cpu_generator:create_faulty``."""
    return Faulty()
