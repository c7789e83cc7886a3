"""Reading checkpoints through the page cache against past it, side by side, on this machine's disk.

    sudo python benchmarks/read_paths.py [--folder DIR] [--gb 5] [--rounds 3]

Writes ``--gb`` of bf16 checkpoints in 2.6 GB files (a TRELLIS.2 flow's size) under ``--folder``
(on the disk to measure), then, ``--rounds`` times, reads them five ways and prints each one's GB/s
and its ratio to the first, every read from a dropped page cache:

- ``page cache, at once``: one file after another, 16 MiB reads, right after the drop (what the cold
  start's ``read_sequential`` measured until the settling);
- ``page cache, settled``: the same once the guest has handed the freed memory back to its host
  (``cold_start.settle``; a machine without that counter reads as at once);
- ``past it``: ``O_DIRECT`` into one reused buffer (``cold_start.read_direct``);
- ``loader's fill``: ``pipeline.direct_read.fill_direct`` into CPU tensors of the checkpoints' shapes,
  as the loader fills them (``loading.FILLERS`` files at once, ``direct_read.READS`` reads in flight
  each), and ``loader's fill, 2 reads``: the same with two reads in flight per file (faster alone on
  the H200 machine's disk, slower inside its start: ``direct_read.READS``).

Needs root (``/proc/sys/vm/drop_caches``). The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cold_start
import torch

FILE_BYTES = 2_620_000_000


def write_checkpoints(folder: Path, gb: float) -> list[Path]:
    """bf16 matrices of a flow's shapes, in files of ``FILE_BYTES`` (the last one smaller)."""
    from safetensors.torch import save_file

    files, left, index = [], int(gb * 1e9), 0
    while left > 0:
        tensors, size = {}, 0
        while size < min(left, FILE_BYTES):
            tensors[f"blocks.{len(tensors)}.weight"] = torch.randn(1536, 6144).to(torch.bfloat16)
            size += 1536 * 6144 * 2
        path = folder / f"flow_{index}.safetensors"
        save_file(tensors, str(path))
        files.append(path)
        left, index = left - size, index + 1
    return files


def fill_all(files: list[Path], reads: int) -> float:
    """Seconds for the loader's direct fill of every file into CPU tensors, ``loading.FILLERS`` at once,
    ``reads`` reads in flight each."""
    from trellis_mv.pipeline.direct_read import entries, fill_direct
    from trellis_mv.pipeline.loading import FILLERS

    # zeroed first, as a load's targets are already in memory: the fill is timed, not the first touch
    targets = [{entry.name: torch.zeros(entry.shape, dtype=entry.dtype) for entry in entries(path)} for path in files]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=FILLERS) as fillers:
        list(fillers.map(lambda pair: fill_direct(*pair, reads=reads), zip(files, targets)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--gb", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from trellis_mv.pipeline.direct_read import READS

    folder = Path(tempfile.mkdtemp(prefix="read_paths_", dir=args.folder))
    try:
        files = write_checkpoints(folder, args.gb)
        size = sum(path.stat().st_size for path in files)
        ways = {"page cache, at once": (cold_start.drop_page_cache, cold_start.read_sequential),
                "page cache, settled": (cold_start.cold_page_cache, cold_start.read_sequential),
                "past it": (cold_start.cold_page_cache, cold_start.read_direct),
                "loader's fill": (cold_start.cold_page_cache, partial(fill_all, reads=READS)),
                "loader's fill, 2 reads": (cold_start.cold_page_cache, partial(fill_all, reads=2))}
        speeds: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(args.rounds):
            for way, (cold, read) in ways.items():
                cold(files)
                speeds[way].append(size / read(files) / 1e9)
                print(f"round {round_} {way:20s} {speeds[way][-1]:5.2f} GB/s", flush=True)
        first = statistics.median(speeds["page cache, at once"])
        for way, measured in speeds.items():
            print(f"median {way:20s} {statistics.median(measured):5.2f} GB/s, "
                  f"{statistics.median(measured) / first:4.2f} x the first", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
