"""The worker's CPU threads (trellis_mv.threads): the container's cgroup quota, rounded down, within the
affinity mask; read from fake ``/proc/self/cgroup`` and ``/sys/fs/cgroup`` trees laid out in a tmp folder."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from helpers import b64, encode, noise
from processes import run_handler

from trellis_mv.threads import cgroup_cpu_quota, cpu_budget, on_a_thread

V2 = "0::/\n"
V2_NESTED = "0::/kubepods/pod1/worker\n"
V1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"

# (/proc/self/cgroup, files under sys/fs/cgroup, affinity, expected count, words in the reason)
CASES = [
    pytest.param(V2, {"cpu.max": "max 100000\n"}, 16, 16, "16 CPUs in the affinity mask, no cgroup CPU quota", id="v2-no-limit"),
    pytest.param(V2, {}, 8, 8, "no cgroup CPU quota", id="no-cgroup-files"),
    pytest.param(V2, {"cpu.max": "250000 100000\n"}, 16, 2, "cgroup quota of 2.5 CPUs (/sys/fs/cgroup/cpu.max), rounded down",
                 id="v2-2.5-cpus"),
    pytest.param(V2, {"cpu.max": "400000 100000\n"}, 16, 4, "quota of 4 CPUs", id="v2-whole-cpus"),
    pytest.param(V2, {"cpu.max": "50000 100000\n"}, 16, 1, "quota of 0.5 CPUs", id="v2-half-a-cpu-is-one-thread"),
    pytest.param(V2, {"cpu.max": "800000 100000\n"}, 3, 3, "3 CPUs in the affinity mask, within a cgroup quota of 8 CPUs",
                 id="affinity-smaller-than-quota"),
    pytest.param(V2, {"cpu.max": "250000 100000\n"}, 2, 2, "within a cgroup quota of 2.5 CPUs", id="affinity-2-quota-2.5"),
    pytest.param(V2_NESTED, {"kubepods/cpu.max": "600000 100000\n", "kubepods/pod1/cpu.max": "300000 100000\n",
                             "kubepods/pod1/worker/cpu.max": "max 100000\n"}, 32, 3,
                 "quota of 3 CPUs (/sys/fs/cgroup/kubepods/pod1/cpu.max)", id="v2-smallest-quota-above-the-process"),
    pytest.param("0::/host/path/not/mounted\n", {"cpu.max": "200000 100000\n"}, 32, 2, "quota of 2 CPUs",
                 id="v2-namespaced-mount-is-the-process-cgroup"),
    pytest.param(V1, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"}, 16, 1,
                 "quota of 1.5 CPUs (/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us)", id="v1-1.5-cpus"),
    pytest.param(V1, {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 6, 6,
                 "no cgroup CPU quota", id="v1-no-limit"),
    pytest.param(V2, {"cpu.max": "garbage\n"}, 4, 4, "no cgroup CPU quota", id="malformed"),
    pytest.param(V2, {"cpu.max": "100000 0\n"}, 4, 4, "no cgroup CPU quota", id="zero-period"),
]


def lay_out(root: Path, proc: str, files: dict[str, str]) -> None:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc)
    mount = root / "sys/fs/cgroup"
    mount.mkdir(parents=True)
    for name, text in files.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_text(text)


@pytest.mark.parametrize(("proc", "files", "affinity", "count", "reason"), CASES)
def test_cpu_budget(tmp_path, proc, files, affinity, count, reason):
    lay_out(tmp_path, proc, files)
    got, why = cpu_budget(root=tmp_path, affinity=affinity)
    assert (got, reason in why) == (count, True), why


def test_the_override_wins_over_every_quota(tmp_path):
    lay_out(tmp_path, V2, {"cpu.max": "100000 100000\n"})
    assert cpu_budget(6, root=tmp_path, affinity=2) == (6, "TRELLIS_MV_CPU_THREADS=6")


def test_an_unreadable_quota_file_counts_as_no_quota(tmp_path):
    lay_out(tmp_path, V2, {"cpu.max/inside": "a folder where the file should be: reading it fails"})
    assert cgroup_cpu_quota(tmp_path) is None
    assert cpu_budget(root=tmp_path, affinity=4) == (4, "4 CPUs in the affinity mask, no cgroup CPU quota")


def test_without_any_cgroup_tree_the_affinity_mask_decides(tmp_path):
    assert cpu_budget(root=tmp_path) == (len(os.sched_getaffinity(0)), f"{len(os.sched_getaffinity(0))} CPUs in the "
                                         "affinity mask, no cgroup CPU quota")


def test_the_worker_logs_its_threads_at_start(tmp_path):
    job = json.dumps({"input": {"images": [b64(encode(noise((32, 32))))], "pipeline_type": "512"}})
    done = run_handler("--test_input", job, cwd=tmp_path, TRELLIS_MV_GENERATOR="trellis_mv.standin:create",
                       TRELLIS_MV_CPU_THREADS="1")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "trellis_mv.threads: CPU threads: 1 (TRELLIS_MV_CPU_THREADS=1)" in log


def test_public_names():
    import trellis_mv.threads as threads

    assert threads.__all__ == ["CGROUP_MOUNT", "cgroup_cpu_quota", "cpu_budget", "on_a_thread", "use_cpu_budget"]


def test_a_function_on_a_thread_of_its_own_answers_through_its_future():
    named = on_a_thread("beside", lambda value: (threading.current_thread().name, value * 2), 21)
    assert named.result(timeout=10) == ("beside_0", 42)
    failed = on_a_thread("beside", int, "not a number")
    assert isinstance(failed.exception(timeout=10), ValueError)
