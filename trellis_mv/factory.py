"""Which generator a process uses, chosen once at start: ``handler.py`` and the local command share it.

``TRELLIS_MV_GENERATOR="module:callable"`` (a testing and extension hook: the callable gets the
``Settings`` and returns a ``Generator``) wins; else TRELLIS.2 when CUDA is available, after the
start-up checks; else :class:`CudaRequired`, a stand-in that answers every valid job that a CUDA GPU
is needed. trellis2 is imported only on the CUDA branch.

TRELLIS.2's start, in order, each step overlapped with what it does not need: the head start
(``trellis_mv.headstart``: the weights read into memory and the decoders' kernels compiling,
begun by ``handler.py`` before its imports); the checks; the export's warm-up on a thread
while the models load; then the rest of the warm-up (``trellis_mv.warmup``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

from .config import Settings
from .errors import StartupError
from .generator import GenerationRequest, GenerationResult, Generator, ProgressFn
from .headstart import HeadStart, begin
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


def build_generator(settings: Settings, head: HeadStart | None = None, *,
                    before_load: Callable[[], object] | None = None) -> Generator:
    """The configured generator, TRELLIS.2 on CUDA (checked, loaded and warmed up), or ``CudaRequired``.

    ``head`` is what ``handler.py`` began before its imports; without it, it begins here.
    ``before_load`` is called once TRELLIS.2's start-up checks have passed, right before its load
    (``handler.py``: the wait for the bucket's check, which ran beside the imports); what it raises
    stops the start as a failed check does. Logs one line saying which loaded components forbid
    commercial use, or that none does.
    """
    generator = _build(settings, head, before_load or (lambda: None))
    log.info("%s", startup_line(generator.components))
    return generator


def _build(settings: Settings, head: HeadStart | None, before_load: Callable[[], object]) -> Generator:
    if settings.generator:
        generator = _load_factory(settings.generator)(settings)
        if not isinstance(getattr(generator, "components", None), tuple):
            raise StartupError(f"TRELLIS_MV_GENERATOR: {settings.generator} returned a generator without a "
                               "'components' tuple (the weights it loaded; () for none): see trellis_mv.generator")
        return generator
    head = head if head is not None else begin(settings)
    import torch

    if not torch.cuda.is_available():
        head.stop()
        return CudaRequired("torch.cuda.is_available() is False")
    try:
        # Before the load: a missing extension or weight file is named at once, not after minutes of reading.
        run_checks(settings)
        from .pipeline import load_generator
        from .warmup import start_export_warm_up, warm_up

        before_load()
        export = start_export_warm_up(head.compiling)
        generator = load_generator(settings, wait_read=head.wait_read, wait_imported=head.wait_imported)
        warm_up(generator, compiling=head.compiling, export=export)
    except BaseException:  # a worker that does not start leaves no compiling children behind
        head.stop()
        raise
    return generator


def _load_factory(spec: str) -> Callable[[Settings], Generator]:
    module_name, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise StartupError(f"TRELLIS_MV_GENERATOR: cannot load {spec!r}: {error}") from error
