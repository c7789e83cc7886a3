"""GPU benchmark of the worker's generator against bare TRELLIS.2, in one process.

    python benchmarks/run.py --out DIR            # on a CUDA machine with trellis2 + extensions

benchmarks/report.py merges its results.json with the GPU tests' and the other device measurements
into the repository's benchmarks/results.json and BENCHMARKS.md (docs/gpu-testing.md).

Random weights at real size (tests/gpu/random_weights.py: bf16 flows, fp16 decoders, the
sparse structure forced to a spherical shell) say nothing about quality; they measure time,
tokens and memory of the real code. What runs, in order of importance (results.json is rewritten
after every run, so a run cut short still reports what it finished):

1. bare ``pipeline.run`` vs our ``generate`` for one view at 512 (12 steps, decode included):
   ``worker_overhead_ratio``; the same seed's latents give ``parity_n1_vs_trellis2_max_abs``.
2. 512, 12 steps: single view, stochastic N=4, multidiffusion N=2 and N=4 (latents only).
3. 1024_cascade, N=4 multidiffusion in low-VRAM mode: ``peak_gib_1024_cascade_n4_low_vram``.
4. 1024_cascade (``--cascade-steps`` per stage): the same four as 2.
5. ``concat``: one view, stochastic N=4 and concat N=4 side by side (alternating, best of ``--repeats`` each),
   at 512 and at 1024_cascade with 12 steps: ``concat_n4_over_single_512``, ``concat_n4_over_single``
   and ``stochastic_n4_over_single``, with tokens per stage and peak memory in each run's row.
6. ``concat_profile``: the same four once more with the flows' attention modules timed through
   forward hooks (attention_profile.py): how much of each flow's time is cross-attention, whose keys
   ``concat`` multiplies by N, and how many key tokens it saw.

``--runs`` picks a subset of these and ``--base`` starts from an earlier results.json, replacing the
runs measured again (BENCHMARKS.md mentions where the others came from).

Every ratio divides runs of one invocation on one device: each row carries the invocation's date,
device and commit (``measured``, ``device``, ``commit``), a ratio pairs rows of the same invocation
only (the newest that has both), and ``figures`` says for each headline key which invocation it
comes from. Rows of earlier invocations kept through ``--base`` fill the table, never a ratio.

``stochastic_n4_over_single`` is the time ratio; ``multidiffusion_n4_over_token_bound`` is the time
ratio divided by the ratio of flow-model tokens processed (every view and negative pass counted).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_env
from ratios import apply_headline

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"stochastic_n4_over_single": 1.02, "multidiffusion_n4_over_token_bound": 1.1,
         "worker_overhead_ratio": 1.03, "peak_gib_1024_cascade_n4_low_vram": 24.0,
         "parity_n1_vs_trellis2_max_abs": 1e-4, "concat_n4_over_single": 1.2, "concat_n4_over_single_512": 1.2,
         "identical_views_concat_max_abs": 1e-4, "concat_order_max_abs": 1e-4}
RUNS = ("overhead", "512", "cascade_low_vram", "cascade_stochastic", "cascade_multidiffusion", "concat",
        "concat_profile")
CONCAT_PAIRS = (("512", "512 {mode} N={n}"), ("1024_cascade", "1024_cascade {mode} N={n} (12 steps)"))


class Bench:
    """Runs requests on one loaded pipeline and keeps every measurement in ``results``."""

    def __init__(self, out: Path, cascade_steps: int, base: dict[str, Any] | None = None):
        import torch

        self.torch, self.out, self.cascade_steps = torch, out, cascade_steps
        now = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": torch.cuda.get_device_name(), "commit": gpu_env.commit(), "torch": torch.__version__}
        self.results: dict[str, Any] = {"runs": [], **(base or {}), **now}
        if base:
            # What this invocation re-measures replaces the base's entry; the rest is kept and said so.
            self.results["earlier"] = [*base.get("earlier", []), {k: base.get(k) for k in ("date", "device", "commit")}]

    def save(self) -> None:
        apply_headline(self.results)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
        (self.out / "BENCHMARKS.md").write_text(render(self.results))

    def load(self) -> None:
        from harness import load_shell_pipeline
        from random_weights import write_weights

        from trellis_mv.pipeline import TrellisGenerator

        root = Path(tempfile.mkdtemp(prefix="bench_weights_"))
        start = time.perf_counter()
        model_dir = write_weights(root, dtype="bfloat16")
        self.results["write_weights_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        self.pipe, _warmed = load_shell_pipeline(model_dir, root / "BiRefNet")
        self.results["load_s"] = round(time.perf_counter() - start, 2)
        self.gen = TrellisGenerator(self.pipe)
        self.save()

    def request(self, kind: str, n: int, mode: str, steps: int | None) -> Any:
        from harness import rgba_view

        from trellis_mv.generator import GenerationRequest, StageOptions

        stage = StageOptions(steps=steps)
        return GenerationRequest(images=tuple(rgba_view(20 + i) for i in range(n)), seed=42, mode=mode,
                                 pipeline_type=kind, sparse_structure=stage, shape_slat=stage, tex_slat=stage)

    def latents(self, label: str, kind: str, n: int, mode: str, steps: int | None, low_vram: bool = False) -> None:
        """One timed ``sample_latents``: a row of ``runs``; measured again in this invocation, the faster is kept."""
        from harness import set_low_vram

        set_low_vram(self.pipe, low_vram)
        start = time.perf_counter()
        out = self.gen.sample_latents(self.request(kind, n, mode, steps))
        seconds = time.perf_counter() - start
        set_low_vram(self.pipe, False)
        earlier = [r for r in self.results["runs"] if r["label"] == label and r.get("measured") == self.results["date"]]
        if earlier and earlier[0]["seconds"] <= seconds:
            earlier[0]["seconds_all"].append(round(seconds, 3))
            self.save()
            return
        self.results["runs"] = [r for r in self.results["runs"] if r["label"] != label]
        self.results["runs"].append({
            "label": label, "pipeline_type": kind, "views": n, "mode": mode, "steps": steps or 12,
            "low_vram": low_vram, "seconds": round(seconds, 3), "timings": out.timings,
            "tokens": sum(out.stats["tokens"].values()), "tokens_by_stage": out.stats["tokens"],
            "model_calls": out.stats["model_calls"], "peak_gib": out.stats["peak_gib"],
            "voxels": out.stats["voxels"], "shape_tokens": out.stats["shape_tokens"],
            "measured": self.results["date"], "device": self.results["device"], "commit": self.results["commit"],
            "seconds_all": [*(earlier[0]["seconds_all"] if earlier else []), round(seconds, 3)]})
        self.save()

    def concat(self, repeats: int) -> None:
        """One view, stochastic N=4 and concat N=4 at 512 and 1024_cascade (12 steps), alternating, best of ``repeats`` each."""
        # Triton JIT and FlexGEMM autotuning of the cascade's shapes, outside the timings
        self.gen.sample_latents(self.request("1024_cascade", 1, "stochastic", 2))
        for kind, label in CONCAT_PAIRS:
            for _ in range(repeats):
                for n, mode in ((1, "stochastic"), (4, "stochastic"), (4, "concat")):
                    self.latents(label.format(mode=mode, n=n), kind, n, mode, 12)

    def concat_profile(self) -> None:
        """The runs of :meth:`concat` once more, each flow's attention modules timed (attention_profile.py)."""
        from attention_profile import attention_profile

        flows = {name: model for name, model in self.pipe.models.items() if "flow_model" in name}
        profiles = self.results.setdefault("concat_profile", {})
        for kind, label in CONCAT_PAIRS:
            for n, mode in ((1, "stochastic"), (4, "concat")):
                with attention_profile(flows) as profile:
                    out = self.gen.sample_latents(self.request(kind, n, mode, 12))
                profiles[label.format(mode=mode, n=n)] = {"timings": out.timings, "flows": profile.summary()}
                self.save()

    def overhead(self) -> None:
        """Bare ``run`` vs ``generate`` for one view at 512 (best of two each), and bf16 parity at max_batch=1."""
        from harness import rgba_view

        from trellis_mv.pipeline import TrellisGenerator

        torch, view, times = self.torch, rgba_view(20), {"bare": [], "ours": []}
        request = self.request("512", 1, "stochastic", None)
        self.gen.generate(request)  # warm-up: Triton JIT and FlexGEMM autotune of the decoders
        for _ in range(2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            _m, (shape_ref, tex_ref, _r) = self.pipe.run(view, seed=42, pipeline_type="512", return_latent=True)
            torch.cuda.synchronize()
            times["bare"].append(time.perf_counter() - start)
            start = time.perf_counter()
            self.gen.generate(request)
            torch.cuda.synchronize()
            times["ours"].append(time.perf_counter() - start)
        exact = TrellisGenerator(self.pipe, max_batch=1).sample_latents(request)
        self.results["overhead_512_n1"] = {**{k: [round(t, 3) for t in v] for k, v in times.items()},
                                           **{k: self.results[k] for k in ("date", "device", "commit")}}
        self.results["worker_overhead_ratio"] = round(min(times["ours"]) / min(times["bare"]), 4)
        self.results["parity_bf16_512_max_abs"] = max(
            (exact.shape_slat.feats.float() - shape_ref.feats.float()).abs().max().item(),
            (exact.tex_slat.feats.float() - tex_ref.feats.float()).abs().max().item())
        self.save()


def render(results: dict[str, Any]) -> str:
    """BENCHMARKS.md from results.json."""
    lines = [
        "# Benchmarks", "",
        f"Measured {results.get('date')} on {results.get('device')} (torch {results.get('torch')}), commit "
        f"`{results.get('commit')}`, by `python benchmarks/run.py`. Attention: {results.get('attention')}. "
        "Random weights at real size (bf16 flows, fp16 decoders), sparse structure forced to a spherical "
        "shell (tests/gpu/random_weights.py): these numbers are time, tokens and memory of the real code, "
        "not quality, and not flash-attn timings.", "",
        *[line for e in results.get("earlier", [])[-1:] for line in (
            f"Runs not re-measured then are from {e['date']}, commit `{e['commit']}`, on {e['device']}.", "")],
        "## Goals", "", "Each ratio divides runs of one invocation on one device (the last column).", "",
        "| key | measured | goal | met | runs of |", "|---|---|---|---|---|",
    ]
    figures = results.get("figures", {})
    for key, goal in GOALS.items():
        value = results.get(key)
        met = "—" if value is None else ("yes" if value <= goal else "no")
        lines.append(f"| `{key}` | {value if value is not None else 'not measured'} | ≤ {goal} | {met} | "
                     f"{source(figures.get(key))} |")
    lines += ["", "The headline ratios are 1024_cascade's where measured (else 512's); per pipeline type, with "
              "`*_stages_only` leaving out conditioning (so the gap to the full ratio is DINOv3 encoding the extra "
              "views at the pipeline's resolutions, the `cond` column below):", ""]
    for kind, values in results.get("ratios_by_pipeline_type", {}).items():
        if values:
            lines.append(f"- {kind}: " + ", ".join(f"`{k}` {v}" for k, v in values.items() if not k.endswith("_from")))
    lines += ["", f"Weights written in {results.get('write_weights_s')} s; pipeline load (build on the GPU, "
              f"read the partial random checkpoints) {results.get('load_s')} s. Loading real weights adds "
              "their read time, not measured here.", ""]
    if "overhead_512_n1" in results:
        o = results["overhead_512_n1"]
        lines += [f"Bare `pipeline.run` vs our `generate`, 512, one view, decode included (s): bare {o['bare']}, "
                  f"ours {o['ours']}.", ""]
    lines += ["## Runs (latents only: conditioning + three stages; seconds)", "",
              "One process, in this order; the first run of each pipeline type includes Triton JIT and FlexGEMM "
              "autotuning of the shapes the loaded autotune cache lacks.", "",
              "| pipeline | views | mode | steps | low VRAM | total | cond | sparse structure | shape | texture "
              "| model tokens | peak GiB | voxels | shape tokens |", "|" + "---|" * 14]
    for r in results.get("runs", []):
        t = r["timings"]
        lines.append(f"| {r['pipeline_type']} | {r['views']} | {r['mode']} | {r['steps']} | {r['low_vram']} | "
                     f"{r['seconds']} | {t.get('conditioning')} | {t.get('sparse_structure')} | {t.get('shape_slat')} | "
                     f"{t.get('tex_slat')} | {r['tokens']} | {r['peak_gib']} | {r['voxels']} | {r['shape_tokens']} |")
    lines += _concat_section(results)
    build = ROOT / "benchmarks" / "build_times.json"
    if build.is_file():
        times = json.loads(build.read_text())
        lines += ["", "## Extension build times", "", times["note"], "", "| package | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds} |" for name, seconds in times["seconds"].items()]
    return "\n".join(lines) + "\n"


def source(figure: dict[str, Any] | None) -> str:
    """Where a figure comes from: ``date, device, commit``, or — for a test's number or none."""
    if not figure or not figure.get("date"):
        return "—"
    return f"{figure['date']}, {figure.get('device')}, `{figure.get('commit')}`"


def _concat_section(results: dict[str, Any]) -> list[str]:
    """concat N=4 against one view: the ratios, and the attention profile where ``concat_profile`` ran."""
    by_type = results.get("ratios_by_pipeline_type", {})
    rows = [(kind, r) for kind, r in by_type.items() if "concat_n4_over_single" in r]
    profile = results.get("concat_profile", {})
    if not rows and not profile:
        return []
    lines = ["", "## concat N=4 against one view", "",
             "Latent time (conditioning + three stages) and peak GPU memory, from the runs above (the fastest of "
             "each row's runs, alternating; `seconds_all` in results.json lists them):", ""]
    for kind, r in rows:
        peak = r["concat_n4_peak_gib"]
        lines.append(f"- {kind} ({r['concat_steps']} steps): {r['concat_n4_over_single']}× one view, "
                     f"{r['concat_n4_over_single_stages_only']}× for the stages alone; peak {peak['concat']} GiB "
                     f"against {peak['single']} GiB")
    if profile:
        lines += ["", "Where the flows' time goes (one more run each, attention modules timed with CUDA events "
                  "through forward hooks, so slightly slower than the timed runs; seconds):", "",
                  "| run | flow model | forward | cross-attention | self-attention | cross share | cross key tokens |",
                  "|---|---|---|---|---|---|---|"]
        for label, entry in profile.items():
            for flow, f in entry["flows"].items():
                lines.append(f"| {label} | {flow} | {f['flow_s']} | {f['cross_s']} | {f['self_s']} | "
                             f"{f['cross_share']} | {f['cross_key_tokens']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks"))
    parser.add_argument("--cascade-steps", type=int, default=4)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    parser.add_argument("--base", type=Path, help="an earlier results.json: keep its runs, replace what is re-measured")
    parser.add_argument("--repeats", type=int, default=2,
                        help="concat: runs of each of its rows, alternating; the fastest counts (two runs of one "
                        "row differed by 5%% on the H200, more than the 2%% stochastic's goal allows)")
    args = parser.parse_args()
    attention = gpu_env.setup()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.runs.split(",")
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"--runs: unknown {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    bench = Bench(args.out, args.cascade_steps, json.loads(args.base.read_text()) if args.base else None)
    bench.results["attention"] = attention
    bench.load()
    if "overhead" in runs:
        bench.overhead()
    if "512" in runs:
        for n, mode in ((1, "stochastic"), (4, "stochastic"), (2, "multidiffusion"), (4, "multidiffusion")):
            bench.latents(f"512 {mode} N={n}", "512", n, mode, None)
    if "cascade_low_vram" in runs:
        bench.latents(f"1024_cascade multidiffusion N=4 low-VRAM ({args.cascade_steps} steps)", "1024_cascade", 4, "multidiffusion",
                      args.cascade_steps, low_vram=True)
    cascade = [(n, mode) for n, mode in ((1, "stochastic"), (4, "stochastic"), (2, "multidiffusion"), (4, "multidiffusion"))
               if f"cascade_{mode}" in runs]
    if cascade and "cascade_low_vram" not in runs:
        # Triton JIT and autotuning of the cascade's shapes, outside the timed runs
        bench.gen.sample_latents(bench.request("1024_cascade", 1, "stochastic", 2))
    for n, mode in cascade:
        bench.latents(f"1024_cascade {mode} N={n} ({args.cascade_steps} steps)", "1024_cascade", n, mode, args.cascade_steps)
    if "concat" in runs:
        bench.concat(args.repeats)
    if "concat_profile" in runs:
        bench.concat_profile()

if __name__ == "__main__":
    main()
