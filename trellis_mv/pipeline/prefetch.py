"""Reading ahead what a fresh worker's start reads: its imports' files and its weights, side by side.

``trellis2.models.from_pretrained`` reads each checkpoint with safetensors' ``load_file``: one
file after another, each through page faults on a memory map, and the reads wait on model
construction in between. :func:`read_ahead` starts a thread that reads every weight file in
chunks, in the order the load needs them, into the page cache, from before torch is imported, and
returns at once; ``load_pipeline`` waits for each file's read before it reads the file. Page
faults on a memory map read a cold disk in small pieces, and beside the read-ahead they slow both:
on a Firecracker microVM (the H200 test machine is one), two 2.6 GB checkpoints read ahead and
loaded as the loader does went at 0.84-1.62 GB/s with the load not waiting and 1.37-2.41 GB/s with
it waiting for each file, waiting faster in six rounds of six. Reads that fail are left to the
load itself, which names the file.

The imports before the load read thousands of small files (compiled modules, extension modules),
one at a time: on the H200 test machine, behind the weights' reads, they took 25 s of a 36 s start
(py-spy: the main thread waiting in ``FileLoader.get_data`` and ``stat``). :func:`import_files`
lists those of the distributions the start imports and :func:`read_imports_ahead` reads them, many
at once, beside the weights, whose pieces in flight are few (``WORKERS`` × ``CHUNK``), so that a
read the start waits for is not queued behind a quarter of a gigabyte.
"""

from __future__ import annotations

import csv
import importlib.util
import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ..threads import on_a_thread
from ..weights import Weights, checkpoint

__all__ = ["ALIGN", "CHUNK", "START_DISTRIBUTIONS", "WORKERS", "can_read_direct", "import_files", "page_cache_files",
           "read_ahead", "read_imports_ahead", "weight_files"]

# One file after another, 16 MiB per read (the kernel's own read-ahead keeps the disk busy): on the H200
# machine every comparison has favoured it over pieces on several threads, 1.83 against 1.52 GB/s
# (4 threads of 8 MiB), 2.29 against 2.17 (256 MiB), and 1.55 against 1.23 on 2026-12-04, when the start's
# four threads read the weights at 0.93 GB/s beside the imports and the load.
WORKERS, CHUNK = 1, 16 * 2**20
# O_DIRECT wants offsets, lengths and buffers aligned to the device's logical block; 4 KiB covers
# every block size in use.
ALIGN = 4096
# The distributions a TRELLIS.2 worker's start imports from (handler, checks, load, warm-up), as
# pip names them; one not installed is skipped. runpod's import brings its command line's dependencies
# (paramiko, invoke, tomlkit, cryptography, ...), torch's setuptools: on the H200 (2026-12-05, -X
# importtime) runpod's took 3 s of the import-runpod thread's cold-disk imports before they were listed
# here. tests/test_device_tools.py holds the list to what the start imports of the image's lock.
START_DISTRIBUTIONS = (
    "torch", "transformers", "trellis2", "triton", "numpy", "networkx", "trimesh", "pillow", "torchvision",
    "safetensors", "tokenizers", "huggingface-hub", "boto3", "botocore", "s3transfer", "jmespath",
    "python-dateutil", "urllib3", "requests", "certifi", "charset-normalizer", "idna", "pydantic", "pydantic-core",
    "annotated-types", "typing-inspection",
    "runpod", "aiohttp", "yarl", "multidict", "attrs", "propcache", "frozenlist", "aiosignal", "aiohappyeyeballs",
    "aiodns", "pycares", "brotli", "backports-zstd", "aiohttp-retry", "backoff", "py-cpuinfo", "tqdm-loggable",
    "paramiko", "invoke", "cryptography", "cffi", "bcrypt", "pynacl", "tomlkit", "tomli", "colorama", "six",
    "psutil", "opentelemetry-api", "setuptools",
    "flex_gemm", "cumesh", "o_voxel", "flash_attn", "xformers",
    "opencv-python-headless", "einops", "easydict", "dracopy", "xatlas", "regex", "pyyaml", "tqdm", "fsspec",
    "filelock", "jinja2", "markupsafe", "packaging", "sympy", "mpmath", "kornia", "timm", "typing-extensions",
    "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvrtc-cu12", "nvidia-nvjitlink-cu12", "trellis-mv",
)
# Larger shared libraries (libtorch_cuda, cuBLAS: mostly GPU code that CUDA loads lazily) are left
# to their page faults: read whole, they would cost more than the parts the start touches.
_MAX_IMPORT_FILE = 64 * 2**20
_BUFFERS = threading.local()  # one scratch buffer per reading thread


def import_files(distributions: Iterable[str] = START_DISTRIBUTIONS) -> list[Path]:
    """The compiled modules (``__pycache__/*.pyc`` of this Python) and shared libraries (``*.so*`` up to
    64 MiB) that ``distributions`` installed, from their RECORD (no folder walked, no file looked at,
    nothing imported); those not installed are skipped.

    A module's compiled form is what an import reads (its source is only looked at), whether or not the
    RECORD lists it; transformers' sources are read too (it reads its own to list its models). A first
    walk of the folders took 15 s on the H200 machine's cold disk, and so did ``Distribution.files``,
    which stats every file it lists (17 s of one thread's ``stat`` calls behind the weights' reads):
    the RECORD is read here as it is, and a file that is not there is skipped by the read.
    """
    files: list[Path] = []
    for name in distributions:
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for row in csv.reader((distribution.read_text("RECORD") or "").splitlines()):
            if not row:
                continue
            text, size = row[0], row[2] if len(row) > 2 else ""
            if text.endswith(".py"):
                source = Path(distribution.locate_file(text))
                files.append(Path(importlib.util.cache_from_source(str(source))))
                if name == "transformers":
                    files.append(source)
            elif ".so" in text and size.isdigit() and int(size) <= _MAX_IMPORT_FILE:
                files.append(Path(distribution.locate_file(text)))
    return files


def read_imports_ahead(distributions: Iterable[str] = START_DISTRIBUTIONS, *, workers: int = 8) -> Future:
    """List :func:`import_files` and read them on ``workers`` threads, all off this thread; returns at once.

    The future answers the bytes read. Small files: many reads in flight cost the start nothing.
    """
    def list_and_read() -> int:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-imports") as pool:
            # one distribution listed at a time: torch's files are being read while the others are listed
            reads = [pool.submit(_read_whole, path) for name in distributions for path in import_files([name])]
            return sum(read.result() for read in reads)

    return on_a_thread("list-imports", list_and_read)


def can_read_direct(path: Path) -> bool:
    """Whether ``path`` can be read with ``O_DIRECT``, past the page cache (``pipeline.direct_read``):
    some file systems refuse it (tmpfs on older kernels, some network and overlay ones), and their
    files are read ahead."""
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, ALIGN) as buffer:  # page-aligned, as O_DIRECT's buffers must be
            os.preadv(fd, [buffer], 0)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def weight_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    """The ``*.safetensors`` files a pipeline.json's ``args`` loads from ``weights``, in the order the
    load needs them, those that exist: the image encoder's and the background remover's first (the
    loader loads and runs them first, on a thread of their own), then the models' in load order."""
    return _encoder_files(args, weights) + _model_files(args, weights)


def page_cache_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    """Those of :func:`weight_files` the start reads through the page cache, which the head start reads
    ahead: the encoders' (transformers loads them) and the models' that cannot be read past it
    (:func:`can_read_direct`; the others the loader reads itself, ``pipeline.direct_read``)."""
    return _encoder_files(args, weights) + [path for path in _model_files(args, weights) if not can_read_direct(path)]


def _encoder_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    encoder = weights.path(args["image_cond_model"]["args"]["model_name"])
    files = sorted(encoder.glob("*.safetensors")) + sorted(weights.background.path.glob("*.safetensors"))
    return [path for path in files if path.is_file()]


def _model_files(args: dict[str, Any], weights: Weights) -> list[Path]:
    files = [checkpoint(weights.path(ref)) for ref in args["models"].values()]
    return [path for path in files if path.is_file()]


def read_ahead(paths: Iterable[Path], *, workers: int = WORKERS, chunk: int = CHUNK) -> dict[Path, list[Future]]:
    """Read ``paths`` in ``chunk``-sized pieces on ``workers`` threads; returns without waiting.

    Per file, the futures of its pieces, which answer the bytes each piece read.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-ahead")
    reading = {path: [pool.submit(_read, path, offset, chunk) for offset in range(0, path.stat().st_size, chunk)]
               for path in paths}
    pool.shutdown(wait=False)  # the queued reads still run; the threads end with the last one
    return reading


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
