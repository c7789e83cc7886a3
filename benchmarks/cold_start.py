"""Cold start, measured: ``python handler.py`` from launch to ready, warm-up included, on full-size weights read from disk.

    python benchmarks/cold_start.py --out DIR [--root DIR] [--keep] [--profile] [--baseline TREE ... [--rounds N]]

1. Write full-size random weights in the image's layout (``write_weights(full=True)``: about
   16 GB) under ``--root``, which must be on the disk being measured (not a RAM-backed /tmp).
2. Drop the page cache (``sync``, ``/proc/sys/vm/drop_caches``, and ``POSIX_FADV_DONTNEED`` per
   file), check with ``mincore`` how much of the first file is still in memory, and read every
   file the loader reads once, 16 MiB at a time (what ``dd`` does): the read bandwidth. Then again
   from a settled page cache, and once past the page cache (both below): the bound is made of the
   faster of these two.
3. Drop the cache again, let it settle, and launch the real worker as RunPod does, with this Python (on the device,
   ``tests/gpu/image_python.py``'s: the image's packages alone), ``python handler.py`` without
   arguments, in a folder whose ``test_input.json`` (what runpod runs outside RunPod) is a job the
   handler refuses at once (it proves the handler answers; no generation), no generator hook,
   the weights named by ``TRELLIS_MV_MODEL_DIR``. Every log line is timestamped on arrival; ready
   is runpod's ``Starting Serverless Worker`` line, printed once the handler is built, after the
   warm-up (``trellis_mv.warmup``).

The weights are random, without the GPU tests' shell structure: the warm-up never decodes what the
sparse-structure decoder answers (its flows and decoders run on synthetic shells of a typical
object's size, ``trellis_mv.pipeline.warm``), so random weights give it the size real ones do.

A settled page cache: on a Firecracker microVM (the H200 test machine is one) the guest returns
memory it frees to the host within seconds (free page reporting), and memory used again after
that is slow to come back: on this project's CPU machine, reading two 2.6 GB files right after the
drop went at 2.2-3.0 GB/s and ten seconds after it at 0.67-0.77 GB/s (four rounds each). A read
right after the drop and a start that reads for twenty seconds do not meet the same machine, so
before the settled read and every launch the page cache is dropped and the benchmark waits until
the guest has returned what the drop freed (``settle``: the kernel's ``reported_kib`` unchanged for
``QUIET_S``), the state a freshly booted machine is in. Where there is no such counter the read
right after the drop is the bound's, and nothing waits.

The disk alone is read too, with ``O_DIRECT`` into one reused buffer (no page cache, no fresh
memory), as the worker reads its models where the file system allows it (``pipeline.direct_read``).

``cold_start_s`` is launch to ready; ``cold_start_read_s`` is bytes / the faster of the settled and
the direct read's bandwidth (``cold_start_read_basis`` says which: the ways a freshly booted
machine's disk can deliver the weights) and ``cold_start_read_bound_s`` that + 10 s (the goal,
DESIGN.md). ``marks`` say where the time
went (``phases_s``: the gaps between them): the head start, imports until the CUDA check, the other
checks, the load, and the warm-up's parts. ``DIR/cold_start.json`` is rewritten after every step;
the weights are deleted at the end. ``--profile`` adds a second launch, from a dropped cache again,
under py-spy and ``-X importtime`` (``launch``); https://www.speedscope.app shows the profile.

``--baseline TREE`` compares with another version of the worker on the same disk and weights, in the
same call: ``TREE`` holds that version's ``handler.py`` and ``trellis_mv/`` and a ``commit`` file
(``BASELINE="<rev> ..." tests/gpu/prepare_cache.sh`` writes one per revision in ``.cache/baselines/``),
and names it by its folder's name; give it once per version. Then ``--rounds`` rounds (default 2)
launch this tree's worker and each baseline's, each from a dropped page cache, the first to go moving
on by one version each round: ``side_by_side`` in ``cold_start.json`` has every launch, and each
version's median time to ready. One call's disk varies little within it and much between calls (1.3 to 2.0
GB/s on the H200 machine on one day), so a change to the start is judged by this, not by two calls.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import gpu_env

# log text -> (mark, the phase that ends there), in the order the handler prints them
MARKS = {
    "trellis_mv.headstart: head start": ("head_started", "interpreter, settings, head start"),
    "trellis_mv.startup: CUDA:": ("cuda_checked", "imports, CUDA check"),
    "trellis_mv.startup: toolchain:": ("toolchain_checked", "toolchain check"),
    "trellis_mv.startup: extensions import": ("extensions_imported", "extensions import"),
    "trellis_mv.startup: weights:": ("weights_checked", "weight checks"),
    "trellis_mv.pipeline.loading: loaded": ("loaded", "load_pipeline"),
    "trellis_mv.warmup: warm-up stages": ("stages_warmed", "warm-up: stages"),
    "trellis_mv.warmup: warm-up kernels": ("kernels_compiled", "warm-up: waiting for the kernel compiles"),
    "trellis_mv.warmup: warm-up decoders": ("decoders_warmed", "warm-up: decoders"),
    "trellis_mv.warmup: warm-up export:": ("export_warmed", "warm-up: waiting for the export's"),
    "trellis_mv.warmup: warm-up done": ("warmed_up", "warm-up: done"),
    "Starting Serverless Worker": ("ready", "to runpod's start"),
    "failed with error": ("answered", "the refused job"),
}
# log text -> mark of what ran beside the phases: when the head start's reads ended
READS = {
    "trellis_mv.headstart: head start: the imports' files read": "imports_read",
    "trellis_mv.headstart: head start: the weights read": "weights_read",
}
REFUSED_JOB = '{"input": {"images": []}}'
# Firecracker's guest: the running total of memory reported free to the host (module docstring)
REPORTED = Path("/sys/module/page_reporting/parameters/reported_kib")
# The guest reports in passes about 2 s apart (on the CPU machine, about 1 GiB a pass): settled once a
# pass and a half reports nothing.
QUIET_S, SETTLE_AT_MOST_S = 3.0, 120.0


def drop_page_cache(files: list[Path]) -> dict[str, Any]:
    """Ask the kernel to forget the files' pages both ways; say what worked and what stayed resident."""
    os.sync()
    state: dict[str, Any] = {}
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        state["drop_caches"] = "ok"
    except OSError as error:
        state["drop_caches"] = f"{type(error).__name__}: {error}"
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    state["resident_fraction_first_file"] = resident_fraction(files[0])
    return state


def resident_fraction(path: Path) -> float | None:
    """The share of ``path``'s pages in the page cache (``mincore``), or None where the call is not available."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY)  # copy-on-write: addressable, nothing read
    start = ctypes.c_char.from_buffer(mapped)
    try:
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.c_void_p(ctypes.addressof(start))
        if ctypes.CDLL(None, use_errno=True).mincore(address, ctypes.c_size_t(size), vector) != 0:
            return None
        return round(sum(byte & 1 for byte in vector) / pages, 4)
    finally:
        del start  # the buffer export must end before the map closes
        mapped.close()


def read_sequential(files: list[Path], chunk: int = 16 * 2**20) -> float:
    """Seconds to read ``files`` once, one after another, ``chunk`` bytes per call."""
    buffer = bytearray(chunk)
    start = time.perf_counter()
    for path in files:
        with open(path, "rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
    return time.perf_counter() - start


def read_direct(files: list[Path], chunk: int = 32 * 2**20) -> float:
    """Seconds to read ``files`` once, one after another, with ``O_DIRECT`` into one reused buffer: the
    disk alone, no page cache and no fresh memory (what ``pipeline.direct_read`` reads the models with)."""
    from trellis_mv.pipeline.prefetch import ALIGN

    start = time.perf_counter()
    with mmap.mmap(-1, chunk // ALIGN * ALIGN) as buffer:
        for path in files:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                offset = 0
                while read := os.preadv(fd, [buffer], offset):
                    offset += read
            finally:
                os.close(fd)
    return time.perf_counter() - start


def settle(reported: Path = REPORTED, quiet_s: float = QUIET_S, at_most_s: float = SETTLE_AT_MOST_S) -> dict[str, Any]:
    """Wait until the guest kernel has returned the memory it freed to the host: ``reported`` (its
    running total of KiB reported free) unchanged for ``quiet_s``, at most ``at_most_s``. How long it
    took and how much went back; nothing waits where the counter does not exist."""
    if not reported.is_file():
        return {"settled": False, "why": f"no {reported}"}
    start = last_change = time.monotonic()
    first = last = int(reported.read_text())
    while (now := time.monotonic()) - last_change < quiet_s and now - start < at_most_s:
        time.sleep(0.25)
        if (value := int(reported.read_text())) != last:
            last, last_change = value, time.monotonic()
    return {"settled": now - last_change >= quiet_s, "settle_s": round(now - start, 1),
            "reported_gib": round((last - first) / 2**20, 2)}


def cold_page_cache(files: list[Path]) -> dict[str, Any]:
    """The page cache dropped and settled (module docstring): what :func:`drop_page_cache` and :func:`settle` said."""
    return {**drop_page_cache(files), **settle()}


def launch(model_dir: Path, log_path: Path, timeout: float, profile: Path | None = None,
           tree: Path = gpu_env.ROOT) -> dict[str, Any]:
    """Run the real ``handler.py`` of ``tree`` on ``model_dir``; seconds from launch to each mark, and its exit status.

    With ``profile``, under py-spy (every thread's stack, idle ones too, 50 times a second, without
    pausing the process; in time order, as speedscope JSON) and with ``-X importtime`` (each import's
    microseconds in the log, as it ends): where the start's time goes, at some cost to it.
    """
    # A fresh Triton cache, as a new worker has: the device run's earlier phases compiled into theirs.
    triton = Path(tempfile.mkdtemp(prefix="cold_start_triton_"))
    # tree first on the path: the handler's own imports and its children's (python -m trellis_mv...)
    path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "TRELLIS_MV_MODEL_DIR": str(model_dir), "TRITON_CACHE_DIR": str(triton),
           "TRELLIS_MV_BACKGROUND_MODEL": str(model_dir.parent / "BiRefNet"), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env.pop("TRELLIS_MV_GENERATOR", None)
    # As RunPod starts it, without arguments (a command line waits for runpod's import, to check it):
    # outside RunPod, runpod then runs ./test_input.json, here the refused job in a folder of its own.
    folder = Path(tempfile.mkdtemp(prefix="cold_start_job_"))
    (folder / "test_input.json").write_text(REFUSED_JOB)
    command = [sys.executable, str(tree / "handler.py")]
    if profile is not None:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
        command = [py_spy(), "record", "--format", "speedscope", "--rate", "50", "--threads", "--idle", "--nonblocking",
                   "--output", str(profile), "--", *command]
    marks: dict[str, float] = {}
    mark_of = {**{text: name for text, (name, _phase) in MARKS.items()}, **READS}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    with open(log_path, "w") as log, process.stdout:
        for line in process.stdout:
            now = time.perf_counter() - start
            log.write(f"{now:9.3f} {line}")
            for text, name in mark_of.items():
                if text in line and name not in marks:
                    marks[name] = round(now, 3)
    watchdog.cancel()
    status = process.wait()
    shutil.rmtree(triton, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    return {"marks": marks, "exit_status": status}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """The four steps above, ``cold_start.json`` after each."""
    import torch
    from random_weights import write_weights

    from trellis_mv.config import Settings
    from trellis_mv.pipeline.prefetch import can_read_direct, weight_files
    from trellis_mv.weights import find_weights

    results: dict[str, Any] = {"commit": gpu_env.commit(), "root": str(args.root), "filesystem": filesystem(args.root),
                               "packages": packages()}

    def save() -> None:
        (args.out / "cold_start.json").write_text(json.dumps(results, indent=1))

    start = time.perf_counter()
    model_dir = write_weights(args.root, full=True)
    torch.cuda.empty_cache()
    os.sync()
    results["write_weights_s"] = round(time.perf_counter() - start, 2)
    config = json.loads((model_dir / "pipeline.json").read_text())["args"]
    weights = find_weights(Settings(model_dir=str(model_dir), background_model=str(model_dir.parent / "BiRefNet")))
    files = weight_files(config, weights)
    size = sum(path.stat().st_size for path in files)
    results.update(files=len(files), bytes=size, file_bytes={str(p.relative_to(args.root)): p.stat().st_size for p in files})
    save()
    for name, cold in (("sequential", drop_page_cache), ("settled", cold_page_cache)):
        results[f"page_cache_before_{name}_read"] = state = cold(files)
        if name == "settled" and not state.get("settled"):
            break
        seconds = read_sequential(files)
        results[f"read_{name}_s"] = round(seconds, 2)
        results[f"read_{name}_gb_per_s"] = round(size / seconds / 1e9, 3)
        save()
    if can_read_direct(files[0]):
        seconds = read_direct(files)
        results["read_direct_s"], results["read_direct_gb_per_s"] = round(seconds, 2), round(size / seconds / 1e9, 3)
        save()
    results["cold_start_read_basis"] = basis = read_basis(results)
    results["cold_start_read_s"] = round(size / 1e9 / results[f"read_{basis}_gb_per_s"], 1)
    results["cold_start_read_bound_s"] = round(results["cold_start_read_s"] + 10, 1)
    results["page_cache_before_launch"] = cold_page_cache(files)
    results["handler"] = launch(model_dir, args.out / "cold_start_handler.log", args.timeout)
    marks = results["handler"]["marks"]
    if "ready" in marks:
        results["cold_start_s"] = marks["ready"]
    results["phases_s"] = phases(marks)
    save()
    if args.baseline:
        def keep(side: dict[str, Any]) -> None:
            results["side_by_side"] = side
            save()

        side_by_side(model_dir, files, args, after_each=keep)
    if args.profile:
        results["page_cache_before_profiled_launch"] = cold_page_cache(files)
        results["profiled"] = launch(model_dir, args.out / "cold_start_profiled.log", args.timeout,
                                     profile=args.out / "cold_start_profile.json")
        results["profiled"]["phases_s"] = phases(results["profiled"]["marks"])
        save()
    return results


def side_by_side(model_dir: Path, files: list[Path], args: argparse.Namespace,
                 after_each: Callable[[dict[str, Any]], None] = lambda side: None) -> dict[str, Any]:
    """``--rounds`` launches of this tree's worker ("current") and each ``--baseline``'s (named by its
    folder), each from a dropped page cache, the first to go moving on each round (:func:`launch_order`):
    per version its commit, every launch's marks, and the median time to ready. ``after_each`` gets the
    answer so far after every launch: a device call that runs out of time keeps the launches it made."""
    trees = {"current": (gpu_env.ROOT, gpu_env.commit()),
             **{tree.name: (tree, (tree / "commit").read_text().strip()) for tree in args.baseline}}
    out: dict[str, Any] = {name: {"commit": commit, "launches": []} for name, (_tree, commit) in trees.items()}
    for round_ in range(args.rounds):
        for name in launch_order(list(trees), round_):
            page_cache = cold_page_cache(files)
            launched = launch(model_dir, args.out / f"cold_start_{name}_{round_}.log", args.timeout, tree=trees[name][0])
            out[name]["launches"].append({"round": round_, "page_cache": page_cache, **launched})
            ready = [launched["marks"].get("ready") for launched in out[name]["launches"]]
            out[name]["ready_s"] = ready
            out[name]["median_ready_s"] = round(statistics.median(ready), 3) if None not in ready else None
            after_each(out)
    return out


def launch_order(names: list[str], round_: int) -> list[str]:
    """The versions' order in round ``round_``: each round begins one version later, so that over as many
    rounds as versions each goes first once and no version always follows the same one."""
    turn = round_ % len(names)
    return names[turn:] + names[:turn]


def read_basis(results: dict[str, Any]) -> str:
    """Which read the bound is made of: the faster of the settled and the direct one, the ways a fresh
    machine's disk can deliver the weights (the read right after a drop where neither was taken)."""
    fresh = [name for name in ("settled", "direct") if f"read_{name}_gb_per_s" in results]
    return max(fresh, key=lambda name: results[f"read_{name}_gb_per_s"]) if fresh else "sequential"


def packages() -> dict[str, Any]:
    """What the launched worker can import: this Python, how many distributions, the versions that shape the imports."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in metadata.distributions():  # in sys.path's order: the first of a name is the one imported
        found.setdefault(dist.metadata["Name"].lower().replace("_", "-"), dist.version)
    return {"python": sys.executable, "distributions": len(found),
            **{name: found.get(name) for name in ("torch", "transformers", "huggingface-hub", "scipy", "pandas", "scikit-learn")}}


def py_spy() -> str:
    """The py-spy executable: on the PATH, or beside the packages (``pip install --target`` puts it in ``bin/``)."""
    found = shutil.which("py-spy")
    if found:
        return found
    for folder in sys.path:
        candidate = Path(folder) / "bin" / "py-spy"
        if candidate.is_file():
            return str(candidate)
    raise SystemExit("--profile needs py-spy (pip install py-spy)")


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds between consecutive marks (those present, up to ready), named after what happened in between."""
    out, last = {}, 0.0
    for name, phase in MARKS.values():
        if name in marks and name != "answered":
            out[phase] = round(marks[name] - last, 3)
            last = marks[name]
    return out


def filesystem(path: Path) -> dict[str, Any]:
    """The mount holding ``path`` (type and source from /proc/mounts) and its free space."""
    path.mkdir(parents=True, exist_ok=True)
    resolved, best = str(path.resolve()), ("", "", "")
    for line in Path("/proc/mounts").read_text().splitlines():
        source, point, kind = line.split()[:3]
        if resolved.startswith(point) and len(point) >= len(best[1]):
            best = (source, point, kind)
    stat = os.statvfs(path)
    return {"source": best[0], "mount": best[1], "type": best[2], "free_gib": round(stat.f_bavail * stat.f_frsize / 2**30, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=gpu_env.ROOT / ".cold_start", help="where the weights are written")
    parser.add_argument("--timeout", type=float, default=300, help="seconds the handler may take to answer")
    parser.add_argument("--keep", action="store_true", help="keep the weights afterwards")
    parser.add_argument("--profile", action="store_true",
                        help="then launch once more under py-spy and -X importtime (cold_start_profile.json, cold_start_profiled.log)")
    parser.add_argument("--baseline", type=Path, action="append", default=[],
                        help="a tree with another version's handler.py, trellis_mv/ and commit, named by its folder: "
                        "launched beside this one; once per version")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: launches of each version")
    args = parser.parse_args()
    if args.profile:
        py_spy()
    for tree in args.baseline:
        if not all((tree / name).exists() for name in ("handler.py", "trellis_mv", "commit")):
            parser.error(f"--baseline: {tree} needs handler.py, trellis_mv/ and commit (tests/gpu/prepare_cache.sh writes them)")
    names = [tree.name for tree in args.baseline]
    if "current" in names or len(set(names)) < len(names):
        parser.error(f"--baseline: the folders' names {names} must differ from each other and from 'current' (this tree)")
    gpu_env.setup()
    args.out.mkdir(parents=True, exist_ok=True)
    free = filesystem(args.root)["free_gib"]
    if free < 24:
        parser.error(f"--root: {args.root} has {free} GiB free; the weights need about 16 GiB and room to spare")
    try:
        results = measure(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    print(f"cold start {results.get('cold_start_s')} s, read bound {results.get('cold_start_read_bound_s')} s", flush=True)


if __name__ == "__main__":
    main()
