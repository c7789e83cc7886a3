"""A fresh process's first job against its second, with and without shipped FlexGEMM entries and warm-up.

    python benchmarks/first_job.py --out DIR --model-dir DIR --entries CACHE --untuned CACHE [--variants A,B]

Every variant is a fresh Python process: it loads the pipeline (random weights in the image layout
at ``--model-dir``, the sparse structure forced to a shell as in tests/gpu), runs the worker's
warm-up if the variant says so, then the same job twice through ``run_job``: one photo, the
default generation (1024_cascade, 12 steps), the export options of ``--glb`` (default: small
output through every export phase; ``'{}'`` for the true defaults). The first job's extra time
over the second is the penalty. Variants: the FlexGEMM cache the process starts from, the Triton
kernel cache (``TRITON_CACHE_DIR``), warm-up.

- ``untuned``: FlexGEMM's own cache (no entries for this GPU), empty Triton cache: a GPU we ship nothing for.
- ``tuned``: ``--entries`` (ours for this GPU), empty Triton cache: the image on a GPU we ship entries for.
- ``tuned_triton``: ours, and the Triton cache ``tuned`` left behind: what shipping compiled kernels would add.
- ``tuned_warmup``: ours, empty Triton cache, warm-up first.
- ``untuned_warmup``: FlexGEMM's own cache, empty Triton cache, warm-up first: the worker on any other GPU.

``first_job_penalty_s`` is :data:`WORKER_VARIANT`'s (benchmarks/report.py reads it from there): what
the worker does on a GPU we ship entries for, which warms up at start on every GPU
(``trellis_mv.warmup``). ``DIR/first_job.json`` is rewritten after every variant; each process's
output goes to ``DIR/first_job_<variant>.log``.
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

# name -> (FlexGEMM cache: "entries" or "untuned", Triton cache: None (empty) or the variant whose cache is copied, warm-up)
VARIANTS = {
    "untuned": ("untuned", None, False),
    "tuned": ("entries", None, False),
    "tuned_triton": ("entries", "tuned", False),
    "tuned_warmup": ("entries", None, True),
    "untuned_warmup": ("untuned", None, True),
}
WORKER_VARIANT = "tuned_warmup"  # what trellis_mv.factory does: our entries, then the warm-up
DEFAULT_VARIANTS = "tuned,tuned_warmup,tuned_triton"  # most telling first: a cut run keeps them
SMALL_GLB = {"decimation_target": 20000, "texture_size": 512}


def child(model_dir: Path, warm: bool, glb: dict[str, Any], result: Path) -> None:
    """In the fresh process: load, maybe warm up, run the job twice; write the numbers to ``result``."""
    start = time.perf_counter()
    import torch
    from harness import flexgemm_entries, load_shell_pipeline, rgba_view
    from PIL import Image

    from trellis_mv.config import Settings
    from trellis_mv.pipeline import TrellisGenerator
    from trellis_mv.warmup import warm_up
    from trellis_mv.worker import run_job

    imported = time.perf_counter()
    generator = TrellisGenerator(load_shell_pipeline(model_dir, model_dir.parent / "BiRefNet"))
    out: dict[str, Any] = {"import_s": round(imported - start, 2), "load_s": round(time.perf_counter() - imported, 2),
                           "flexgemm_entries": flexgemm_entries(), "device": torch.cuda.get_device_name()}
    if warm:
        begun = time.perf_counter()
        out["warmup"] = warm_up(generator)
        out["warmup_s"] = round(time.perf_counter() - begun, 2)
    view = rgba_view(40, size=512)
    photo = Image.alpha_composite(Image.new("RGBA", view.size, "white"), view).convert("RGB")
    job = {"id": "first-job", "input": {"images": [_b64_jpeg(photo)], "seed": 1, "glb": glb}}
    settings = Settings(max_base64_glb_bytes=200_000_000)
    for name in ("first", "second"):
        answer = run_job(job, settings=settings, generator=generator, store=None)
        if "error" in answer:
            raise RuntimeError(f"{name} job: {answer['error']}")
        out[name] = {"timings": answer["timings"], "faces": answer["mesh"]["faces"], "bytes": answer["glb"]["bytes"]}
    out["penalty_s"] = round(out["first"]["timings"]["total"] - out["second"]["timings"]["total"], 2)
    result.write_text(json.dumps(out, indent=1))


def _b64_jpeg(image: Any) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_variants(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """Each variant in its own process, in order; ``first_job.json`` after each."""
    work = Path(tempfile.mkdtemp(prefix="first_job_"))
    results: dict[str, Any] = {"commit": gpu_env.commit(), "glb": args.glb, "variants": {}}
    caches = {"entries": args.entries, "untuned": args.untuned}
    for name in names:
        cache_from, triton_from, warm = VARIANTS[name]
        folder = work / name
        folder.mkdir()
        shutil.copy(caches[cache_from], folder / "flex_gemm.json")  # FlexGEMM writes new entries into it
        if triton_from is not None:
            if not (work / triton_from / "triton").is_dir():
                results["variants"][name] = {"skipped": f"{triton_from} left no Triton cache"}
                continue
            shutil.copytree(work / triton_from / "triton", folder / "triton")
        env = {**os.environ, "FLEX_GEMM_AUTOTUNE_CACHE_PATH": str(folder / "flex_gemm.json"),
               "TRITON_CACHE_DIR": str(folder / "triton")}
        command = [sys.executable, __file__, "--child", "--model-dir", str(args.model_dir),
                   "--glb", json.dumps(args.glb), "--result", str(folder / "result.json")] + (["--warm"] if warm else [])
        start = time.perf_counter()
        with open(args.out / f"first_job_{name}.log", "w") as log:
            done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout)
        entry = json.loads((folder / "result.json").read_text()) if done.returncode == 0 else {"exit_status": done.returncode}
        entry["process_s"] = round(time.perf_counter() - start, 2)
        results["variants"][name] = entry
        (args.out / "first_job.json").write_text(json.dumps(results, indent=1))
        print(f"{name}: penalty {entry.get('penalty_s')} s, process {entry['process_s']} s", flush=True)
    shutil.rmtree(work)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="TRELLIS.2-4B folder of random weights")
    parser.add_argument("--glb", type=json.loads, default=SMALL_GLB, help="the jobs' glb object, as JSON")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--entries", type=Path, help="FlexGEMM cache with our entries for this GPU")
    parser.add_argument("--untuned", type=Path, help="FlexGEMM cache without them (its own autotune_cache.json)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed to one variant's process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu_env.setup()
    if args.child:
        child(args.model_dir, args.warm, args.glb, args.result)
        return
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not (args.out and args.entries and args.untuned):
        parser.error(f"--out, --entries and --untuned are required; --variants from {', '.join(VARIANTS)}")
    if "tuned_triton" in names and ("tuned" not in names or names.index("tuned") > names.index("tuned_triton")):
        parser.error("--variants: tuned_triton needs tuned before it (it starts from tuned's Triton cache)")
    args.out.mkdir(parents=True, exist_ok=True)
    run_variants(args, names)


if __name__ == "__main__":
    main()
