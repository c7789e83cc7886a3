"""One lock for the GPU work that must not overlap a CUDA graph capture on another thread.

The worker captures graphs in its export (``export.lscm``), and at start it exports a small mesh
on one thread (``trellis_mv.warmup``) while others build the models on the GPU (random initial
values, then the weights), sample the warm-up's noise and time their steps. Two kinds of call fail
while another thread captures, whatever the capture mode:

- random numbers: torch registers the GPU's default generator with every capture it makes, and a
  random-number kernel launched by any other thread fails ("Offset increment outside graph capture
  encountered unexpectedly"); a start failed that way on the H200;
- device-wide waits (``torch.cuda.synchronize``): they would wait on the capturing stream, so CUDA
  refuses them ("operation not permitted when stream is capturing") and invalidates the capture; a
  start failed that way on the H200 (the loader's last wait, 2026-12-05).

Each side holds :data:`RANDOM_OR_CAPTURE` for that work, and :func:`synchronize` is the wait to
use; jobs run one at a time and do not overlap the start.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["RANDOM_OR_CAPTURE", "synchronize"]

RANDOM_OR_CAPTURE = threading.RLock()


def synchronize() -> None:
    """``torch.cuda.synchronize()``, never while another thread captures a CUDA graph."""
    with RANDOM_OR_CAPTURE:
        torch.cuda.synchronize()
