"""The ratios benchmarks/run.py reports, each between runs of one invocation on one device.

A run row carries the invocation it was measured in (``measured``: its date, ``device``,
``commit``). :func:`ratios` pairs rows of the same invocation only, the newest that has both,
with the most steps measured; :func:`headline` lifts the issue's keys and says in ``figures``
which invocation each comes from; :func:`apply_headline` recomputes them in a results.json, so
that rows kept from an earlier invocation (``run.py --base``, ``report.py``) fill the table and
never a ratio. No GPU needed: report.py and the CPU tests use it too.
"""

from __future__ import annotations

from typing import Any

STAGES = ("sparse_structure", "shape_slat", "tex_slat")
# Keys the GPU tests record (tests/gpu/test_concat.py) that results.json carries at the top level.
TEST_HEADLINES = ("identical_views_concat_max_abs", "concat_order_max_abs")
# Headline keys computed from the runs: recomputed every time, never carried over from a base.
RATIO_KEYS = ("stochastic_n4_over_single", "multidiffusion_n4_over_token_bound", "concat_n4_over_single",
              "concat_n4_over_single_512", "peak_gib_1024_cascade_n4_low_vram")


def _run(rows: list[dict[str, Any]], kind: str, n: int, mode: str, low_vram: bool = False,
         steps: int | None = None) -> dict[str, Any] | None:
    for entry in rows:
        if (entry["pipeline_type"], entry["views"], entry["mode"], entry["low_vram"]) == (kind, n, mode, low_vram) \
                and steps in (None, entry["steps"]):
            return entry
    return None


def invocation(row: dict[str, Any]) -> dict[str, Any]:
    """The invocation a run row was measured in: its date, device and commit (None where an old row lacks one)."""
    return {key: row.get(name) for key, name in (("date", "measured"), ("device", "device"), ("commit", "commit"))}


def _invocations(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows grouped by invocation, newest first."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(invocation(row).values()), []).append(row)
    return [groups[key] for key in sorted(groups, key=lambda key: key[0] or "", reverse=True)]


def ratios(results: dict[str, Any], kind: str) -> dict[str, Any]:
    """The time ratios for one pipeline type, each between runs of one invocation with equal step counts.

    The most steps measured first, then the newest invocation that measured both runs; each ratio
    names its invocation (``*_from``).
    """
    rows = [r for r in results.get("runs", []) if r["pipeline_type"] == kind]
    out: dict[str, Any] = {}
    for steps in sorted({r["steps"] for r in rows}, reverse=True):
        for group in _invocations(rows):
            single = _run(group, kind, 1, "stochastic", steps=steps)
            if single is None:
                continue
            source = invocation(single)
            stoch, md4 = _run(group, kind, 4, "stochastic", steps=steps), _run(group, kind, 4, "multidiffusion", steps=steps)
            if stoch and "stochastic_n4_over_single" not in out:
                out["stochastic_n4_over_single"] = round(stoch["seconds"] / single["seconds"], 4)
                # The sampling stages alone: what the extra views cost besides encoding them (DINOv3, two resolutions).
                out["stochastic_n4_over_single_stages_only"] = round(
                    sum(stoch["timings"][s] for s in STAGES) / sum(single["timings"][s] for s in STAGES), 4)
                out["stochastic_steps"], out["stochastic_from"] = steps, source
            concat = _run(group, kind, 4, "concat", steps=steps)
            if concat and "concat_n4_over_single" not in out:
                out["concat_n4_over_single"] = round(concat["seconds"] / single["seconds"], 4)
                out["concat_n4_over_single_stages_only"] = round(
                    sum(concat["timings"][s] for s in STAGES) / sum(single["timings"][s] for s in STAGES), 4)
                out["concat_n4_peak_gib"] = {"single": single["peak_gib"], "concat": concat["peak_gib"]}
                out["concat_steps"], out["concat_from"] = steps, source
            if md4 and "multidiffusion_n4_over_token_bound" not in out:
                bound = md4["tokens"] / single["tokens"]
                out["multidiffusion_n4_token_ratio"] = round(bound, 4)
                out["multidiffusion_n4_over_token_bound"] = round(md4["seconds"] / single["seconds"] / bound, 4)
                out["multidiffusion_steps"], out["multidiffusion_from"] = steps, source
    return out


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys, from the runs present: 1024_cascade's ratios where measured, else 512's.

    ``figures`` gives each ratio's invocation (date, device, commit) and its value.
    """
    by_type = {kind: ratios(results, kind) for kind in ("512", "1024_cascade")}
    out: dict[str, Any] = {"ratios_by_pipeline_type": by_type}
    figures: dict[str, Any] = {}
    for kind in ("512", "1024_cascade"):
        for key, source in (("stochastic_n4_over_single", "stochastic_from"),
                            ("multidiffusion_n4_over_token_bound", "multidiffusion_from")):
            if key in by_type[kind]:
                out[key] = by_type[kind][key]
                figures[key] = {"value": out[key], "pipeline_type": kind, **by_type[kind][source]}
    for kind, key in (("512", "concat_n4_over_single_512"), ("1024_cascade", "concat_n4_over_single")):
        if "concat_n4_over_single" in by_type[kind]:
            out[key] = by_type[kind]["concat_n4_over_single"]
            figures[key] = {"value": out[key], "pipeline_type": kind, **by_type[kind]["concat_from"]}
    tests = results.get("gpu_tests", {})
    out.update({key: tests[key] for key in TEST_HEADLINES if key in tests})
    low = _run(results.get("runs", []), "1024_cascade", 4, "multidiffusion", low_vram=True)
    if low:
        out["peak_gib_1024_cascade_n4_low_vram"] = low["peak_gib"]
        figures["peak_gib_1024_cascade_n4_low_vram"] = {"value": low["peak_gib"], **invocation(low)}
    overhead = results.get("overhead_512_n1", {})
    if "worker_overhead_ratio" in results:
        figures["worker_overhead_ratio"] = {"value": results["worker_overhead_ratio"],
                                            **{key: overhead.get(key) for key in ("date", "device", "commit")}}
    parity = [results[k] for k in ("parity_fp32_512_max_abs", "parity_bf16_512_max_abs") if k in results]
    if parity:
        out["parity_n1_vs_trellis2_max_abs"] = parity[0]
    out["figures"] = figures
    return out


def apply_headline(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with :func:`headline`'s keys recomputed: a ratio its runs no longer give is dropped, not kept."""
    for key in RATIO_KEYS:
        results.pop(key, None)
    results.update(headline(results))
    return results
