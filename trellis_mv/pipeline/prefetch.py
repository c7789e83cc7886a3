"""Reading the weight files ahead, in parallel, while the models are being built.

``trellis2.models.from_pretrained`` reads each checkpoint with safetensors' ``load_file``: one
file after another, each through page faults on a memory map, one request in flight. NVMe and
network disks give their bandwidth only to many requests at once, and the reads wait on model
construction in between. :func:`read_ahead` starts threads that read every weight file in
chunks, in load order, into the page cache, and returns at once; ``load_pipeline`` then finds its
bytes in memory. Reads that fail are left to the load itself, which names the file.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..weights import Weights

__all__ = ["read_ahead", "weight_files"]

_CHUNK = 32 * 2**20
_BUFFERS = threading.local()  # one scratch buffer per reading thread


def weight_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    """The ``*.safetensors`` files a pipeline.json's ``args`` loads from ``weights``, in load order, those that exist."""
    files = [weights.path(ref) for ref in args["models"].values()]
    files = [path.with_name(path.name + ".safetensors") for path in files]
    encoder = weights.path(args["image_cond_model"]["args"]["model_name"])
    files += sorted(encoder.glob("*.safetensors")) + sorted(weights.background.path.glob("*.safetensors"))
    return [path for path in files if path.is_file()]


def read_ahead(paths: Iterable[Path], *, workers: int = 8, chunk: int = _CHUNK) -> list[Future]:
    """Read ``paths`` in ``chunk``-sized pieces on ``workers`` threads; returns without waiting.

    The futures answer the bytes each piece read (tests wait on them; the loader does not).
    """
    pieces = [(path, offset) for path in paths for offset in range(0, path.stat().st_size, chunk)]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-ahead")
    futures = [pool.submit(_read, path, offset, chunk) for path, offset in pieces]
    pool.shutdown(wait=False)  # the queued reads still run; the threads end with the last one
    return futures


def _read(path: Path, offset: int, length: int) -> int:
    buffer = getattr(_BUFFERS, "buffer", None)
    if buffer is None or len(buffer) != length:
        buffer = _BUFFERS.buffer = bytearray(length)
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, [buffer], offset)
    finally:
        os.close(fd)
