"""How many CPU threads this worker uses: the container's CPU quota, not the host's CPU count.

A container limited by a cgroup quota (``docker run --cpus 2.5``, Kubernetes ``limits.cpu``, a
RunPod pod's vCPUs) still sees every CPU of the host in ``os.cpu_count()``, and so does every library
that sizes a thread pool from it. Threads that together want more CPU time than the quota allows in
one scheduling period (100 ms by default) are all stopped until the period ends; a parallel phase
waits for its slowest thread, so it runs several times slower than with fewer threads.

``cpu_budget`` reads the quota the way the Linux scheduler applies it: cgroup v2 ``cpu.max`` or v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the process's cgroup and of every cgroup above it
(the smallest wins), bounded by the CPUs the process may run on (``os.sched_getaffinity``). A
fractional quota is rounded *down*: 2.5 CPUs give 2 threads, which can never outrun the quota, while
3 would be throttled in every period where all three are busy. ``TRELLIS_MV_CPU_THREADS`` overrides it.

``use_cpu_budget`` applies it once at start: torch's intra-op threads (``torch.set_num_threads``),
which the export's encoders follow (``export.run``), and one log line that says how many and why.
What it cannot bound: xatlas starts ``std::thread::hardware_concurrency()`` workers, which counts the
host's online CPUs and ignores both the quota and the affinity mask (glibc's ``get_nprocs``), and it
has no runtime setting (``XA_MULTITHREADED`` is a compile-time switch).

``on_a_thread`` runs one function on a thread of its own and answers its future: the start's work
begun beside it (imports, reads, the export's warm-up).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["CGROUP_MOUNT", "cgroup_cpu_quota", "cpu_budget", "on_a_thread", "use_cpu_budget"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CGROUP_MOUNT = Path("sys/fs/cgroup")  # relative to the filesystem root given to the functions
_V1_MOUNTS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")


def on_a_thread(name: str, function: Callable[..., T], *args: Any) -> Future[T]:
    """``function(*args)`` on a thread of its own, named ``name`` (and ``_0``); returns at once. The future
    answers what it returned or raises what it raised; the thread ends with it."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = pool.submit(function, *args)
    pool.shutdown(wait=False)
    return future


def cpu_budget(override: int | None = None, *, root: Path = Path("/"), affinity: int | None = None) -> tuple[int, str]:
    """The number of CPU threads to use and why, in words for the start-up log.

    ``root`` is the filesystem root under which ``proc/self/cgroup`` and ``sys/fs/cgroup`` are read
    (tests give a folder of fake files); ``affinity`` defaults to this process's affinity mask.
    """
    if override is not None:
        return override, f"TRELLIS_MV_CPU_THREADS={override}"
    cpus = len(os.sched_getaffinity(0)) if affinity is None else affinity
    quota = cgroup_cpu_quota(root)
    if quota is None:
        return cpus, f"{cpus} CPUs in the affinity mask, no cgroup CPU quota"
    limit, where = quota
    if cpus <= limit:
        return cpus, f"{cpus} CPUs in the affinity mask, within a cgroup quota of {limit:g} CPUs ({where})"
    count = max(1, math.floor(limit))
    return count, f"cgroup quota of {limit:g} CPUs ({where}), rounded down; {cpus} CPUs in the affinity mask"


def cgroup_cpu_quota(root: Path = Path("/")) -> tuple[float, str] | None:
    """The smallest CPU quota on this process's cgroup path, in CPUs, and the file it came from; None if none.

    Unreadable or malformed files count as no quota: a worker that cannot read them uses its affinity mask.
    """
    limits = [limit for directory in _cgroup_directories(root) if (limit := _quota_in(directory)) is not None]
    if not limits:
        return None
    cpus, path = min(limits)
    return cpus, f"/{path.relative_to(root)}"


def use_cpu_budget(override: int | None = None) -> int:
    """Give torch the budget's threads and log the count and its reason, once at start; returns the count."""
    import torch

    count, reason = cpu_budget(override)
    torch.set_num_threads(count)
    log.info("CPU threads: %d (%s)", count, reason)
    return count


def _cgroup_directories(root: Path) -> list[Path]:
    """The cgroup folders that limit this process, from its own up to the mount's root.

    ``/proc/self/cgroup`` names the process's path inside each hierarchy. Inside a container the
    mount usually *is* that cgroup (a cgroup namespace, or a bind mount of it), so a path that does
    not exist under the mount falls back to the mount's root.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    mount = root / CGROUP_MOUNT
    found = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2: the unified hierarchy
            base = mount
        elif "cpu" in controllers.split(","):
            base = next((mount / name for name in _V1_MOUNTS if (mount / name).is_dir()), None)
            if base is None:
                continue
        else:
            continue
        directory = base / path.strip().lstrip("/")
        directory = directory if directory.is_dir() else base
        found += [directory, *[parent for parent in directory.parents if parent.is_relative_to(base)]]
    return found


def _quota_in(directory: Path) -> tuple[float, Path] | None:
    """The quota set in one cgroup folder, in CPUs, with its file; None for none or unreadable."""
    try:
        if (directory / "cpu.max").exists():
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            path = directory / "cpu.max"
        elif (directory / "cpu.cfs_quota_us").exists():
            quota = (directory / "cpu.cfs_quota_us").read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
            path = directory / "cpu.cfs_quota_us"
        else:
            return None
        if quota == "max" or int(quota) < 0:
            return None
        return int(quota) / int(period), path
    except (OSError, ValueError, ZeroDivisionError):
        return None
