"""One benchmarks/results.json and one BENCHMARKS.md from a device run (tests/gpu/device_run.sh's files).

    python benchmarks/report.py RUN_DIR...

Each RUN_DIR is the folder one device call's files were fetched into (a later one wins where two
measured the same key of a part, e.g. one GPU test's record): ``results.tgz`` (every phase's small files:
``bench/results.json`` from benchmarks/run.py, ``gpu_results.json`` from tests/gpu,
``first_job.json``, ``cold_start.json``, ``env.json``, the logs) and the ``glbs.tgz.NN`` parts,
which go through the Khronos validator here (benchmarks/validate_glbs.py; needs ``npm ci``).
What the run did not measure is kept from the current benchmarks/results.json; each section of
BENCHMARKS.md names the run it comes from, and ``sources`` in results.json gives each part's device
call (date, GPU, commit): a figure comes from one part of one call, never from two.

The device goals are set on :data:`GOAL_GPU`. A call on another GPU (its env.json says which) adds
to ``other_gpus`` in results.json, that GPU's figure of each device goal with its call, judged
against the same goal; it changes nothing of the goal GPU's figures (its GLBs are not validated
here: benchmarks/validate_glbs.py checks them by hand).
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any

import cold_start
import first_job
import ratios
import run
import unwrap_report
import validate_glbs

ROOT = Path(__file__).resolve().parent.parent
# issues 11 and 19's keys: (comparison, goal, what it is); a goal given as a key name is that key's value;
# "each <=" holds a mapping (per pipeline type) to the goal, "is" a boolean.
DEVICE_GOALS = {
    "default_glb_validator_errors": ("<=", 0, "Khronos validator errors, summed over the default-request GLBs"),
    "glb_bytes_1024_cascade_default": ("<=", 8_000_000, "bytes of the default GLB (1024_cascade, 1 view)"),
    "export_over_generate_1024_cascade": ("<=", 0.5, "export step / generate step, warm, default request, 1 view"),
    "first_job_penalty_s": ("<=", 2.0, "a fresh worker's first default job minus its second (our entries, warm-up)"),
    "first_job_penalty_s_by_pipeline_type": ("each <=", 2.0, "the same per pipeline type, each a fresh worker"),
    "cold_start_s": ("<=", "cold_start_read_bound_s",
                     "launch of handler.py to ready, warm-up included, full-size weights, cold page cache"),
    "gpu_soak_jobs": (">=", 20, "jobs of the GPU soak (pipeline types, 1-4 views, modes)"),
    "gpu_soak_lost": ("<=", 0, "jobs of the GPU soak that answered no GLB"),
    "gpu_soak_max_drift_gib": ("<=", 0.5, "GPU memory allocated after a soak job above the baseline, the largest"),
    "gpu_oom_refresh_worker": ("is", True, "a forced CUDA out-of-memory is answered with refresh_worker"),
    "gpu_oom_next_job_ok": ("is", True, "the job after it, in the same process, answers a GLB"),
    "gpu_oom_drift_gib": ("<=", 0.05, "GPU memory the failed job left allocated, before any garbage collection"),
}
# issue 20: our closest points (trellis_mv/export/closest.py) against CuMesh's cuBVH (tests/gpu/test_export_gpu.py)
CLOSEST = ("closest_vs_cubvh_max_abs", "closest_build_s", "closest_query_s", "cubvh_build_s", "cubvh_query_s")
# issue 20's keys (tests/gpu/test_raster_gpu.py): our rasterizer against nvdiffrast in the bake
BAKE_KEYS = ("bake_seconds_own", "bake_seconds_nvdiffrast", "bake_own_vs_nvdiffrast_mean_abs", "bake_peak_gib_own",
             "bake_peak_gib_nvdiffrast")
REPORTED = ("cold_start_read_s", "cold_start_read_bound_s", *CLOSEST)
FROM_TESTS = ("glb_bytes_1024_cascade_default", "export_over_generate_1024_cascade", "gpu_soak_jobs", "gpu_soak_lost",
              "gpu_soak_max_drift_gib", "gpu_oom_refresh_worker", "gpu_oom_next_job_ok", "gpu_oom_drift_gib", *CLOSEST,
              *BAKE_KEYS)
# the GPU the device goals are set on (issue 19); another GPU's figures are kept apart from its
GOAL_GPU = "NVIDIA H200"
# the part of a device run each device goal comes from
PART_OF = {**{key: "tests" for key in (*FROM_TESTS, "default_glb_validator_errors")},
           "first_job_penalty_s": "first_job", "first_job_penalty_s_by_pipeline_type": "first_job",
           "cold_start_s": "cold_start"}


def read_runs(run_dirs: list[Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Several calls' parts, key by key (later calls win), and the call each part, and each GPU-test key, came from."""
    found: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for run_dir in run_dirs:
        parts = read_run(run_dir)
        for part, value in parts.items():
            earlier = found.get(part, {})
            # the GPU tests key by key, the benchmark rows by label (each keeps its own invocation, ratios
            # pair rows of one); a cold start or a first job is one call's, whole
            found[part] = {**earlier, **value} if part in ("tests", "bench") else value
            if part == "bench":
                found[part]["runs"] = merged_runs(earlier.get("runs", []), value.get("runs", []), by_invocation=True)
            if "env" in parts and part != "env":
                sources[part] = {key: parts["env"].get(key) for key in ("date", "gpu", "commit")}
                if part == "tests":
                    sources.setdefault("tests_by_key", {}).update(dict.fromkeys(value, sources[part]))
        if "cold_start" in parts:
            found.setdefault("cold_start_history", []).append(cold_start_row(parts["cold_start"], parts.get("env", {})))
    return found, sources


def gpu_of(run_dir: Path) -> str:
    """The GPU a call ran on, by name (env.json's ``gpu`` up to its first comma); the goal GPU's where it says none."""
    return str(read_run(run_dir).get("env", {}).get("gpu") or GOAL_GPU).split(",")[0].strip()


def other_gpus(base: dict[str, Any], run_dirs: dict[str, list[Path]]) -> dict[str, Any]:
    """``other_gpus``: per GPU, each device goal's figure from that GPU's calls (``run_dirs``), with its
    call, goal and verdict; figures of earlier calls kept where these calls did not measure the key."""
    out = {gpu: dict(figures) for gpu, figures in base.get("other_gpus", {}).items()}
    for gpu, dirs in run_dirs.items():
        found, sources = read_runs(dirs)
        measured = merge({}, found, None, sources)
        for key, figure in measured.get("figures", {}).items():
            if key in DEVICE_GOALS:
                bound, met = goal_met(measured, key)
                out.setdefault(gpu, {})[key] = {**figure, "goal": bound, "met": met}
    return out


def cold_start_row(cold: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """One call's cold start in a line of the history: the call, the disk, the goal, and where the time went."""
    phases = cold.get("phases_s", {})
    return {"date": env.get("date"), "commit": env.get("commit") or cold.get("commit"),
            "read_gb_per_s": cold.get(f"read_{cold.get('cold_start_read_basis', 'sequential')}_gb_per_s"),
            "settled": bool(cold.get("page_cache_before_launch", {}).get("settled")),
            "bound_s": cold.get("cold_start_read_bound_s"),
            "cold_start_s": cold.get("cold_start_s"), "imports_s": phases.get("imports, CUDA check"),
            "load_s": phases.get("load_pipeline"),
            "warm_up_s": round(sum(warm), 2) if (warm := [v for k, v in phases.items() if k.startswith("warm-up")]) else None,
            "weights_read_s": cold.get("handler", {}).get("marks", {}).get("weights_read")}


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run's small files by name (parsed JSON), from ``results.tgz`` or loose in ``run_dir``.

    The archive's files are read where they are, never extracted: nothing in it can write outside a
    folder, on any Python (tarfile's extraction filters came with 3.11.4).
    """
    names = {"bench": "bench/results.json", "tests": "gpu_results.json", "first_job": "first_job.json",
             "cold_start": "cold_start.json", "env": "env.json"}
    archive = run_dir / "results.tgz"
    if archive.is_file():
        with tarfile.open(archive) as files:
            found = {member.name.removeprefix("./"): member for member in files.getmembers() if member.isfile()}
            return {key: json.load(files.extractfile(found[name])) for key, name in names.items() if name in found}
    return {key: json.loads((run_dir / name).read_text()) for key, name in names.items() if (run_dir / name).is_file()}


def merge(base: dict[str, Any], found: dict[str, Any], checks: dict[str, Any] | None,
          sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The new results.json: the run's parts where it measured them, ``base``'s elsewhere; headline keys on top.

    ``sources`` names the device call (its env.json) each part of ``found`` came from, and under
    ``tests_by_key`` the call of each GPU-test key (the tests part merges several calls key by key).
    """
    bench = found.get("bench")
    results = {**bench, "runs": merged_runs(base.get("runs", []), bench.get("runs", []))} if bench else dict(base)
    # key by key: a call that ran some GPU tests keeps the records of the others (each names its call)
    results["gpu_tests"] = {**base.get("gpu_tests", {}), **found.get("tests", {})}
    for part, key in (("first_job", "first_job"), ("cold_start", "cold_start"), ("env", "device_run")):
        value = found.get(part, base.get(key))
        if value is not None:
            results[key] = value
    new_rows = found.get("cold_start_history", [])
    calls = {(row["date"], row["commit"]) for row in new_rows}
    results["cold_start_history"] = [row for row in base.get("cold_start_history", [])
                                     if (row["date"], row["commit"]) not in calls] + new_rows
    earlier, now = base.get("sources", {}), sources or {}
    results["sources"] = {**earlier, **now,
                          "tests_by_key": {**earlier.get("tests_by_key", {}), **now.get("tests_by_key", {})}}
    tests = results["gpu_tests"]
    if checks is not None:
        # file by file: a call whose GLBs hold no default-request one leaves the earlier defaults' checks
        tests["glb_validation"] = {**base.get("gpu_tests", {}).get("glb_validation", {}), **checks["glbs"]}
        results["glb_archive"] = checks["archive"]
        defaults = [check for name, check in tests["glb_validation"].items() if name.startswith("default_")]
        results["default_glb_validator_errors"] = sum(check["errors"] for check in defaults) if defaults else None
    for key in FROM_TESTS:
        if key in tests:
            results[key] = tests[key]
    results.update(unwrap_report.lift(tests))
    for key in ("first_job_penalty_s", "first_job_penalty_s_by_pipeline_type"):
        results.pop(key, None)
    results.update(first_job_keys(results.get("first_job", {})))
    if "cold_start" in results:
        # all three from one call: where its worker did not start, no earlier call's time against its bound
        for key in ("cold_start_s", "cold_start_read_s", "cold_start_read_bound_s"):
            results[key] = results["cold_start"].get(key)
    if "1" in tests.get("parity_fp32_512_max_abs", {}):
        results["parity_fp32_512_max_abs"] = max(tests["parity_fp32_512_max_abs"]["1"].values())
    ratios.apply_headline(results)
    validated_now = checks is not None and any(name.startswith("default_") for name in checks["glbs"])
    measured_now = {*found.get("tests", {}), *(["default_glb_validator_errors"] if validated_now else [])}
    for key in PART_OF:
        kept = base.get("figures", {}).get(key)
        if PART_OF[key] == "tests" and key not in measured_now and kept and kept.get("value") == results.get(key):
            results["figures"][key] = kept  # measured by an earlier call: its call, not the newest tests call's
        elif key in results and (call := source_of(results, key)):
            results["figures"][key] = {"value": results[key], **call}
    return results


def merged_runs(earlier: list[dict[str, Any]], later: list[dict[str, Any]], *, by_invocation: bool = False
                ) -> list[dict[str, Any]]:
    """Benchmark rows: ``later``'s, and ``earlier``'s of labels ``later`` lacks (``by_invocation``: of
    (label, invocation) pairs it lacks, so that two calls' rows of one label both stay, each for its own
    call's ratios)."""
    def key(row: dict[str, Any]) -> tuple:
        return (row["label"], row.get("measured")) if by_invocation else (row["label"],)

    replaced = {key(row) for row in later}
    return [row for row in earlier if key(row) not in replaced] + later


def source_of(results: dict[str, Any], key: str) -> dict[str, Any]:
    """The device call that measured a device goal's key: its own for a GPU-test key, else its part's."""
    sources = results.get("sources", {})
    return sources.get("tests_by_key", {}).get(key) or sources.get(PART_OF.get(key, ""), {})


def first_job_keys(first: dict[str, Any]) -> dict[str, Any]:
    """``first_job_penalty_s`` (and per pipeline type) from first_job.json, as first_job.py writes it now or did."""
    worker = first.get("variants", {}).get(first_job.WORKER_VARIANT, {})
    if "penalty_s" in worker:  # before issue 19: one process, 1024_cascade
        return {"first_job_penalty_s": worker["penalty_s"]}
    return first_job.penalties(first)


def goal_met(results: dict[str, Any], key: str) -> tuple[Any, str]:
    """The goal's value and ``yes``/``no``/``—`` (not measured) for one of :data:`DEVICE_GOALS`."""
    compare, goal, _what = DEVICE_GOALS[key]
    bound = results.get(goal) if isinstance(goal, str) else goal
    value = results.get(key)
    if value is None or bound is None:
        return bound, "—"
    met = {"<=": lambda: value <= bound, ">=": lambda: value >= bound, "is": lambda: value is bound,
           "each <=": lambda: bool(value) and all(v <= bound for v in value.values())}[compare]()
    return bound, "yes" if met else "no"


def render(results: dict[str, Any]) -> str:
    """BENCHMARKS.md: benchmarks/run.py's part, then the default request, first job, cold start, the unwrap, GPU tests."""
    env = results.get("device_run", {})
    source = (f"Device run at commit `{env['commit']}`, {env['date']}, on {env['gpu']} (tests/gpu/device_run.sh; "
              "docs/gpu-testing.md)." if env else "No device run has measured these yet (docs/gpu-testing.md).")
    lines = [run.render(results).rstrip("\n"), "", "## The default job, first jobs, cold start, faults (issues 11, 19)",
             "", source, "", "| key | measured | goal | met | what | device call |", "|---|---|---|---|---|---|"]
    for key, (compare, _, what) in DEVICE_GOALS.items():
        bound, met = goal_met(results, key)
        shown = _measured(key, results.get(key), measured=bool(results.get("cold_start")))
        lines.append(f"| `{key}` | {shown} | {_COMPARE[compare]} {_value(bound)} | {met} | {what} | "
                     f"{_call(results.get('figures', {}).get(key) or source_of(results, key))} |")
    lines += [f"- `{key}`: {_value(results.get(key))}" for key in REPORTED]
    lines += _default_section(results) + _first_job_section(results.get("first_job", {}))
    lines += (_cold_start_section(results.get("cold_start", {})) + _cold_start_history(results.get("cold_start_history", []))
              + unwrap_report.section(results) + _raster_section(results))
    lines += _tests_section(results.get("gpu_tests", {})) + _other_gpus_section(results.get("other_gpus", {}))
    return "\n".join(lines) + "\n"


def _other_gpus_section(gpus: dict[str, Any]) -> list[str]:
    if not gpus:
        return []
    lines = ["", f"## Other GPUs (the device goals above are the {GOAL_GPU}'s)", "",
             "The same goals, measured by the same scripts on another GPU; each figure names its call.", "",
             "| GPU | key | measured | goal | met | device call |", "|---|---|---|---|---|---|"]
    for gpu, figures in gpus.items():
        for key in (key for key in DEVICE_GOALS if key in figures):
            figure = figures[key]
            shown = _measured(key, figure.get("value"), measured=True)  # a figure is a call's measurement
            lines.append(f"| {gpu} | `{key}` | {shown} | {_COMPARE[DEVICE_GOALS[key][0]]} {_value(figure.get('goal'))} | "
                         f"{figure.get('met', '—')} | {_call(figure)} |")
    return lines


_COMPARE = {"<=": "≤", ">=": "≥", "is": "=", "each <=": "each ≤"}


def _measured(key: str, value: Any, *, measured: bool) -> str:
    """A device goal's measured cell: JSON for a mapping; a cold start a call ``measured`` without a time did not start."""
    if key == "cold_start_s" and value is None and measured:
        return "did not start"
    return json.dumps(value) if isinstance(value, dict) else _value(value)


def _value(value: Any) -> str:
    return "not measured" if value is None else str(value)


def _call(env: dict[str, Any]) -> str:
    return f"{env.get('date')}, `{env.get('commit')}`" if env else "—"


def _verdict(check: dict[str, Any] | None) -> str:
    return "not run" if check is None else f"{check['errors']} errors, {check['warnings']} warnings"


def _default_section(results: dict[str, Any]) -> list[str]:
    tests = results.get("gpu_tests", {})
    cases = {key[len("default_"):]: entry for key, entry in tests.items() if key.startswith("default_") and isinstance(entry, dict)}
    if not cases:
        return []
    checks = tests.get("glb_validation", {})
    lines = ["", "### Default request (tests/gpu/test_default_job.py, warm, seconds)", "",
             "| case | views | pipeline | request beside the images | job | generate | export | bytes | faces | validator |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for case, entry in cases.items():
        t = entry["timings"]
        lines.append(f"| {case} | {entry['views']} | {entry['pipeline_type']} | `{json.dumps(entry['request'])}` | "
                     f"{t.get('total')} | {t.get('generate')} | {t.get('export')} | {entry['bytes']} | "
                     f"{entry['mesh']['faces']} | {_verdict(checks.get(f'default_{case}.glb'))} |")
    archive = results.get("glb_archive", {})
    if archive.get("cut_short"):
        lines += ["", f"The GLB archive came back cut short (the device tool's 64 MiB cap): lost at {archive.get('lost_at')}."]
    return lines


def _first_job_section(first: dict[str, Any]) -> list[str]:
    if not first.get("variants"):
        return []
    lines = ["", "### First job vs second (benchmarks/first_job.py, a fresh process each, seconds)", "",
             f"Jobs: one photo, default generation, `glb` {json.dumps(first.get('glb'))}.", "",
             "| variant | pipeline | FlexGEMM entries | load | warm-up | first job | second job | penalty | "
             "first generate | second generate | first export | second export | tuned in first / second job |",
             "|" + "---|" * 13]
    for name, runs in first["variants"].items():
        # before issue 19 a variant was one 1024_cascade process; now one process per pipeline type
        for kind, v in ({"1024_cascade": runs}.items() if "penalty_s" in runs else runs.items()):
            if "first" not in v:
                lines.append(f"| {name} | {kind} | {json.dumps(v)} |" + " |" * 10)
                continue
            a, b = v["first"]["timings"], v["second"]["timings"]
            tuned = {job: v[job].get("flexgemm_tuned", "—") for job in ("first", "second")}  # recorded since 2026-12-05
            lines.append(f"| {name} | {kind} | {v['flexgemm_entries']} | {v['load_s']} | {v.get('warmup_s', '—')} | "
                         f"{a['total']} | {b['total']} | {v['penalty_s']} | {a['generate']} | {b['generate']} | "
                         f"{a['export']} | {b['export']} | {tuned['first']} / {tuned['second']} |")
    warm = {kind: v["warmup"] for kind, v in first["variants"].get(first_job.WORKER_VARIANT, {}).items()
            if isinstance(v, dict) and isinstance(v.get("warmup"), dict)}
    if warm:
        lines += ["", "The warm-up's parts in those processes (seconds; `kernels` is the wait for the compiling "
                  "children, who started before the load):", ""]
        lines += [f"- {kind}: {json.dumps(parts)}" for kind, parts in warm.items()]
    return lines


def _cold_start_section(cold: dict[str, Any]) -> list[str]:
    if not cold:
        return []
    fs = cold.get("filesystem", {})
    lines = ["", "### Cold start (benchmarks/cold_start.py)", "",
             f"{cold.get('bytes')} bytes in {cold.get('files')} weight files on {fs.get('type')} ({fs.get('mount')}), "
             f"written in {cold.get('write_weights_s')} s. Read one file after another, 16 MiB at a time: "
             f"{cold.get('read_sequential_gb_per_s')} GB/s right after dropping the page cache"
             + (f", {cold['read_settled_gb_per_s']} GB/s from a settled one "
                f"({json.dumps(cold.get('page_cache_before_settled_read'))})" if "read_settled_gb_per_s" in cold else "")
             + (f", {cold['read_direct_gb_per_s']} GB/s past it (`O_DIRECT`, one reused buffer)"
                if "read_direct_gb_per_s" in cold else "")
             + f"; the bound is made of the {cold.get('cold_start_read_basis', 'sequential')} read. "
             f"Page cache before the launch: {json.dumps(cold.get('page_cache_before_launch'))}.", "",
             f"Launch to ready: {_seconds(cold.get('cold_start_s'))} against a read bound of {cold.get('cold_start_read_bound_s')} s "
             f"({cold.get('cold_start_read_s')} s of reading + 10 s: the goal of DESIGN.md, ready within the weights' "
             f"reading time + 10 s, the warm-up included); "
             f"the handler answered its job: {'answered' in cold.get('handler', {}).get('marks', {})}.", "",
             "| phase | seconds |", "|---|---|"]
    lines += [f"| {phase} | {seconds} |" for phase, seconds in cold.get("phases_s", {}).items()]
    packages = cold.get("packages")
    if packages:
        versions = ", ".join(f"{name} {version or 'absent'}" for name, version in packages.items()
                             if name not in ("python", "distributions"))
        lines += ["", f"The worker's Python: `{packages.get('python')}`, {packages.get('distributions')} distributions "
                  f"({versions})."]
    marks = cold.get("handler", {}).get("marks", {})
    reads = {name: marks[name] for name in cold_start.READS.values() if name in marks}
    if reads:
        lines += ["", "The head start's reads ended at " + ", ".join(f"{name} {seconds} s" for name, seconds in reads.items())
                  + " from launch."]
    return lines + _side_by_side(cold.get("side_by_side", {}))


def _side_by_side(side: dict[str, Any]) -> list[str]:
    """``cold_start.py --baseline``'s launches: this version's and the others', on one disk, in one call; per launch
    the marks that place a change (the imports' end at the CUDA check, the load's start after the checks, its end)."""
    if not side:
        return []
    lines = ["", "Side by side in the same call (`--baseline`), each launch from a dropped page cache, seconds from launch:", "",
             "| version | commit | round | ready | CUDA checked | load began | weights read at | loaded | warm-up after the load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, version in side.items():
        for launched in version["launches"]:
            marks = launched["marks"]
            after = (round(marks["ready"] - marks["loaded"], 2) if "ready" in marks and "loaded" in marks else None)
            cells = [name, f"`{version['commit']}`", launched["round"], marks.get("ready", "did not start"),
                     marks.get("cuda_checked"), marks.get("weights_checked"), marks.get("weights_read"), marks.get("loaded"), after]
            lines.append(_row(cells))
    medians = ", ".join(f"{name} ({version['commit']}) {_seconds(version['median_ready_s'])}" for name, version in side.items())
    return lines + ["", f"Median time to ready: {medians}."]


def _seconds(value: float | None) -> str:
    """A median of launches as the table gives launches (3 decimals; earlier runs kept the float's noise)."""
    return "did not start" if value is None else f"{round(value, 3)} s"


def _row(cells: list[Any]) -> str:
    """A markdown table row of ``cells``, a dash where a value is missing."""
    return "| " + " | ".join("—" if cell is None else str(cell) for cell in cells) + " |"


def _cold_start_history(rows: list[dict[str, Any]]) -> list[str]:
    """Every cold start the report has seen, one device call a row: the goal moves with each call's disk."""
    if not rows:
        return []
    lines = ["", "Every cold start measured, one device call a row (seconds from launch; the read bound is that "
             "call's disk: its reading time + 10 s; `settled`: the read and the launch began from a settled page "
             "cache, see benchmarks/cold_start.py; `warm-up` is what ran after the load):", "",
             "| date | commit | disk GB/s | settled | read bound | ready | over the bound | imports, CUDA check | load | warm-up | weights read at |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        over = (round(row["cold_start_s"] - row["bound_s"], 1)
                if row.get("cold_start_s") is not None and row.get("bound_s") is not None else None)
        cells = [row.get("date"), f"`{row.get('commit')}`", row.get("read_gb_per_s"), "yes" if row.get("settled") else "no",
                 row.get("bound_s"),
                 row.get("cold_start_s") if row.get("cold_start_s") is not None else "did not start", over,
                 row.get("imports_s"), row.get("load_s"), row.get("warm_up_s"), row.get("weights_read_s")]
        lines.append(_row(cells))
    return lines


def _raster_section(results: dict[str, Any]) -> list[str]:
    """Issue 20's table: our rasterizer and nvdiffrast side by side, in the bake and at the previews' sizes."""
    tests = results.get("gpu_tests", {})
    uv, previews = tests.get("raster_uv_2048", {}), tests.get("raster_preview_sizes", {})
    if not (uv or previews or any(key in results for key in BAKE_KEYS)):
        return []
    uv_ms = uv.get("ms", {})
    rows = [
        (f"UV rasterize, 2048², {uv.get('faces')} faces (ms)", uv_ms.get("ours"), uv_ms.get("nvdiffrast_as_the_bake_did"),
         "≤ nvdiffrast"),
        ("… nvdiffrast with one warm context (ms)", uv_ms.get("ours"), uv_ms.get("nvdiffrast_warm_context"), ""),
        ("bake phase: rasterize, project, sample (s)", results.get("bake_seconds_own"), results.get("bake_seconds_nvdiffrast"),
         "≤ 1.6 s"),
        ("bake, torch's peak above the start (GiB)", results.get("bake_peak_gib_own"), results.get("bake_peak_gib_nvdiffrast"),
         "≤ nvdiffrast + 1"),
        (f"coverage 128², 216 views, {previews.get('faces')} faces (ms)",
         *[previews.get("coverage_128_x216_ms", {}).get(name) for name in ("ours", "nvdiffrast")], "views_fit ≤ 10% of generate"),
        ("… our torch path, which the kernel replaces on CUDA (ms)", previews.get("coverage_128_x216_ms", {}).get("torch_path"),
         previews.get("coverage_128_x216_ms", {}).get("nvdiffrast"), ""),
        ("rasterize 512², 8 views (ms)", *[previews.get("rasterize_512_x8_ms", {}).get(name) for name in ("ours", "nvdiffrast")], ""),
    ]
    lines = ["", "### Bake and preview: ours vs nvdiffrast (tests/gpu/test_raster_gpu.py, issue 20)", "",
             "| what | ours | nvdiffrast | ours / nvdiffrast | goal |", "|---|---|---|---|---|"]
    for what, ours, theirs, goal in rows:
        ratio = round(ours / theirs, 2) if ours is not None and theirs else None
        lines.append(f"| {what} | {_value(ours)} | {_value(theirs)} | {_value(ratio)} | {goal} |")
    lines.append(f"| bake texture difference over texels both cover (0-255) | {_value(results.get('bake_own_vs_nvdiffrast_mean_abs'))} "
                 "| — | — | ≤ 0.01 |")
    return lines


def _tests_section(tests: dict[str, Any]) -> list[str]:
    """The other GPU tests' numbers, and the handler end-to-end cases at test settings with their validation."""
    if not tests:
        return []
    skip = ("glb_validation", "note", *FROM_TESTS, *unwrap_report.FROM_TESTS)
    lines = ["", "## GPU tests (tests/gpu, same machine)", "", *([tests["note"], ""] if "note" in tests else [])]
    for key in sorted(k for k in tests if not k.startswith(("e2e_", "default_", "unwrap_")) and k not in skip):
        lines.append(f"- `{key}`: {json.dumps(tests[key])}")
    e2e = {k[4:]: v for k, v in tests.items() if k.startswith("e2e_")}
    if e2e:
        lines += ["", "Handler end to end (4 steps per stage, GLB 20k faces, 512² textures, no remesh; seconds):", "",
                  "| GLB | job total | generate | decode mesh | export | bytes | Khronos validator |", "|---|---|---|---|---|---|---|"]
        checks = tests.get("glb_validation", {})
        for name, entry in e2e.items():
            t = entry["timings"]
            lines.append(f"| {name} | {t.get('total')} | {t.get('generate')} | {t.get('decode_mesh', '—')} | "
                         f"{t.get('export')} | {entry['bytes']} | {_verdict(checks.get(name))} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", help="where the device calls' files were fetched")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args()
    base = json.loads(args.results.read_text()) if args.results.is_file() else {}
    by_gpu: dict[str, list[Path]] = {}
    for run_dir in args.run_dirs:
        by_gpu.setdefault(gpu_of(run_dir), []).append(run_dir)
    goal_dirs = by_gpu.pop(GOAL_GPU, [])
    found, sources = read_runs(goal_dirs) if goal_dirs else ({}, {})
    with_glbs = [run_dir for run_dir in goal_dirs if any(run_dir.glob(validate_glbs.PARTS)) or any(run_dir.glob("*.glb"))]
    checks = validate_glbs.check_runs(with_glbs) if with_glbs else None
    results = merge(base, found, checks, sources) if goal_dirs else dict(base)
    results["other_gpus"] = other_gpus(base, by_gpu)
    args.results.write_text(json.dumps(results, indent=1))
    args.markdown.write_text(render(results))
    print(f"{args.results} and {args.markdown} written; from the run: {', '.join(sorted(found)) or 'nothing'}")


if __name__ == "__main__":
    main()
