"""A job's progress updates on their way to RunPod: thinned out, and delivered one at a time in order.

``run_job`` reports every step start and every denoising step (``worker.Progress``). On RunPod each
update is an HTTP call to the job API; runpod's own ``progress_update`` starts a thread and a
connection per update, so updates sent a few milliseconds apart can arrive in any order, and the
last ones after the job's result. Here ``throttled`` passes every step start but at most one
denoising step a second, and ``OrderedSender`` posts them from one thread, in order, and is closed
(waiting a bounded time for the last update) before the job's answer is returned.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from typing import Any, Callable

__all__ = ["OrderedSender", "throttled"]

log = logging.getLogger(__name__)

Update = dict[str, Any]
_CLOSE = object()


def throttled(send: Callable[[Update], None], *, every_s: float = 1.0,
              clock: Callable[[], float] = time.monotonic) -> Callable[[Update], None]:
    """Pass on every stage start but at most one denoising step per ``every_s`` seconds."""
    last_step = -math.inf

    def progress(update: Update) -> None:
        nonlocal last_step
        if "step" in update:
            if clock() - last_step < every_s:
                return
            last_step = clock()
        send(update)

    return progress


class OrderedSender:
    """Calls ``post(update)`` for each update on one thread of its own, in the order given.

    Calling the sender only queues the update, so a slow job API never slows the job; ``close``
    waits up to ``timeout_s`` for the queue to drain. ``post`` handles its own network errors
    (runpod's ``send_result`` logs and drops a failed post).
    """

    def __init__(self, post: Callable[[Update], None]):
        self._post = post
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def __call__(self, update: Update) -> None:
        """Queue one update."""
        self._queue.put(update)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (waiting at most ``timeout_s``), then stop the thread."""
        self._queue.put(_CLOSE)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("progress updates still unsent after %.0f s; the job's answer goes first", timeout_s)

    def _run(self) -> None:
        while (update := self._queue.get()) is not _CLOSE:
            self._post(update)
