"""A fresh worker's first job against its second, per pipeline type, with our FlexGEMM entries and the warm-up.

    python benchmarks/first_job.py --out DIR --model-dir DIR --entries CACHE --untuned CACHE
                                   [--variants A,B] [--pipeline-types 512,1024,...] [--shell-radius R]

Every (variant, pipeline type) is a fresh Python process: it begins as the worker does
(``trellis_mv.headstart``: the decoders' kernels compiling in child processes), loads the pipeline
(random weights in the image layout at ``--model-dir``, the sparse structure forced to a shell as in
tests/gpu; radius 0.2 for 1536_cascade, which then runs at 1536; ``--shell-radius`` sets it for every
type, e.g. a small object's latent below the tuned sizes), warms up as ``trellis_mv.factory``
does if the variant says so, then runs the same job twice through ``run_job``: one photo, the
default generation (12 steps per stage), the pipeline type, the export options of ``--glb``
(default: few faces at the default texture size, so every export phase runs as in a default job).
The first job's extra time over the second is the penalty; ``flexgemm_tuned`` counts the entries
FlexGEMM added during a job, each a shape it timed inside the job (0 where our entries cover the GPU).

Variants: the FlexGEMM cache the process starts from, and warm-up or not (the Triton kernel cache
``TRITON_CACHE_DIR`` always starts empty, as on a new worker):

- ``tuned_warmup``: ``--entries`` (ours for this GPU), warm-up: what the worker does on a GPU we ship
  entries for (:data:`WORKER_VARIANT`);
- ``tuned``: ours, no warm-up after the load (the load still runs each model once as it ends, as
  ``load_pipeline`` always does where the GPU has room): what the rest of the warm-up saves;
- ``untuned_warmup``: FlexGEMM's own cache, warm-up: the worker on a GPU we ship nothing for.

``first_job_penalty_s_by_pipeline_type`` is :data:`WORKER_VARIANT`'s penalty per type and
``first_job_penalty_s`` the default type's (benchmarks/report.py reads them). ``DIR/first_job.json``
is rewritten after every process; each process's output goes to ``DIR/first_job_<variant>_<type>.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_env

# name -> (FlexGEMM cache: "entries" or "untuned", warm-up)
VARIANTS = {"tuned_warmup": ("entries", True), "tuned": ("entries", False), "untuned_warmup": ("untuned", True)}
WORKER_VARIANT = "tuned_warmup"  # what trellis_mv.factory does: our entries, then the warm-up
DEFAULT_TYPE = "1024_cascade"
PIPELINE_TYPES = ("512", "1024", "1024_cascade", "1536_cascade")
SHELL_RADIUS = {"1536_cascade": 0.2}  # under the cascade's token limit at 1536 (tests/gpu/random_weights.py)
JOB_GLB = {"decimation_target": 20000}


def child(model_dir: Path, kind: str, warm: bool, glb: dict[str, Any], result: Path, radius: float | None = None) -> None:
    """In the fresh process: begin, load, maybe warm up, run the job twice; write the numbers to ``result``."""
    start = time.perf_counter()
    from trellis_mv.config import Settings
    from trellis_mv.headstart import begin

    head = begin(Settings(model_dir=str(model_dir), background_model=str(model_dir.parent / "BiRefNet")))
    import torch
    from harness import flexgemm_entries, load_shell_pipeline, rgba_view
    from PIL import Image

    from trellis_mv.pipeline import TrellisGenerator
    from trellis_mv.warmup import start_export_warm_up, warm_up
    from trellis_mv.worker import run_job

    imported = time.perf_counter()
    export = start_export_warm_up(head.compiling) if warm else None
    pipeline, warmed = load_shell_pipeline(model_dir, model_dir.parent / "BiRefNet", head=head)
    # as the worker's generator (load_generator): the warm-up decodes the load's warm-up latents
    generator = TrellisGenerator(pipeline, warmed_latents=warmed if warm else None)
    out: dict[str, Any] = {"pipeline_type": kind, "import_s": round(imported - start, 2),
                           "load_s": round(time.perf_counter() - imported, 2), "flexgemm_entries": flexgemm_entries(),
                           "device": torch.cuda.get_device_name()}
    if warm:
        begun = time.perf_counter()
        out["warmup"] = warm_up(generator, compiling=head.compiling, export=export)
        out["warmup_s"] = round(time.perf_counter() - begun, 2)
    else:
        head.stop()
    view = rgba_view(40, size=512)
    photo = Image.alpha_composite(Image.new("RGBA", view.size, "white"), view).convert("RGB")
    job = {"id": "first-job", "input": {"images": [_b64_jpeg(photo)], "seed": 1, "pipeline_type": kind, "glb": glb}}
    settings = Settings(max_base64_glb_bytes=200_000_000)
    shell = generator.pipeline.models["sparse_structure_decoder"]
    out["shell_radius"] = radius or SHELL_RADIUS.get(kind, shell.radius)
    with shell.with_radius(out["shell_radius"]):
        for name in ("first", "second"):
            entries = flexgemm_entries()
            answer = run_job(job, settings=settings, generator=generator, store=None)
            if "error" in answer:
                raise RuntimeError(f"{name} job: {answer['error']}")
            # entries FlexGEMM added in the job are shapes it timed there: none where our entries cover the GPU
            out[name] = {"timings": answer["timings"], "faces": answer["mesh"]["faces"], "bytes": answer["glb"]["bytes"],
                         "resolution": answer["resolution"], "flexgemm_tuned": flexgemm_entries() - entries}
    out["penalty_s"] = round(out["first"]["timings"]["total"] - out["second"]["timings"]["total"], 2)
    result.write_text(json.dumps(out, indent=1))


def _b64_jpeg(image: Any) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def penalties(results: dict[str, Any]) -> dict[str, Any]:
    """``first_job_penalty_s_by_pipeline_type`` and ``first_job_penalty_s`` from :data:`WORKER_VARIANT`'s runs."""
    runs = results.get("variants", {}).get(WORKER_VARIANT, {})
    by_type = {kind: entry["penalty_s"] for kind, entry in runs.items() if "penalty_s" in entry}
    out: dict[str, Any] = {"first_job_penalty_s_by_pipeline_type": by_type} if by_type else {}
    if DEFAULT_TYPE in by_type:
        out["first_job_penalty_s"] = by_type[DEFAULT_TYPE]
    return out


def run_variants(args: argparse.Namespace, names: list[str], kinds: list[str]) -> dict[str, Any]:
    """Each (variant, type) in its own process, in order; ``first_job.json`` after each."""
    work = Path(tempfile.mkdtemp(prefix="first_job_"))
    results: dict[str, Any] = {"commit": gpu_env.commit(), "glb": args.glb, "variants": {}}
    caches = {"entries": args.entries, "untuned": args.untuned}
    for name in names:
        cache_from, warm = VARIANTS[name]
        for kind in kinds:
            folder = work / f"{name}_{kind}"
            folder.mkdir()
            shutil.copy(caches[cache_from], folder / "flex_gemm.json")  # FlexGEMM writes new entries into it
            env = {**os.environ, "FLEX_GEMM_AUTOTUNE_CACHE_PATH": str(folder / "flex_gemm.json"),
                   "TRITON_CACHE_DIR": str(folder / "triton")}
            command = [sys.executable, __file__, "--child", kind, "--model-dir", str(args.model_dir),
                       "--glb", json.dumps(args.glb), "--result", str(folder / "result.json")] + (["--warm"] if warm else [])
            command += ["--shell-radius", str(args.shell_radius)] if args.shell_radius else []
            start = time.perf_counter()
            with open(args.out / f"first_job_{name}_{kind}.log", "w") as log:
                done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
            entry = json.loads((folder / "result.json").read_text()) if done.returncode == 0 else {"exit_status": done.returncode}
            entry["process_s"] = round(time.perf_counter() - start, 2)
            results["variants"].setdefault(name, {})[kind] = entry
            results.update(penalties(results))
            (args.out / "first_job.json").write_text(json.dumps(results, indent=1))
            print(f"{name} {kind}: penalty {entry.get('penalty_s')} s, warm-up {entry.get('warmup_s')} s, "
                  f"process {entry['process_s']} s", flush=True)
    shutil.rmtree(work)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="TRELLIS.2-4B folder of random weights")
    parser.add_argument("--glb", type=json.loads, default=JOB_GLB, help="the jobs' glb object, as JSON")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--entries", type=Path, help="FlexGEMM cache with our entries for this GPU")
    parser.add_argument("--untuned", type=Path, help="FlexGEMM cache without them (its own autotune_cache.json)")
    parser.add_argument("--variants", default=WORKER_VARIANT, help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--pipeline-types", default=",".join(PIPELINE_TYPES), help="comma list, each a fresh process")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed to one process")
    parser.add_argument("--shell-radius", type=float, help="the shell's radius for every type (default: per type)")
    parser.add_argument("--child", metavar="PIPELINE_TYPE", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu_env.setup()
    if args.child:
        child(args.model_dir, args.child, args.warm, args.glb, args.result, args.shell_radius)
        return
    names, kinds = args.variants.split(","), args.pipeline_types.split(",")
    unknown = sorted(set(names) - set(VARIANTS)) + sorted(set(kinds) - set(PIPELINE_TYPES))
    if unknown or not (args.out and args.entries and args.untuned):
        parser.error(f"--out, --entries and --untuned are required; --variants from {', '.join(VARIANTS)}; "
                     f"--pipeline-types from {', '.join(PIPELINE_TYPES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    run_variants(args, names, kinds)


if __name__ == "__main__":
    main()
