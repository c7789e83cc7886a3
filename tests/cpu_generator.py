"""Generators for the worker's GPU seam in tests: the packaged stand-in, one that fails on purpose,
and one that reports the weights a TRELLIS.2 worker loads.

``CpuGenerator`` is ``trellis_mv.standin.StandInGenerator`` (the generator a user tries the worker
with on a laptop), under the name the tests use. ``create_faulty`` is a ``TRELLIS_MV_GENERATOR``
factory for subprocess tests (``cpu_generator:create_faulty`` with ``tests/`` on ``PYTHONPATH``): the
stand-in, except that a job with seed ``OOM_SEED`` fails the way a GPU out of memory does.
``create_with_remover`` is the stand-in declaring TRELLIS.2's weights and the configured background
remover as ``TrellisGenerator`` does, and reporting the remover as run by a job whose views go through it (``TRELLIS_MV_BACKGROUND_MODEL`` as a hub id).
"""

from __future__ import annotations

import torch

from trellis_mv import revisions
from trellis_mv.config import Settings
from trellis_mv.generator import GenerationRequest, GenerationResult, ProgressFn
from trellis_mv.pipeline.preprocess import removes_background
from trellis_mv.standin import NOT_DONE, StandInGenerator

CpuGenerator = StandInGenerator
OOM_SEED = 4242


class Faulty:
    """The stand-in, raising ``torch.cuda.OutOfMemoryError`` for a job whose seed is ``OOM_SEED``."""

    components: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.inner = StandInGenerator()

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        if request.seed == OOM_SEED:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner.generate(request, progress)


def create_faulty(settings: Settings) -> Faulty:
    """``TRELLIS_MV_GENERATOR=cpu_generator:create_faulty``."""
    return Faulty()


class WithRemover:
    """The stand-in with TRELLIS.2's components and ``background`` as its remover (not run: reported), playing
    TRELLIS.2: without the stand-in's warning."""

    def __init__(self, background: str) -> None:
        self.inner = StandInGenerator()
        self.background = background
        self.components = (revisions.TRELLIS2, *revisions.NAMED_BY_PIPELINE, background)

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        result = self.inner.generate(request, progress)
        removed = any(removes_background(image, request.remove_background) for image in request.images)
        result.components = tuple(name for name in self.components if removed or name != self.background)
        result.warnings = [warning for warning in result.warnings if not warning.startswith(NOT_DONE)]
        return result


def create_with_remover(settings: Settings) -> WithRemover:
    """``TRELLIS_MV_GENERATOR=cpu_generator:create_with_remover``: the remover is ``TRELLIS_MV_BACKGROUND_MODEL``."""
    return WithRemover(settings.background_model)
