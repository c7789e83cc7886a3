"""The decoders' Triton kernels, compiled at start in processes of their own while the weights are read.

TRELLIS.2's VAE decoders run their sparse convolutions on FlexGEMM (trellis2's ``SparseConv3d``,
algorithm ``masked_implicit_gemm_splitk``, fp16). FlexGEMM takes a Triton configuration per shape
key ``(2^⌊log2 N⌋, Ci, Co, kernel volume)`` from its autotune cache (the image ships ours per GPU:
builder/flex_gemm_autotune/), and Triton compiles a configuration on its first launch, once per
specialisation of the integer arguments (N and ⌊log2 N⌋ divisible by 16 or not: Triton's default).
A compile costs seconds of CPU and no weights: with our entries, the H200's first default job spent
about 28 s more in the stages that decode than its second. So a fresh worker compiles them at start,
in a few child processes (``python -m trellis_mv.pipeline.kernels --shard i/n``) that run while
the parent imports torch and reads the weights. Triton keeps what they compile in its cache folder
(``TRITON_CACHE_DIR``, inherited), where the worker's own first launch finds it. One more child,
:data:`OWN`, does the same for our own kernels: ``python -m trellis_mv.warmup --compile`` runs the
export's warm-up (the closest-point and UV-raster kernels, FlexGEMM's ``grid_sample_3d``; and
the previews' coverage kernel).

- :func:`conv_probes`: from FlexGEMM's cache for this GPU, one convolution per compiled variant that
  a job of any size can use (kernel, configuration, split-K, specialisation), the cheapest of its keys;
- :func:`tuning_probes`: one convolution per shape key a decoder can meet, for
  builder/autotune_flexgemm.py to tune;
- :func:`run_probes`: runs convolutions through trellis2's own ``SparseConv3d``;
- :func:`start_compiling`: the child processes, and :class:`Compiling` to wait for them. A child is
  done once it has reported (:func:`report`, through a pipe of its own), not once it has exited: its
  interpreter's and CUDA context's teardown took 0.3-2.8 s beside the load (H100, 2026-12-05), and
  the export's warm-up, which waits for :data:`OWN`, is the start's last step on a fast disk.

FlexGEMM's cache is read here as the JSON file it is (``FLEX_GEMM_AUTOTUNE_CACHE_PATH``, else
FlexGEMM's default path): only ``trellis_mv.export`` imports FlexGEMM (DESIGN.md, "Layout").
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, IO

__all__ = ["OWN", "OWN_KERNELS", "Compiling", "ConvProbe", "cache_path", "conv_probes", "report", "run_probes",
           "start_compiling", "tuning_probes"]

_SPCONV = "flex_gemm.kernels.triton.spconv."
# FlexGEMM's split-K dispatcher: key "(2^b, Ci, Co, V)", value {} or {"SPLITK": k}.
DISPATCH = _SPCONV + "sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk.sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk"
# The Triton kernels it calls: key "(b, Ci, Co, V, [SPLITK,] allow_tf32, dtypes...)", value a triton.Config's fields.
KERNEL = "sparse_submanifold_conv_fwd_masked_implicit_gemm_kernel"
SPLITK_KERNEL = "sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk_kernel"
_DISPATCH_KEY = re.compile(r"\(2\^(\d+), (\d+), (\d+), (\d+)\)")
_DECODER_DTYPE = "torch.float16"  # the decoders' convolutions run in fp16 (use_fp16 in their configs)
# The child that compiles our own Triton kernels (the export's and the previews'): it runs the export's
# warm-up (``trellis_mv.warmup``), so that the worker's own finds every compile in Triton's cache; in the
# worker, the compiles held the interpreter lock for seconds beside the load.
OWN, OWN_KERNELS = "own", ("-m", "trellis_mv.warmup", "--compile")
# When the parent started a child (its ``time.time()``), so that the child's report can say how long
# its interpreter and first imports took before its own clock began.
SPAWNED_AT = "TRELLIS_MV_SPAWNED_AT"
# The file descriptor, in the child, of the pipe its report goes to (:func:`report`).
REPORT_FD = "TRELLIS_MV_REPORT_FD"


@dataclass(frozen=True)
class ConvProbe:
    """One submanifold convolution, 3³ kernel, fp16: ``tokens`` voxels of ``ci`` channels to ``co``."""

    ci: int
    co: int
    tokens: int


def cache_path(env: Mapping[str, str] = os.environ) -> Path:
    """The autotune cache file FlexGEMM reads at import (its ``AUTOTUNE_CACHE_PATH``)."""
    return Path(env.get("FLEX_GEMM_AUTOTUNE_CACHE_PATH") or os.path.expanduser("~/.flex_gemm/autotune_cache.json"))


def conv_probes(cache: Mapping[str, Any], gpu: str) -> list[ConvProbe]:
    """Convolutions that, run once, compile every kernel variant a job on ``gpu`` can launch.

    For every key of the dispatcher's entries, the Triton kernel it leads to (split-K or not) and
    that kernel's configuration; per (kernel, split-K, kernel volume, configuration, ⌊log2 N⌋
    divisible by 16), what Triton compiles apart, the smallest key, as two probes: N = 2^b
    (divisible by 16) and N = 2^b + 1 (not). Keys without a kernel entry are probed too (the probe
    tunes them). Empty when the cache holds nothing for ``gpu``.
    """
    kernels = cache.get(gpu, {})
    configs: dict[tuple[str, int], dict[tuple, Any]] = {}
    for name, entries in kernels.items():
        kind = name.rsplit(".", 1)[-1]
        if kind not in (KERNEL, SPLITK_KERNEL):
            continue
        for key, config in entries.items():
            fields = ast.literal_eval(key)
            splitk = fields[4] if kind == SPLITK_KERNEL else 1
            if _DECODER_DTYPE in fields:
                configs.setdefault((kind, splitk), {})[tuple(fields[:4])] = config
    smallest: dict[tuple, tuple[int, int, int]] = {}
    for key, choice in kernels.get(DISPATCH, {}).items():
        found = _DISPATCH_KEY.fullmatch(key)
        if not found:
            continue
        log_n, ci, co, volume = map(int, found.groups())
        splitk = int((choice or {}).get("SPLITK", 1))
        kind = KERNEL if splitk == 1 else SPLITK_KERNEL
        config = configs.get((kind, splitk), {}).get((log_n, ci, co, volume))
        variant = (kind, splitk, volume, json.dumps(config, sort_keys=True) if config else f"untuned {key}",
                   log_n % 16 == 0)
        if variant not in smallest or log_n < smallest[variant][0]:
            smallest[variant] = (log_n, ci, co)
    probes = {ConvProbe(ci, co, 2**log_n + extra) for log_n, ci, co in smallest.values() for extra in (0, 1)}
    return sorted(probes, key=lambda probe: (probe.tokens, probe.ci, probe.co))


def tuning_probes(decoder: Any, log_tokens: tuple[int, int], per_level: int = 2) -> list[ConvProbe]:
    """One convolution per shape key ``decoder`` can meet: every conv shape at every bucket of its level.

    The decoded latent holds between ``2^log_tokens[0]`` and ``2^log_tokens[1]`` voxels; each level up
    multiplies them by about 4 (a subdivided surface), ``2^per_level``. A conv belongs to the level
    of its input channels (``decoder.model_channels``). N = 2^b + 1 voxels: in bucket b, and not a
    multiple of 16.
    """
    channels = list(decoder.model_channels)
    shapes = sorted({(int(m.weight.shape[-1]), int(m.weight.shape[0])) for m in decoder.modules()
                     if type(m).__name__ == "SparseConv3d"})
    probes = []
    for ci, co in shapes:
        level = channels.index(ci)
        low, high = (bound + per_level * level for bound in log_tokens)
        probes += [ConvProbe(ci, co, 2**b + 1) for b in range(low, high + 1)]
    return sorted(probes, key=lambda probe: (probe.tokens, probe.ci, probe.co))


def run_probes(probes: Iterable[ConvProbe]) -> int:
    """Run each probe through trellis2's ``SparseConv3d`` in fp16 on a block of voxels; returns how many ran."""
    import torch
    from trellis2.modules.sparse import SparseTensor
    from trellis2.modules.sparse.conv import SparseConv3d

    count = 0
    for probe in probes:
        with torch.device("cuda"):
            conv = SparseConv3d(probe.ci, probe.co, 3).half()
        index = torch.arange(probe.tokens, device="cuda")
        side = math.ceil(probe.tokens ** (1 / 3)) + 1
        coords = torch.stack([index * 0, index // side**2, index // side % side, index % side], dim=1).int()
        feats = torch.randn(probe.tokens, probe.ci, device="cuda", dtype=torch.float16)
        with torch.no_grad():
            conv(SparseTensor(feats=feats, coords=coords))
        torch.cuda.synchronize()  # a failed launch is this probe's, not the next one's
        count += 1
    return count


@dataclass
class Child:
    """One child of :func:`start_compiling`: the process, the file its output goes to, the read end of its report's pipe."""

    process: subprocess.Popen
    output: IO[str]
    report: int


class Compiling:
    """The child processes of :func:`start_compiling`, by name; :meth:`wait` joins them and says what they did."""

    def __init__(self, processes: dict[str, Child], started: float):
        self.processes, self.started = processes, started
        self._reports: dict[str, dict[str, Any]] = {}

    def kill(self) -> None:
        """End every child that is still running."""
        for child in self.processes.values():
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()

    def wait(self, *names: str, timeout: float = 600.0) -> dict[str, Any]:
        """Wait for the children ``names`` (default: all) to report, killing those past ``timeout``; what they did.

        ``probes``: the convolutions they ran; ``child_s``: the longest child's own seconds;
        ``startup_s``: the longest a child took from its spawn to its own clock's start; ``failed``:
        the exit status and last lines of each child that ended without its JSON report. A child is
        joined once: waiting for it again repeats its report.
        """
        names = names or tuple(self.processes)
        deadline = time.monotonic() + timeout
        for name in names:
            if name not in self._reports:
                self._reports[name] = _join(self.processes[name], max(0.0, deadline - time.monotonic()))
        reports = [self._reports[name] for name in names]
        done = [report for report in reports if "exit_status" not in report]
        return {"processes": len(names), "probes": sum(report.get("probes", 0) for report in done),
                "waited_s": round(time.monotonic() - self.started, 2),
                "child_s": max((report.get("seconds", 0.0) for report in done), default=0.0),
                "startup_s": max((report.get("startup_s", 0.0) for report in done), default=0.0),
                "failed": [{"child": name, **report} for name, report in zip(names, reports) if "exit_status" in report]}

    def shards(self) -> tuple[str, ...]:
        """The names of the convolution shards: every child but :data:`OWN`."""
        return tuple(name for name in self.processes if name != OWN)


def start_compiling(processes: int, *, own: bool = True) -> Compiling:
    """Start ``processes`` children, each compiling every ``processes``-th probe, and with ``own`` one more,
    :data:`OWN`, that compiles our own kernels (``OWN_KERNELS``); returns at once."""
    commands = {f"shard {shard}/{processes}": [sys.executable, "-m", __name__, "--shard", f"{shard}/{processes}"]
                for shard in range(processes)}
    if own:
        commands[OWN] = [sys.executable, *OWN_KERNELS]
    env = {**os.environ, SPAWNED_AT: repr(time.time())}
    return Compiling({name: _spawn(name, command, env) for name, command in commands.items()}, time.monotonic())


def report(fields: Mapping[str, Any]) -> None:
    """In a child of :func:`start_compiling` (or run by hand): print its JSON report, and hand it to the
    parent through the report pipe, which it closes, so the parent has it before the child's teardown."""
    line = json.dumps(fields)
    print(line, flush=True)
    if REPORT_FD in os.environ:
        with open(int(os.environ[REPORT_FD]), "w") as pipe:
            pipe.write(line + "\n")


def since_spawn(now: float) -> float:
    """In a child of :func:`start_compiling`: seconds from its spawn to ``now`` (a ``time.time()``); 0 elsewhere."""
    spawned = os.environ.get(SPAWNED_AT)
    return round(now - float(spawned), 2) if spawned else 0.0


def _spawn(name: str, command: list[str], env: Mapping[str, str]) -> Child:
    """One child, niced, its output to a file, its report's pipe passed to it (:data:`REPORT_FD`)."""
    output = tempfile.TemporaryFile("w+", prefix="trellis_mv_kernels_")
    read, write = os.pipe()
    try:
        # Niced: a compile is needed only after the load, the start's own imports and load are waited for.
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True,
                                   env={**env, REPORT_FD: str(write)}, pass_fds=(write,), preexec_fn=_lower_priority)
    except BaseException:
        os.close(read)
        raise
    finally:
        os.close(write)  # the child's copy is the only one left: its end, or its report, closes the pipe
    # Its exit, whenever it comes after its report; a daemon, so that a child stuck in its teardown never
    # holds up the worker's own exit.
    threading.Thread(target=process.wait, name=f"reap {name}", daemon=True).start()
    return Child(process, output, read)


def _lower_priority() -> None:
    os.nice(10)


def _join(child: Child, timeout: float) -> dict[str, Any]:
    """The child's JSON report as soon as it has written it, its exit not waited for; else, once it has
    ended (killed past ``timeout``), its exit status and last lines."""
    deadline = time.monotonic() + timeout
    written = _read_to_end(child.report, deadline)
    found = _last_json(written.splitlines()) if written is not None else None
    if found is not None:
        child.output.close()
        return found
    try:
        child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
    child.output.seek(0)
    lines = child.output.read().splitlines()
    child.output.close()
    return {"exit_status": child.process.returncode, "tail": lines[-3:]}


def _read_to_end(fd: int, deadline: float) -> str | None:
    """What comes through the pipe ``fd`` until every writer has closed it (then closed here too); None past ``deadline``."""
    chunks = []
    try:
        while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
        return None
    finally:
        os.close(fd)


def _last_json(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def main(argv: list[str] | None = None) -> None:
    """A child of :func:`start_compiling`: compile its share of :func:`conv_probes`, report one JSON line (:func:`report`)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--shard", required=True, help="i/n: run every n-th probe, starting at the i-th")
    shard, shards = (int(part) for part in parser.parse_args(argv).shard.split("/"))
    start, startup_s = time.perf_counter(), since_spawn(time.time())
    import torch

    if not torch.cuda.is_available():
        report({"shard": shard, "probes": 0, "skipped": "no CUDA GPU"})
        return
    path = cache_path()
    cache = json.loads(path.read_text()) if path.is_file() else {}
    probes = conv_probes(cache, torch.cuda.get_device_name())[shard::shards]
    ran = run_probes(probes)
    report({"shard": shard, "probes": ran, "seconds": round(time.perf_counter() - start, 2), "startup_s": startup_s})


if __name__ == "__main__":
    main()
