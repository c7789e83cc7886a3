"""What a TRELLIS.2 worker starts before it imports torch: its weights into memory, its GPU kernels compiling.

A fresh worker's start is bound by reading its weights (16.4 GB: 7.3 s at the 2.24 GB/s the H200
test machine's disk reads one file after another) and by compiling the decoders' Triton kernels
(seconds each, on the CPU). Neither needs torch in this process, so ``handler.py`` calls
:func:`begin` before it imports anything heavy, and both run while the interpreter imports runpod,
torch and trellis2 (7.5 s there before the CUDA check) and the models are built:

- every weight file the loader reads is read once, one after another on a thread of its own
  (``pipeline.prefetch``), so that the load finds its bytes in the page cache (it waits for each
  file's read, :meth:`HeadStart.wait_read`), and where a GPU is visible, beside them, the files of
  the packages the start imports, many at once;
- where a GPU is visible (``/dev/nvidia0``, ``/proc/driver/nvidia/gpus/``), child processes compile the decoders' kernels
  (``pipeline.kernels``): half the CPUs this process may use, 1 to 8 of them, and one more our own
  (the export's);
- where a GPU is visible, transformers and the encoders' classes are imported on a thread of their
  own (the loader's encoders wait for it, :meth:`HeadStart.wait_imported`). Imported by the loader
  once the load had begun, the import took 9.4 s of the H200's start (py-spy, 2026-12-05: tens of
  thousands of ``stat`` calls queued behind the checkpoints' reads), and the encoders, their
  warm-up and then the flows' warm-up waited for it: the load ended 3.8 to 4.9 s after the last
  checkpoint's fill. Here it runs while the disk reads the smaller files of the imports.

Nothing here raises: weights that cannot be found are left to the start-up checks, which name them.
With ``TRELLIS_MV_GENERATOR`` set (a stand-in or test generator) there is nothing to start.
"""

from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from pathlib import Path

from .config import Settings
from .errors import StartupError
from .pipeline.kernels import Compiling, start_compiling
from .pipeline.prefetch import page_cache_files, read_ahead, read_imports_ahead
from .threads import on_a_thread
from .weights import find_weights

__all__ = ["ENCODER_IMPORTS", "HeadStart", "begin", "compile_processes", "gpu_visible", "import_ahead"]

log = logging.getLogger(__name__)

# What the loader's encoders import (``pipeline.loading``): the package, and the classes that import
# their lazy submodules. transformers' lazy module is not safe to resolve from two threads at once, so
# the encoders wait for this import's end. torch, which transformers imports, is imported by this
# thread and the main one at once: Python's per-module import locks make the second wait for the first.
ENCODER_IMPORTS = ("transformers", ("AutoModelForImageSegmentation", "DINOv3ViTModel"))


@dataclass
class HeadStart:
    """What :func:`begin` started: the read-ahead's pieces per file and its bytes, and the kernel compiles (or None)."""

    reading: dict[Path, list[Future]] = field(default_factory=dict)
    bytes: int = 0
    compiling: Compiling | None = None
    importing: Future | None = None

    def wait_read(self, path: Path) -> None:
        """Return once the read-ahead has read ``path``, or every file it reads inside ``path`` (a folder);
        at once for one it does not read. A failed read is left to the caller's own, which names the file."""
        wait([piece for file, pieces in self.reading.items() if path == file or path in file.parents for piece in pieces])

    def wait_imported(self) -> None:
        """Return once the encoders' imports begun ahead have ended, at once where none was begun. A
        failed import is left to the caller's own, which raises it where the start reports it."""
        if self.importing is not None:
            wait([self.importing])

    def stop(self) -> None:
        """End the kernel compiles (the worker will not start); the reads end by themselves."""
        if self.compiling is not None:
            self.compiling.kill()


def begin(settings: Settings) -> HeadStart:
    """Start reading TRELLIS.2's weight files and, on a GPU machine, compiling its kernels; returns at once."""
    if settings.generator:
        return HeadStart()
    head = HeadStart()
    try:
        weights = find_weights(settings)
        args = json.loads((weights.model_dir / "pipeline.json").read_text())["args"]
        files = page_cache_files(args, weights)
    except (StartupError, OSError, ValueError, KeyError, TypeError):
        files = []
    # Both at once; their threads end by themselves. The weights' read is what the load waits for: on
    # the H200 machine, with the weights waiting up to 5 s for the imports' files, the start took 29.5 s
    # (read bound 20.6 s); read side by side, 24.7 s (bound 21.9 s), the imports 1.3 s slower and the
    # load 6.3 s quicker (2026-12-04, one call).
    begun, gpu = time.monotonic(), gpu_visible()
    imports = read_imports_ahead() if gpu else None
    if imports is not None:
        imports.add_done_callback(lambda done: _log_read("the imports' files", done.result(), begun))
    if files:
        head.bytes = sum(path.stat().st_size for path in files)  # before the reads: their last one logs it
        head.reading = read_ahead(files)
        _when_all_done([piece for pieces in head.reading.values() for piece in pieces],
                       lambda: _log_read("the weights", head.bytes, begun))
    if gpu:
        head.compiling = start_compiling(compile_processes())
        head.importing = import_ahead(*ENCODER_IMPORTS)
    log.info("head start: reading %d weight files (%.2f GB) ahead; compiling GPU kernels in %d processes",
             len(files), head.bytes / 1e9, len(head.compiling.processes) if head.compiling else 0)
    return head


def import_ahead(module: str, names: tuple[str, ...]) -> Future:
    """Import ``module`` and look its ``names`` up (a lazy module imports their submodules then) on a
    thread of its own; returns at once. The future ends with the import, raising what it raised."""
    def load() -> None:
        imported = importlib.import_module(module)
        for name in names:
            getattr(imported, name)

    return on_a_thread("import-ahead", load)


def _log_read(what: str, size: int, begun: float) -> None:
    """When a read-ahead ended (benchmarks/cold_start.py marks it: the reads against the imports and the load)."""
    log.info("head start: %s read, %.2f GB in %.1f s", what, size / 1e9, time.monotonic() - begun)


def _when_all_done(futures: list[Future], then: Callable[[], None]) -> None:
    """Call ``then`` on the thread that ends the last of ``futures``."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_future: Future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)


def gpu_visible(*patterns: str) -> bool:
    """Whether an NVIDIA GPU is there, without CUDA: its device node (what the container runtime mounts) or its driver entry."""
    return any(glob.glob(pattern) for pattern in patterns or ("/dev/nvidia[0-9]*", "/proc/driver/nvidia/gpus/*"))


def compile_processes(cpus: int | None = None) -> int:
    """How many kernel-compiling children: half of ``cpus`` (default: those this process may use), 1 to 8.

    A compile keeps one CPU busy for seconds; the other half imports, reads and loads meanwhile.
    Each child holds a CUDA context (about 0.5 GB of GPU memory) until its share is compiled.
    """
    cpus = len(os.sched_getaffinity(0)) if cpus is None else cpus
    return max(1, min(8, cpus // 2))
