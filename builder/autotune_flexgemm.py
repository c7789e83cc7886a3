"""FlexGEMM autotune entries for the GPU this runs on, for the shapes TRELLIS.2's decoders see.

    python builder/autotune_flexgemm.py tune [--model-dir DIR] [--out-dir builder/flex_gemm_autotune]
    python builder/autotune_flexgemm.py merge OUT CACHE...

FlexGEMM (the decoders' sparse convolutions) picks the fastest Triton configuration per GPU name
and per shape key on first use, by timing every candidate: about 90 s of a fresh H200's first
1024_cascade job. A key is ``(log2 N, Ci, Co, kernel volume, ...)``, N the voxels at one decoder
level, so what a job tunes depends on how many voxels its object has, not on the number of views
(the flows have no sparse convolution) nor on the weights' values.

``tune`` loads the pipeline from ``--model-dir`` (real or random weights: only the shapes matter)
and decodes synthetic latents on spherical shells of ``--scales`` times a typical token count per
pipeline type, as ``decode_latent`` does after sampling (the cascades first run the shape
decoder's ``upsample`` on the 32³ structure). Each scale adds the buckets either side of the
typical object. It writes this GPU's entries, and only those, to ``<out-dir>/<gpu>.json`` after
every shell, so a run cut short keeps what it tuned. Entries already in FlexGEMM's cache file
(``FLEX_GEMM_AUTOTUNE_CACHE_PATH``) are reused, not re-timed; that file is left as it was (merge
the output into it).

``merge`` joins cache files (FlexGEMM's own ``autotune_cache.json`` and ours) into the one file
FlexGEMM reads; later files win for the same GPU, kernel and key. It needs neither torch nor a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# pipeline type -> (grid of the latent that is decoded, typical tokens on it, decode resolution);
# tokens: the random-weight shell of tests/gpu (4.6 k at 32³, 19.5 k at 64³), real objects similar.
SHAPES = {"512": (32, 4_600, 512), "1024_cascade": (64, 19_500, 1024), "1536_cascade": (96, 40_000, 1536)}
CASCADE_GRID, CASCADE_TOKENS = 32, 4_600


def shell_coords(grid: int, tokens: int) -> Any:
    """``[N, 4]`` int32 coordinates (batch 0) of a spherical shell of about ``tokens`` voxels in a ``grid``³ cube."""
    import torch

    radius = 0.4 * grid
    thickness = tokens / (4 * math.pi * radius**2)
    axis = torch.arange(grid, dtype=torch.float32) - (grid - 1) / 2
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    cells = torch.argwhere((r - radius).abs() < thickness / 2).int()
    return torch.cat([torch.zeros_like(cells[:, :1]), cells], dim=1)


def merge(caches: list[dict[str, Any]]) -> dict[str, Any]:
    """One FlexGEMM cache from several: per GPU, per kernel, the keys of all; later caches win."""
    merged: dict[str, Any] = {}
    for cache in caches:
        for gpu, kernels in cache.items():
            for kernel, entries in kernels.items():
                merged.setdefault(gpu, {}).setdefault(kernel, {}).update(entries)
    return merged


def gpu_file_name(gpu: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200.json``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") + ".json"


def tune(model_dir: str, background_model: str, kinds: list[str], scales: list[float], out_dir: Path) -> Path:
    """Decode a shell per pipeline type and scale; returns the file holding this GPU's entries."""
    # FlexGEMM would rewrite its whole cache file after every new key; this writes ours once per shell.
    os.environ["FLEX_GEMM_AUTOSAVE_AUTOTUNE_CACHE"] = "0"
    import torch
    from flex_gemm.utils import get_autotune_cache
    from trellis2.modules.sparse import SparseTensor

    from trellis_mv.config import Settings
    from trellis_mv.pipeline import load_pipeline

    pipe = load_pipeline(Settings(model_dir=model_dir, background_model=background_model, low_vram="off"))
    gpu = torch.cuda.get_device_name()
    out = out_dir / gpu_file_name(gpu)
    out_dir.mkdir(parents=True, exist_ok=True)
    channels = {"shape": pipe.models["shape_slat_decoder"].from_latent.in_features,
                "tex": pipe.models["tex_slat_decoder"].from_latent.in_features}

    def latent(coords: Any, kind: str) -> Any:
        return SparseTensor(feats=torch.randn(coords.shape[0], channels[kind], device="cuda"), coords=coords.cuda())

    def entries() -> dict[str, Any]:
        return {kernel: keys for kernel, keys in get_autotune_cache().get(gpu, {}).items() if keys}

    for kind in kinds:
        grid, tokens, resolution = SHAPES[kind]
        for scale in scales:
            start, before = time.perf_counter(), sum(map(len, entries().values()))
            coords = shell_coords(grid, round(tokens * scale))
            with torch.no_grad():
                if kind != "512":
                    pipe.models["shape_slat_decoder"].upsample(
                        latent(shell_coords(CASCADE_GRID, round(CASCADE_TOKENS * scale)), "shape"), upsample_times=4)
                pipe.decode_latent(latent(coords, "shape"), latent(coords, "tex"), resolution)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            tuned = entries()
            out.write_text(json.dumps({gpu: tuned}, indent=1, sort_keys=True))
            print(f"{kind} x{scale}: {coords.shape[0]} tokens at {grid}³, {time.perf_counter() - start:.1f} s, "
                  f"{sum(map(len, tuned.values())) - before} new entries", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tuning = commands.add_parser("tune", help="tune on this GPU and write its entries")
    tuning.add_argument("--model-dir", default="/models/TRELLIS.2-4B")
    tuning.add_argument("--background-model", default="/models/BiRefNet")
    tuning.add_argument("--pipeline-types", default="512,1024_cascade", help=f"comma list of {', '.join(SHAPES)}")
    tuning.add_argument("--scales", default="0.5,1,2", help="token counts, as multiples of the typical one")
    tuning.add_argument("--out-dir", type=Path, default=ROOT / "builder" / "flex_gemm_autotune")
    merging = commands.add_parser("merge", help="join cache files into one")
    merging.add_argument("out", type=Path)
    merging.add_argument("caches", type=Path, nargs="+", help="cache files, or folders of them (their *.json)")
    args = parser.parse_args()
    if args.command == "merge":
        files = [file for path in args.caches for file in (sorted(path.glob("*.json")) if path.is_dir() else [path])]
        args.out.write_text(json.dumps(merge([json.loads(file.read_text()) for file in files]), indent=1))
        return
    kinds = args.pipeline_types.split(",")
    unknown = sorted(set(kinds) - set(SHAPES))
    if unknown:
        parser.error(f"--pipeline-types: unknown {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    sys.path.insert(0, str(ROOT))
    out = tune(args.model_dir, args.background_model, kinds, [float(s) for s in args.scales.split(",")], args.out_dir)
    print(f"entries for this GPU in {out}")


if __name__ == "__main__":
    main()
