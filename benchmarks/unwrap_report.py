"""Issue 18's part of benchmarks/results.json and BENCHMARKS.md: the two unwraps side by side (report.py calls it).

Its keys come from tests/gpu/test_unwrap.py (both unwraps on one decoded default mesh: ``unwrap_fast``,
``unwrap_xatlas``, ``uv_*``, ``unwrap_fast_charts``, ``unwrap_fast_variants``), from
tests/gpu/test_default_job.py (``unwrap_seconds_default``: the second 1-view default job's ``export_unwrap``)
and from tests/gpu/test_export_gpu.py (o_voxel's ``to_glb`` on the same decoded mesh).
"""

from __future__ import annotations

import json
from typing import Any, Callable

# key: (what it is, the goal, whether the results meet it)
GOALS: dict[str, tuple[str, str, Callable[[dict[str, Any]], bool] | None]] = {
    "unwrap_seconds_default": ("the default 1-view job's unwrap phase (`export_unwrap`), s", "≤ 1.5",
                               lambda r: r["unwrap_seconds_default"] <= 1.5),
    "uv_flipped_faces": ("faces turned over in their chart, fast unwrap", "= 0", lambda r: r["uv_flipped_faces"] == 0),
    "uv_overlap_share": ("texels covered twice / texels covered, fast unwrap, 2048²", "≤ 0.001",
                         lambda r: r["uv_overlap_share"] <= 0.001),
    "uv_packing_efficiency_fast": ("texels covered / atlas, fast unwrap", "≥ xatlas's − 0.05",
                                   lambda r: r["uv_packing_efficiency_fast"] >= r["uv_packing_efficiency_xatlas"] - 0.05),
    "uv_packing_efficiency_xatlas": ("texels covered / atlas, xatlas", "(reference)", None),
    "uv_stretch_l2_mean_fast": ("Sander's L2 stretch of the atlas, fast unwrap", "≤ 1.2 × xatlas's",
                                lambda r: r["uv_stretch_l2_mean_fast"] <= 1.2 * r["uv_stretch_l2_mean_xatlas"]),
    "uv_stretch_l2_mean_xatlas": ("Sander's L2 stretch of the atlas, xatlas", "(reference)", None),
    "uv_render_mean_abs_diff": ("one volume baked into either atlas, 8 renders compared over covered pixels, 0-255",
                                "(recorded)", None),
}
FROM_TESTS = tuple(key for key in GOALS if key != "unwrap_seconds_default")
_ROWS = [  # (row, key of atlas_quality or of the record)
    ("seconds", "seconds"), ("charts", "charts"), ("flipped faces", "flipped_faces"), ("overlap share", "overlap_share"),
    ("packing efficiency", "packing_efficiency"), ("L2 stretch, mean", "stretch_l2_mean"),
    ("L2 stretch, max", "stretch_l2_max"), ("texel density p95/p5", "density_spread"), ("seam length", "seam_length"),
    ("faces after the unwrap", "faces"), ("vertices after the unwrap", "vertices"),
]


def lift(tests: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys found in the GPU tests' records."""
    found = {key: tests[key] for key in FROM_TESTS if key in tests}
    steady = tests.get("default_n1_again") or tests.get("default_n1", {})  # the second default job where it ran
    unwrap = steady.get("timings", {}).get("export_unwrap")
    if unwrap is not None:
        found["unwrap_seconds_default"] = unwrap
    return found


def met(results: dict[str, Any], key: str) -> str:
    """``yes``/``no``, ``—`` where something it needs was not measured, ``""`` for keys without a goal."""
    check = GOALS[key][2]
    if check is None:
        return ""
    try:
        return "yes" if check(results) else "no"
    except (KeyError, TypeError):
        return "—"


def section(results: dict[str, Any]) -> list[str]:
    """BENCHMARKS.md's lines for issue 18."""
    tests = results.get("gpu_tests", {})
    lines = ["", "## The unwrap: fast vs xatlas (issue 18)", "", "| key | measured | goal | met | what |", "|---|---|---|---|---|"]
    for key, (what, goal, _) in GOALS.items():
        value = results.get(key)
        lines.append(f"| `{key}` | {'not measured' if value is None else value} | {goal} | {met(results, key)} | {what} |")
    fast, xatlas = tests.get("unwrap_fast"), tests.get("unwrap_xatlas")
    if not (fast and xatlas):
        return lines
    decoded = tests.get("export_gpu_decoded", {})
    lines += ["", f"### Both on one mesh (tests/gpu/test_unwrap.py: the decoded default mesh, {decoded.get('faces')} faces, "
              "remeshed and simplified to 200k; atlas 2048²)", "", "| | fast | xatlas |", "|---|---|---|"]
    lines += [f"| {row} | {fast.get(key)} | {xatlas.get(key)} |" for row, key in _ROWS]
    o_voxel = tests.get("export_gpu_o_voxel", {})
    lines += ["", f"o_voxel's whole `to_glb` on the same decoded mesh: {o_voxel.get('seconds', 'not measured')} s "
              "(tests/gpu/test_export_gpu.py). The fast unwrap's steps (s): "
              f"`{json.dumps(fast.get('steps'))}`; its charts: `{json.dumps(tests.get('unwrap_fast_charts'))}`."]
    variants = {name: v for name, v in tests.get("unwrap_fast_variants", {}).items() if name != "defaults"}
    if variants:
        defaults = tests["unwrap_fast_variants"].get("defaults")
        lines += ["", f"Other settings of the fast unwrap on the same mesh (defaults: `{json.dumps(defaults)}`):", "",
                  "| variant | seconds | charts | flipped | overlap | packing | L2 mean | L2 max | seams |", "|" + "---|" * 9]
        lines += [f"| {name} | {v.get('seconds')} | {v.get('charts')} | {v.get('flipped_faces')} | {v.get('overlap_share')} | "
                  f"{v.get('packing_efficiency')} | {v.get('stretch_l2_mean')} | {v.get('stretch_l2_max')} | {v.get('seam_length')} |"
                  for name, v in variants.items()]
    return lines
