"""The CPU half of benchmarks/run.py: its ratios (each from one invocation) and report, and the attention profiler's hooks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # run.py imports gpu_env beside it


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench_run, ratios, profiler = _load("run"), _load("ratios"), _load("attention_profile")


def _row(kind: str, n: int, mode: str, seconds: float, stages: tuple[float, float, float], peak: float) -> dict:
    timings = {"conditioning": 0.1 * n, **dict(zip(ratios.STAGES, stages, strict=True))}
    return {"label": f"{kind} {mode} N={n}", "pipeline_type": kind, "views": n, "mode": mode, "steps": 12,
            "low_vram": False, "seconds": seconds, "timings": timings, "tokens": 100, "tokens_by_stage": {},
            "model_calls": {}, "peak_gib": peak, "voxels": 4592, "shape_tokens": 4592}


RESULTS = {
    "runs": [_row("512", 1, "stochastic", 3.0, (1.0, 1.0, 0.9), 15.7), _row("512", 4, "concat", 3.3, (1.1, 1.1, 0.9), 15.9),
             _row("1024_cascade", 1, "stochastic", 14.0, (1.0, 9.0, 3.8), 17.0),
             _row("1024_cascade", 4, "concat", 18.2, (1.1, 12.0, 4.5), 17.6)],
    "gpu_tests": {"identical_views_concat_max_abs": 2e-5, "concat_order_max_abs": 3e-4},
    "concat_profile": {"512 concat N=4": {"timings": {}, "flows": {"shape_slat_flow_model_512": {
        "flow_s": 1.0, "flow_calls": 21, "cross_s": 0.25, "cross_calls": 630, "self_s": 0.3, "self_calls": 630,
        "cross_key_tokens": 5_000_000, "cross_query_tokens": 6_000_000, "cross_share": 0.25}}}},
}


def test_headline_carries_the_concat_keys():
    head = ratios.headline(RESULTS)
    assert head["concat_n4_over_single_512"] == 1.1
    assert head["concat_n4_over_single"] == 1.3
    assert head["identical_views_concat_max_abs"] == 2e-5 and head["concat_order_max_abs"] == 3e-4
    cascade = head["ratios_by_pipeline_type"]["1024_cascade"]
    assert cascade["concat_n4_over_single_stages_only"] == round(17.6 / 13.8, 4)
    assert cascade["concat_n4_peak_gib"] == {"single": 17.0, "concat": 17.6}


def test_report_shows_goals_ratios_and_profile():
    results = {**RESULTS, **ratios.headline(RESULTS)}
    text = bench_run.render(results)
    assert "| `concat_n4_over_single` | 1.3 | ≤ 1.2 | no |" in text
    assert "| `concat_n4_over_single_512` | 1.1 | ≤ 1.2 | yes |" in text
    assert "| `identical_views_concat_max_abs` | 2e-05 | ≤ 0.0001 | yes |" in text
    assert "| `concat_order_max_abs` | 0.0003 | ≤ 0.0001 | no |" in text
    assert "- 512 (12 steps): 1.1× one view, 1.069× for the stages alone; peak 15.9 GiB against 15.7 GiB" in text
    assert "| 512 concat N=4 | shape_slat_flow_model_512 | 1.0 | 0.25 | 0.3 | 0.25 | 5000000 |" in text


H100 = {"measured": "2026-11-25T21:51:25+00:00", "device": "NVIDIA H100 80GB HBM3", "commit": "05f919f"}
H200 = {"measured": "2026-12-03T10:00:00+00:00", "device": "NVIDIA H200", "commit": "bdb612f"}
H200_LATER = {"measured": "2026-12-05T10:00:00+00:00", "device": "NVIDIA H200", "commit": "abc1234"}


def _cascade(n: int, mode: str, seconds: float, invocation: dict) -> dict:
    return {**_row("1024_cascade", n, mode, seconds, (1.0, 9.0, 4.0), 17.0), **invocation}


@pytest.mark.parametrize(("rows", "expected", "source"), [
    # the stochastic 1.09 of results.json: an H100 run of N=4 over an H200 run of one view: no ratio
    ([_cascade(4, "stochastic", 14.297, H100), _cascade(1, "stochastic", 13.098, H200)], None, None),
    ([_cascade(4, "stochastic", 14.297, H100), _cascade(1, "stochastic", 14.318, H100)], 0.9985, H100),
    # both invocations measured both: the newest one's
    ([_cascade(1, "stochastic", 14.0, H200), _cascade(4, "stochastic", 14.4, H200),
      _cascade(1, "stochastic", 13.0, H200_LATER), _cascade(4, "stochastic", 13.13, H200_LATER)], 1.01, H200_LATER),
    # the newest has one run only: the pair comes whole from the older invocation
    ([_cascade(1, "stochastic", 14.0, H200), _cascade(4, "stochastic", 14.4, H200),
      _cascade(4, "stochastic", 12.0, H200_LATER)], round(14.4 / 14.0, 4), H200),
])
def test_a_ratio_divides_runs_of_one_invocation_only(rows, expected, source):
    head = ratios.headline({"runs": rows})
    assert head.get("stochastic_n4_over_single") == expected
    figure = head["figures"].get("stochastic_n4_over_single")
    assert figure is None if source is None else figure == {
        "value": expected, "pipeline_type": "1024_cascade", "date": source["measured"], "device": source["device"],
        "commit": source["commit"]}


def test_a_ratio_a_merge_can_no_longer_compute_is_dropped_not_kept():
    """A base's ratio goes when the runs it came from are replaced by runs of other invocations."""
    results = {"stochastic_n4_over_single": 1.0915, "concat_n4_over_single": 1.27,
               "runs": [_cascade(4, "stochastic", 14.297, H100), _cascade(1, "stochastic", 13.098, H200)]}
    ratios.apply_headline(results)
    assert "stochastic_n4_over_single" not in results and "concat_n4_over_single" not in results
    text = bench_run.render(results)
    assert "| `stochastic_n4_over_single` | not measured | ≤ 1.02 | — | — |" in text


def test_the_goals_table_names_each_ratios_invocation():
    rows = [_cascade(1, "stochastic", 14.0, H200), _cascade(4, "stochastic", 14.2, H200)]
    text = bench_run.render(ratios.apply_headline({"runs": rows}))
    assert ("| `stochastic_n4_over_single` | 1.0143 | ≤ 1.02 | yes | 2026-12-03T10:00:00+00:00, NVIDIA H200, "
            "`bdb612f` |") in text


class MultiHeadAttention(torch.nn.Module):
    """Named and typed like trellis2's attention modules: ``forward(x, context)``, ``_type`` self or cross."""

    def __init__(self, kind: str):
        super().__init__()
        self._type = kind

    def forward(self, x, context=None):
        keys = x if context is None else context
        return torch.softmax(x @ keys.transpose(1, 2), -1) @ keys


class Flow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.cross, self.mlp = MultiHeadAttention("self"), MultiHeadAttention("cross"), torch.nn.Linear(4, 4)

    def forward(self, x, t, cond):
        return self.mlp(self.cross(self.attn(x), cond))


@pytest.mark.parametrize("views", [1, 3])
def test_profile_counts_calls_and_key_tokens_and_removes_its_hooks(views):
    flow, x = Flow(), torch.randn(2, 6, 4)
    cond = torch.randn(2, 5 * views, 4)
    with profiler.attention_profile({"flow": flow}, cuda=False) as profile:
        for _ in range(3):
            flow(x, None, cond)
    summary = profile.summary()["flow"]
    assert (summary["flow_calls"], summary["cross_calls"], summary["self_calls"]) == (3, 3, 3)
    assert summary["cross_key_tokens"] == 3 * 2 * 5 * views and summary["cross_query_tokens"] == 3 * 2 * 6
    assert 0 < summary["cross_s"] <= summary["flow_s"] and summary["cross_share"] == round(summary["cross_s"] / summary["flow_s"], 4)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in flow.modules())
