"""One lock for CUDA random numbers and CUDA graph captures, which must not overlap across threads.

torch registers the GPU's default random generator with every CUDA graph it captures: while a
capture lasts, a random-number kernel launched by any other thread fails ("Offset increment outside
graph capture encountered unexpectedly"). The worker captures graphs in its export
(``export.lscm``), and at start it exports a small mesh on one thread (``trellis_mv.warmup``)
while others build the models on the GPU (random initial values, then the weights) and sample the
warm-up's noise: on the H200 a start failed that way. Each side holds :data:`RANDOM_OR_CAPTURE`
for that work; jobs run one at a time and do not overlap the start.
"""

from __future__ import annotations

import threading

__all__ = ["RANDOM_OR_CAPTURE"]

RANDOM_OR_CAPTURE = threading.RLock()
