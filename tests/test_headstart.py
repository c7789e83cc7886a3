"""A worker's start, the CPU halves: the head start, the kernel probes, lazy imports, the warm-up's shells.

What runs on the GPU (the probes themselves, the warm-up, the load) is measured by
benchmarks/cold_start.py and benchmarks/first_job.py on the device; here: which probes FlexGEMM's
cache asks for (the committed H200 entries and tables), the head start's reading and child
processes for real, and that nothing heavy is imported before the head start begins.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from weights_trees import repo_files, write_folder

from trellis_mv.config import Settings
from trellis_mv.headstart import ENCODER_IMPORTS, HeadStart, begin, compile_processes, gpu_visible, import_ahead
from trellis_mv.pipeline.prefetch import can_read_direct
from trellis_mv.pipeline import kernels
from trellis_mv.pipeline.kernels import DISPATCH, OWN, Compiling, ConvProbe, conv_probes, start_compiling, tuning_probes
from trellis_mv.pipeline.warm import shell_coords

ROOT = Path(__file__).resolve().parent.parent
H200 = json.loads((ROOT / "builder" / "flex_gemm_autotune" / "nvidia-h200.json").read_text())
KERNELS = "flex_gemm.kernels.triton.spconv."
PLAIN = KERNELS + "sparse_submanifold_conv_fwd_masked_implicit_gemm.sparse_submanifold_conv_fwd_masked_implicit_gemm_kernel"
SPLIT = (KERNELS + "sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk."
         "sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk_kernel")
FP16 = "'torch.float16', 'torch.float16', 'torch.float16', 'torch.uint32', 'torch.int64'"


def _config(b1: int) -> dict:
    return {"kwargs": {"B1": b1, "B2": 128, "BK": 32}, "num_warps": 4, "num_stages": 4}


def _cache(dispatch: dict[str, dict], plain: dict[str, dict], split: dict[str, dict] | None = None) -> dict:
    return {"GPU": {DISPATCH: dispatch, PLAIN: plain, SPLIT: split or {}}}


@pytest.mark.parametrize(("cache", "probes"), [
    # two keys of one configuration compile one kernel: the smaller is probed, N divisible by 16 and not
    (_cache({"(2^14, 512, 512, 27)": {}, "(2^15, 512, 512, 27)": {"SPLITK": 1}},
            {f"(14, 512, 512, 27, True, {FP16}, 'torch.float16')": _config(64),
             f"(15, 512, 512, 27, True, {FP16}, 'torch.float16')": _config(64)}),
     [(512, 512, 2**14), (512, 512, 2**14 + 1)]),
    # another configuration, and log2 N = 16 (divisible by 16: Triton specialises it), are kernels of their own
    (_cache({"(2^14, 512, 512, 27)": {}, "(2^15, 256, 256, 27)": {}, "(2^16, 256, 256, 27)": {}},
            {f"(14, 512, 512, 27, True, {FP16}, 'torch.float16')": _config(64),
             f"(15, 256, 256, 27, True, {FP16}, 'torch.float16')": _config(128),
             f"(16, 256, 256, 27, True, {FP16}, 'torch.float16')": _config(128)}),
     [(512, 512, 2**14), (512, 512, 2**14 + 1), (256, 256, 2**15), (256, 256, 2**15 + 1), (256, 256, 2**16),
      (256, 256, 2**16 + 1)]),
    # split-K: the split kernel's entry for that SPLITK, not the plain kernel's
    (_cache({"(2^12, 1024, 1024, 27)": {"SPLITK": 8}}, {f"(12, 1024, 1024, 27, True, {FP16}, 'torch.float16')": _config(64)},
            {f"(12, 1024, 1024, 27, 8, True, {FP16}, 'torch.float32')": _config(128)}),
     [(1024, 1024, 2**12), (1024, 1024, 2**12 + 1)]),
    # a key FlexGEMM has not tuned is still probed (the probe tunes it); no entries for the GPU: nothing
    (_cache({"(2^13, 64, 64, 27)": {}}, {}), [(64, 64, 2**13), (64, 64, 2**13 + 1)]),
    ({"Other GPU": {}}, []),
])
def test_probes_compile_each_kernel_variant_once(cache, probes):
    assert conv_probes(cache, "GPU") == [ConvProbe(*probe) for probe in sorted(probes, key=lambda p: (p[2], p[0], p[1]))]


def test_the_committed_h200_entries_ask_for_few_probes_covering_every_key():
    """Every dispatcher key of ours is in the bucket of a probe of its shape or of one sharing its kernel variant."""
    probes = conv_probes(H200, "NVIDIA H200")
    assert 0 < len(probes) <= 24 and len(probes) % 2 == 0
    assert all(probe.tokens <= 2**20 + 1 for probe in probes)  # the cheapest key of each variant
    assert {probe.tokens % 16 == 0 for probe in probes} == {True, False}
    assert conv_probes(H200, "NVIDIA A100") == []


class SparseConv3d(torch.nn.Module):
    """Named like trellis2's: weight ``(Co, 3, 3, 3, Ci)``."""

    def __init__(self, ci: int, co: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(co, 3, 3, 3, ci))


def test_tuning_covers_every_conv_at_every_bucket_of_its_level():
    decoder = torch.nn.Module()
    decoder.model_channels = [64, 32, 16]
    decoder.convs = torch.nn.ModuleList([SparseConv3d(64, 64), SparseConv3d(64, 256), SparseConv3d(32, 32),
                                         SparseConv3d(32, 128), SparseConv3d(16, 16), SparseConv3d(16, 16)])
    probes = tuning_probes(decoder, (9, 11))
    buckets = {}
    for probe in probes:
        assert probe.tokens % 16 != 0
        buckets.setdefault((probe.ci, probe.co), []).append(int(math.log2(probe.tokens)))
    assert buckets == {(64, 64): [9, 10, 11], (64, 256): [9, 10, 11], (32, 32): [11, 12, 13], (32, 128): [11, 12, 13],
                       (16, 16): [13, 14, 15]}


@pytest.mark.parametrize(("cpus", "processes"), [(1, 1), (2, 1), (8, 4), (16, 8), (128, 8)])
def test_half_the_cpus_compile_at_most_eight(cpus, processes):
    assert compile_processes(cpus) == processes


def test_a_gpu_is_visible_by_its_device_node(tmp_path):
    assert not gpu_visible(str(tmp_path / "nvidia[0-9]*"))
    (tmp_path / "nvidia0").touch()
    assert gpu_visible(str(tmp_path / "nvidia[0-9]*"))


def _weights(root: Path) -> Settings:
    write_folder(root, repo_files(), revision_of=lambda repo: None)
    return Settings(model_dir=str(root / "TRELLIS.2-4B"), background_model=str(root / "BiRefNet"))


def test_the_head_start_reads_the_page_cache_files_and_starts_no_compiles_without_a_gpu(tmp_path):
    """The encoders' files, and the models' where the file system refuses reads past the page cache
    (``prefetch.page_cache_files``: the loader reads the others itself)."""
    read = threading.Event()
    said: list[str] = []

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "the weights read" in record.getMessage():
                said.append(record.getMessage())
                read.set()

    listener, logger = Listener(), logging.getLogger("trellis_mv.headstart")
    level = logger.level
    logger.addHandler(listener)
    logger.setLevel(logging.INFO)
    try:
        head = begin(_weights(tmp_path))
        files = [path for path in tmp_path.rglob("*.safetensors")
                 if path.parent.name != "ckpts" or not can_read_direct(path)]
        assert sorted(head.reading) == sorted(files)
        assert head.bytes == sum(path.stat().st_size for path in files) > 0
        assert sum(piece.result(timeout=10) for pieces in head.reading.values() for piece in pieces) == head.bytes
        assert read.wait(timeout=10)  # logged once the last piece is in: what benchmarks/cold_start.py marks
    finally:
        logger.removeHandler(listener)
        logger.setLevel(level)
    assert said == [said[0]] and said[0].startswith("head start: the weights read, ")
    assert head.compiling is None or gpu_visible()


def test_waiting_for_a_read_returns_once_the_file_or_every_file_of_a_folder_is_read(tmp_path):
    encoder, flow = tmp_path / "dinov3" / "model.safetensors", tmp_path / "ckpts" / "flow.safetensors"
    pieces = {encoder: [Future(), Future()], flow: [Future()]}
    head = HeadStart(reading=pieces)
    head.wait_read(tmp_path / "ckpts" / "not_read_ahead.safetensors")  # at once
    with ThreadPoolExecutor(max_workers=2) as pool:
        folder, file = pool.submit(head.wait_read, tmp_path / "dinov3"), pool.submit(head.wait_read, flow)
        pieces[encoder][0].set_result(1)
        pieces[flow][0].set_exception(OSError("gone"))  # left to the loader's own read, which names the file
        assert file.result(timeout=10) is None
        assert not folder.done()  # one of its pieces is still being read
        pieces[encoder][1].set_result(1)
        assert folder.result(timeout=10) is None


def test_the_encoders_imports_begun_ahead_import_their_lazy_classes_and_leave_a_failure_to_the_loader():
    assert import_ahead(*ENCODER_IMPORTS).result(timeout=60) is None
    # the lock's transformers: each name resolved imports its model's module, which the loader's encoders use
    assert {"transformers.models.dinov3_vit.modeling_dinov3_vit", "transformers.models.auto.modeling_auto"} <= set(sys.modules)
    failed = import_ahead("trellis_mv_no_such_module", ("anything",))
    HeadStart(importing=failed).wait_imported()  # returns: the loader's own import raises, where the start reports it
    assert isinstance(failed.exception(timeout=10), ModuleNotFoundError)
    HeadStart().wait_imported()  # none begun (no GPU, a stand-in): at once


@pytest.mark.parametrize("settings", [Settings(generator="trellis_mv.standin:create"),
                                      Settings(model_dir="/nonexistent/TRELLIS.2-4B")])
def test_the_head_start_leaves_a_stand_in_alone_and_missing_weights_to_the_checks(settings):
    head = begin(settings)
    assert head.reading == {} and head.bytes == 0
    assert settings.generator is None or head.importing is None


@pytest.mark.timeout(120)
def test_compiling_children_report_and_need_a_gpu():
    """The real child processes (two shards and ours): on a machine without CUDA each says so, and
    ``wait`` collects those named, once each."""
    compiling = start_compiling(2)
    assert compiling.shards() == ("shard 0/2", "shard 1/2") and OWN in compiling.processes
    own = compiling.wait(OWN, timeout=100)
    assert own["processes"] == 1 and own["failed"] == []
    report = compiling.wait(timeout=100)
    assert report["processes"] == 3 and report["failed"] == [] and report["probes"] == 0
    assert compiling.wait(OWN, timeout=0)["failed"] == []  # joined already: its report, not a second wait
    stopped = start_compiling(1, own=False)
    stopped.kill()
    assert stopped.wait(timeout=10)["failed"][0] == {"child": "shard 0/1", "exit_status": -9, "tail": []}


def test_a_child_is_done_when_it_reports_not_when_it_exits():
    """The report comes through its pipe while the child still runs (a child's teardown took seconds
    beside the load); a child that ends without one is reported by its exit status and last lines."""
    lingering = [sys.executable, "-c", "import signal; from trellis_mv.pipeline.kernels import report; "
                 "report({'probes': 3, 'seconds': 1.5}); signal.pause()"]
    dying = [sys.executable, "-c", "print('compiling'); raise SystemExit(3)"]
    compiling = Compiling({name: kernels._spawn(name, command, os.environ)
                           for name, command in (("lingering", lingering), ("dying", dying))}, 0.0)
    try:
        assert compiling.wait("lingering", timeout=60)["probes"] == 3
        assert compiling.processes["lingering"].process.poll() is None
        assert compiling.wait("dying", timeout=60)["failed"] == [{"child": "dying", "exit_status": 3, "tail": ["compiling"]}]
    finally:
        compiling.kill()


def test_nothing_heavy_is_imported_before_the_head_start_begins():
    """``python handler.py`` imports the standard library and small modules before ``begin``: no torch, no runpod."""
    code = ("import sys, handler, trellis_mv.headstart, trellis_mv.pipeline; "
            "heavy = sorted({'torch', 'runpod', 'transformers', 'trimesh', 'boto3'} & set(sys.modules)); "
            "sys.exit(f'imported before the head start: {heavy}' if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("grid", "tokens"), [(32, 1_000), (32, 4_600), (64, 19_500), (64, 39_000)])
def test_warm_up_shells_hold_about_the_tokens_asked_for(grid, tokens):
    coords = shell_coords(grid, tokens)
    assert abs(coords.shape[0] - tokens) < 0.15 * tokens
    assert coords[:, 0].eq(0).all() and coords[:, 1:].max() < grid and coords.dtype == torch.int32
