"""Reading ahead, in parallel, what a fresh worker's start will read: its imports' files, then its weights.

``trellis2.models.from_pretrained`` reads each checkpoint with safetensors' ``load_file``: one
file after another, each through page faults on a memory map, one request in flight. NVMe and
network disks give their bandwidth only to many requests at once, and the reads wait on model
construction in between. :func:`read_ahead` starts threads that read every weight file in
chunks, in load order, into the page cache, and returns at once; ``load_pipeline`` then finds its
bytes in memory. Reads that fail are left to the load itself, which names the file.

The imports before the load read thousands of small files (compiled modules, extension modules),
one at a time: on the H200 test machine, behind the weights' reads, they took 25 s of a 36 s start
(py-spy: the main thread waiting in ``FileLoader.get_data`` and ``stat``). :func:`import_files`
lists those of the packages the start imports and :func:`read_imports_ahead` reads them, many at
once, beside the weights, whose pieces in flight are now few and small (``WORKERS`` × ``CHUNK``),
so that a read the start waits for is not queued behind a quarter of a gigabyte.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..weights import Weights

__all__ = ["CHUNK", "START_PACKAGES", "WORKERS", "import_files", "read_ahead", "read_imports_ahead", "weight_files"]

# 32 MiB in flight kept the 16 GB read at 2.0-2.2 GB/s there (one 16 MiB read at a time: 2.0 GB/s).
WORKERS, CHUNK = 4, 8 * 2**20
# What a TRELLIS.2 worker's start imports (handler, checks, load, warm-up); a package not installed is skipped.
START_PACKAGES = (
    "torch", "transformers", "trellis2", "triton", "numpy", "scipy", "sympy", "mpmath", "networkx", "trimesh",
    "PIL", "torchvision", "safetensors", "tokenizers", "huggingface_hub", "boto3", "botocore", "s3transfer",
    "jmespath", "dateutil", "urllib3", "requests", "pydantic", "pydantic_core", "runpod", "aiohttp", "yarl",
    "multidict", "flex_gemm", "cumesh", "o_voxel", "flash_attn", "xformers", "cv2", "einops", "easydict",
    "DracoPy", "xatlas", "regex", "yaml", "tqdm", "fsspec", "filelock", "jinja2", "packaging", "nvidia", "trellis_mv",
)
# Larger shared libraries (libtorch_cuda, cuBLAS: mostly GPU code that CUDA loads lazily) are left
# to their page faults: read whole, they would cost more than the parts the start touches.
_MAX_IMPORT_FILE = 64 * 2**20
_BUFFERS = threading.local()  # one scratch buffer per reading thread


def import_files(packages: Iterable[str] = START_PACKAGES) -> list[Path]:
    """The compiled modules (``__pycache__/*.<tag>.pyc``) and extension modules and libraries (``*.so*``,
    up to 64 MiB) of ``packages``, found without importing them; packages not installed are skipped."""
    tag = sys.implementation.cache_tag
    files: list[Path] = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            for folder, _dirs, names in os.walk(root):
                in_cache = os.path.basename(folder) == "__pycache__"
                for file in names:
                    if (in_cache and file.endswith(f".{tag}.pyc")) or ".so" in file:
                        path = Path(folder, file)
                        try:
                            if path.stat().st_size <= _MAX_IMPORT_FILE:
                                files.append(path)
                        except OSError:
                            continue
    return files


def read_imports_ahead(packages: Iterable[str] = START_PACKAGES, *, workers: int = 8) -> Future:
    """List :func:`import_files` and read them on ``workers`` threads, all off this thread; returns at once.

    The future answers the bytes read. Small files: many reads in flight cost the start nothing.
    """
    def list_and_read() -> int:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-imports") as pool:
            return sum(pool.map(_read_whole, import_files(packages)))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="list-imports")
    future = pool.submit(list_and_read)
    pool.shutdown(wait=False)
    return future


def weight_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    """The ``*.safetensors`` files a pipeline.json's ``args`` loads from ``weights``, in load order, those that exist."""
    files = [weights.path(ref) for ref in args["models"].values()]
    files = [path.with_name(path.name + ".safetensors") for path in files]
    encoder = weights.path(args["image_cond_model"]["args"]["model_name"])
    files += sorted(encoder.glob("*.safetensors")) + sorted(weights.background.path.glob("*.safetensors"))
    return [path for path in files if path.is_file()]


def read_ahead(paths: Iterable[Path], *, workers: int = WORKERS, chunk: int = CHUNK) -> list[Future]:
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


def _read_whole(path: Path) -> int:
    try:
        with open(path, "rb", buffering=0) as file:
            return len(file.read())
    except OSError:
        return 0
