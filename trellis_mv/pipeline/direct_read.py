"""Filling a model's tensors from a safetensors checkpoint read past the page cache (``O_DIRECT``).

Read through the page cache, a checkpoint's bytes land in memory the kernel must first find, and
on a virtual machine whose memory goes back to its host once freed (Firecracker's free page
reporting; the H200 test machine is one) that memory comes back slowly: on this project's CPU
machine, two 2.6 GB checkpoints read at 0.60-0.61 GB/s through the page cache of a freshly settled
machine and at 2.16-2.21 GB/s with ``O_DIRECT`` into one reused buffer, three rounds each. Here a
checkpoint is read once, in large aligned pieces, into a few page-aligned staging buffers (pinned
where CUDA is there), and each piece's bytes are copied straight into the tensors they belong to;
the next piece is read while the GPU copies the last. Nothing of it stays in memory.

Each tensor's bytes are placed by the file's header (``trellis_mv.safetensors_header``, checked
whole before a byte is read). A tensor whose dtype differs from its target's is gathered on the
target's device and converted there, as ``load_state_dict`` converts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..safetensors_header import read_header
from .prefetch import ALIGN

__all__ = ["CHUNK", "READS", "Entry", "entries", "fill_direct", "names"]

# Bytes per read: from 8 to 64 MiB, one stream went at 1.7-2.2 GB/s on the CPU machine alike.
CHUNK = 32 * 2**20
# Reads in flight per file; the loader fills two files at once (loading.FILLERS). On the H200 machine's
# disk alone (2026-12-05), four concurrent 32 MiB O_DIRECT reads went at 1.80 and 1.87 GB/s, one at 1.41
# and 1.65. Inside the start, two per file ended the fills 0.85 s sooner but the start 3.1 s later than
# one (medians of four launches each, side by side): the small reads the start waits for beside the
# fills (transformers' import, the encoders' libraries) queued behind four large ones.
READS = 1
# safetensors' dtype names ("Format") and torch's dtypes, those this torch has; the same table as
# safetensors.torch's own. A checkpoint may hold any of them: trellis2's sparse structure flow keeps its
# rotary phases as a complex64 buffer.
_DTYPES = {name: getattr(torch, attr) for name, attr in (
    ("F64", "float64"), ("F32", "float32"), ("F16", "float16"), ("BF16", "bfloat16"),
    ("F8_E4M3", "float8_e4m3fn"), ("F8_E4M3FNUZ", "float8_e4m3fnuz"), ("F8_E5M2", "float8_e5m2"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("C64", "complex64"), ("I64", "int64"), ("I32", "int32"),
    ("I16", "int16"), ("I8", "int8"), ("U64", "uint64"), ("U32", "uint32"), ("U16", "uint16"), ("U8", "uint8"),
    ("BOOL", "bool"),
) if hasattr(torch, attr)}


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: its name, dtype, shape and bytes ``[start, end)`` from the file's start."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def names(path: Path) -> set[str]:
    """The names of the tensors in the safetensors file ``path``, from its header alone."""
    return set(read_header(path).tensors)


def entries(path: Path) -> list[Entry]:
    """The tensors of the safetensors file ``path``, in the order of their bytes.

    Raises ``ValueError`` for a dtype this reader has no torch dtype for (safetensors' own load may),
    and ``HeaderError`` (a ``ValueError``) for a file that is not a whole safetensors file.
    """
    header = read_header(path)
    unknown = [f"{name} ({info['dtype']})" for name, info in header.tensors.items() if info["dtype"] not in _DTYPES]
    if unknown:
        raise ValueError(f"{path}: dtypes this reader does not know: {', '.join(unknown[:3])}")
    found = [Entry(name, _DTYPES[info["dtype"]], tuple(info["shape"]), header.base + info["data_offsets"][0],
                   header.base + info["data_offsets"][1])
             for name, info in header.tensors.items()]
    return sorted(found, key=lambda entry: entry.start)


def fill_direct(path: Path, targets: Mapping[str, torch.Tensor], *, chunk: int = CHUNK, reads: int = READS) -> set[str]:
    """Copy every tensor of the safetensors file ``path`` that ``targets`` names into its target, reading
    the file with ``O_DIRECT`` (``prefetch.can_read_direct`` says where that works), ``reads`` pieces of
    ``chunk`` bytes in flight; the names filled. Others in the file are read past and ignored
    (``load_state_dict(strict=False)``).

    Raises ``RuntimeError`` for a tensor whose shape differs from its target's, as ``load_state_dict``
    does, ``OSError`` for a file that cannot be read so, and ``ValueError`` for what :func:`entries`
    refuses. Returns once every copy has ended.
    """
    wanted = [entry for entry in entries(path) if entry.name in targets]
    for entry in wanted:
        if tuple(targets[entry.name].shape) != entry.shape:
            raise RuntimeError(f"{path}: size mismatch for {entry.name}: the checkpoint has {list(entry.shape)}, "
                               f"the model {list(targets[entry.name].shape)}")
    if not wanted:
        return set()
    chunk, reads = max(ALIGN, chunk // ALIGN * ALIGN), max(1, reads)
    device = next(iter(targets.values())).device
    if device.type != "cuda":
        return _read_and_copy(path, targets, wanted, chunk, reads)
    # The copies go on a stream of their own, after what the default stream holds (the targets'
    # initial values among it): a job's or warm-up's kernels enqueued later do not hold up the reads.
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        filled = _read_and_copy(path, targets, wanted, chunk, reads)
        stream.synchronize()
    return filled


def _read_and_copy(path: Path, targets: Mapping[str, torch.Tensor], wanted: list[Entry], chunk: int,
                   reads: int) -> set[str]:
    """:func:`fill_direct`'s reads, on ``reads`` threads, and its copies, in file order on the current stream.

    Piece ``i`` is read into buffer ``i % (reads + 1)``: while it is copied out, the next ``reads``
    pieces are read into the other buffers, each once the copies out of its buffer's last piece ended.
    """
    device = targets[wanted[0].name].device
    landing = {entry.name: _landing(targets[entry.name], entry) for entry in wanted}
    first, last = wanted[0].start // ALIGN * ALIGN, wanted[-1].end
    offsets = range(first, last, chunk)
    # pinned where the copies go to a GPU: page-locked memory is copied from without the CPU
    buffers = [_aligned(chunk, pinned=device.type == "cuda") for _ in range(reads + 1)]
    copied: list[torch.cuda.Event | None] = [None] * len(buffers)  # after each buffer's last copies out
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with ThreadPoolExecutor(max_workers=reads, thread_name_prefix="direct-read") as readers:
            def read(index: int) -> Future:
                slot = index % len(buffers)
                return readers.submit(_read_piece, fd, buffers[slot], offsets[index], last, copied[slot], path)

            in_flight = {index: read(index) for index in range(min(reads, len(offsets)))}
            pending = 0  # the first entry not yet all copied
            for index, offset in enumerate(offsets):
                buffer = buffers[index % len(buffers)]
                end = offset + in_flight.pop(index).result()
                for entry in wanted[pending:]:
                    if entry.start >= end:
                        break
                    low, high = max(entry.start, offset), min(entry.end, end)
                    if low < high:
                        landing[entry.name][low - entry.start:high - entry.start].copy_(
                            buffer[low - offset:high - offset], non_blocking=True)
                    if entry.end <= end:
                        _settle_into(targets[entry.name], landing[entry.name], entry)
                        pending += 1
                copied[index % len(buffers)] = _recorded(device)
                if index + reads < len(offsets):
                    in_flight[index + reads] = read(index + reads)
    finally:
        os.close(fd)
    return {entry.name for entry in wanted}


def _read_piece(fd: int, buffer: torch.Tensor, offset: int, last: int, copied: torch.cuda.Event | None,
                path: Path) -> int:
    """Read the piece at ``offset`` into ``buffer`` once the copies out of it have ended; the bytes read."""
    if copied is not None:
        copied.synchronize()  # the GPU is done with the buffer's last piece: it may be read into again
    read = os.preadv(fd, [memoryview(buffer.numpy())], offset)
    if read < min(len(buffer), last - offset):
        raise OSError(f"{path}: {read} bytes read at {offset}, fewer than the header promises")
    return read


def _landing(target: torch.Tensor, entry: Entry) -> torch.Tensor:
    """Where an entry's bytes are copied: the target's own bytes when it has the entry's dtype and is
    contiguous, else a buffer on its device that :func:`_settle_into` converts from."""
    if target.dtype == entry.dtype and target.is_contiguous():
        return target.detach().view(-1).view(torch.uint8)
    return torch.empty(entry.end - entry.start, dtype=torch.uint8, device=target.device)


def _settle_into(target: torch.Tensor, landed: torch.Tensor, entry: Entry) -> None:
    """Once an entry's bytes have all landed: converted into the target where they landed elsewhere."""
    if landed.data_ptr() != target.data_ptr():
        with torch.no_grad():
            target.copy_(landed.view(entry.dtype).view(entry.shape))


def _recorded(device: torch.device) -> torch.cuda.Event | None:
    """An event after the copies enqueued so far on ``device``'s stream (None on the CPU: copies there are done)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _aligned(size: int, *, pinned: bool = False) -> torch.Tensor:
    """``size`` bytes as a uint8 tensor that begins at a page boundary (what ``O_DIRECT`` reads into),
    page-locked with ``pinned``."""
    whole = torch.empty(size + ALIGN, dtype=torch.uint8, pin_memory=pinned)
    skip = -whole.data_ptr() % ALIGN
    return whole[skip:skip + size]
