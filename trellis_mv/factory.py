"""Which generator a process uses, chosen once at start: ``handler.py`` and the local command share it.

``TRELLIS_MV_GENERATOR="module:callable"`` (a testing and extension hook: the callable gets the
``Settings`` and returns a ``Generator``) wins; else TRELLIS.2 when CUDA is available, after the
start-up checks; else :class:`CudaRequired`, a stand-in that answers every valid job that a CUDA GPU
is needed. trellis2 is imported only on the CUDA branch.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

from .config import Settings
from .errors import StartupError
from .generator import GenerationRequest, GenerationResult, Generator, ProgressFn
from .licences import startup_line
from .startup import run_checks

__all__ = ["STANDIN", "CudaRequired", "build_generator"]

log = logging.getLogger(__name__)

# The packaged CPU stand-in (a textured sphere, not a reconstruction): try the worker without a GPU.
STANDIN = "trellis_mv.standin:create"


class CudaRequired:
    """The generator of a worker without a GPU: validation still answers, generation says what is missing."""

    components: tuple[str, ...] = ()

    def __init__(self, reason: str):
        self.reason = reason

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Refuse: there is nothing to generate with."""
        raise StartupError(
            f"this worker needs a CUDA GPU: {self.reason}; run it on a GPU endpoint, or set "
            f"TRELLIS_MV_GENERATOR={STANDIN} to try it with a stand-in shape"
        )


def build_generator(settings: Settings) -> Generator:
    """The configured generator, TRELLIS.2 on CUDA (after the start-up checks), or ``CudaRequired``.

    Logs one line saying which loaded components forbid commercial use, or that none does.
    """
    generator = _build(settings)
    log.info("%s", startup_line(generator.components))
    return generator


def _build(settings: Settings) -> Generator:
    if settings.generator:
        generator = _load_factory(settings.generator)(settings)
        if not isinstance(getattr(generator, "components", None), tuple):
            raise StartupError(f"TRELLIS_MV_GENERATOR: {settings.generator} returned a generator without a "
                               "'components' tuple (the weights it loaded; () for none): see trellis_mv.generator")
        return generator
    import torch

    if not torch.cuda.is_available():
        return CudaRequired("torch.cuda.is_available() is False")
    # Before the load: a missing extension or weight file is named at once, not after minutes of reading.
    run_checks(settings)
    from .pipeline import load_generator
    from .warmup import warm_up

    generator = load_generator(settings)
    warm_up(generator)
    return generator


def _load_factory(spec: str) -> Callable[[Settings], Generator]:
    module_name, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise StartupError(f"TRELLIS_MV_GENERATOR: cannot load {spec!r}: {error}") from error
