"""FlexGEMM autotune entries for the GPU this runs on, for every shape TRELLIS.2's decoders and export can meet.

    python builder/autotune_flexgemm.py tune [--model-dir DIR] [--out-dir builder/flex_gemm_autotune]
    python builder/autotune_flexgemm.py merge [--as-tuned] OUT CACHE...

FlexGEMM (the decoders' sparse convolutions, the export's ``grid_sample_3d``) picks the fastest
Triton configuration per GPU name and per shape key on first use, by timing every candidate: about
90 s of a fresh H200's first 1024_cascade job, and again for every object size or pipeline type a
worker meets for the first time (1536_cascade's first job: 73-76 s on a warm H200). A convolution's
key is ``(2^⌊log2 N⌋, Ci, Co, kernel volume)``, N the voxels at one decoder level; grid_sample's is
``(⌊log2 N⌋, texels, channels, 8)``, N the voxels of the attribute volume. What a job meets depends
on its object's size and the pipeline type, not on the number of views or on the weights' values.

``tune`` reads the shape decoder's convolutions from ``--model-dir`` (real or random weights: only
the shapes matter) and runs each at every bucket its level can meet (``trellis_mv.pipeline.kernels.
tuning_probes``): the decoded latent holds ``2^lo`` to ``2^hi`` voxels (``--log-tokens``, default
9 to 16: from a small object at 32³ to the largest 1024 latent; the cascades stay under 49,152),
about four times more per level up. Then grid_sample at the last level's buckets for each of
``--textures`` (texel counts are the texture size squared). So every pipeline type, 1536 included,
finds its keys tuned. It writes this GPU's entries, and only those, to ``<out-dir>/<gpu>.json``
as it goes, so a run cut short keeps what it tuned. Entries already in FlexGEMM's cache file
(``FLEX_GEMM_AUTOTUNE_CACHE_PATH``) are reused, not re-timed; that file is left as it was (merge
the output into it). Give it a cache merged ``--as-tuned``: a filled one holds every bucket.

``merge`` joins cache files (FlexGEMM's own ``autotune_cache.json`` and ours) into the one file
FlexGEMM reads; later files win for the same GPU, kernel and key. Then it fills the buckets no run
tuned (:func:`fill_buckets`), unless ``--as-tuned``. It needs neither torch nor a GPU.
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
LOG_TOKENS = (9, 16)
TEXTURES = (512, 1024, 2048, 4096)
_SAVE_EVERY = 8  # probes between two writes of the entries
# Sizes a key can name, 2^4 to 2^30 voxels: past what any job meets both ways. Not
# 2^0-2^3: Triton would compile N = 1 and log2 N = 0 apart, a kernel variant no job runs.
FILLED_BUCKETS = range(4, 31)
# The kernels a worker runs (the decoders' convolution algorithm, the export's grid_sample), by name's end.
_FILLED_KERNELS = ("sparse_submanifold_conv_fwd_masked_implicit_gemm", "indice_weighed_sum_fwd")
# A key whose first field is the size bucket: "(2^b, rest)" (a dispatcher) or "(b, rest)" (a Triton kernel).
_BUCKETED_KEY = re.compile(r"\((2\^)?(\d+), (.+)\)")


def merge(caches: list[dict[str, Any]]) -> dict[str, Any]:
    """One FlexGEMM cache from several: per GPU, per kernel, the keys of all; later caches win."""
    merged: dict[str, Any] = {}
    for cache in caches:
        for gpu, kernels in cache.items():
            for kernel, entries in kernels.items():
                merged.setdefault(gpu, {}).setdefault(kernel, {}).update(entries)
    return merged


def fill_buckets(cache: dict[str, Any]) -> dict[str, Any]:
    """``cache`` with the worker's kernels' keys at every size of :data:`FILLED_BUCKETS`.

    FlexGEMM times every candidate configuration for a key it has no entry for, inside the job that
    meets it: a fresh H100 worker's first 1536_cascade job on a small object spent 204 s so, where
    the tuned range stopped two buckets short. A missing bucket takes the entry of its nearest tuned
    bucket of the same kernel and rest of key (the larger on a tie): the kernels mask what lies past
    N, so any configuration is right for any size, and a neighbour's is near the best. Tuned keys
    are kept; kernels no worker runs (the backward passes, other convolution algorithms) are left
    as they are, which keeps the file FlexGEMM parses at import small.
    """
    filled: dict[str, Any] = {}
    for gpu, kernels in cache.items():
        for kernel, entries in kernels.items():
            out = filled.setdefault(gpu, {}).setdefault(kernel, dict(entries))
            if not kernel.rsplit(".", 1)[-1].startswith(_FILLED_KERNELS):
                continue
            tuned: dict[tuple[str, str], dict[int, str]] = {}
            for key in entries:
                if found := _BUCKETED_KEY.fullmatch(key):
                    tuned.setdefault((found[1] or "", found[3]), {})[int(found[2])] = key
            for (power, rest), buckets in tuned.items():
                for bucket in FILLED_BUCKETS:
                    nearest = min(buckets, key=lambda tuned_bucket: (abs(tuned_bucket - bucket), -tuned_bucket))
                    out.setdefault(f"({power}{bucket}, {rest})", entries[buckets[nearest]])
    return filled


def gpu_file_name(gpu: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200.json``."""
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") + ".json"


def grid_sample_buckets(log_tokens: tuple[int, int], levels: int, per_level: int = 2) -> range:
    """The buckets of the attribute volume: the decoder's last level, as ``tuning_probes`` counts levels."""
    shift = per_level * (levels - 1)
    return range(log_tokens[0] + shift, log_tokens[1] + shift + 1)


def tune(model_dir: str, background_model: str, log_tokens: tuple[int, int], textures: list[int], out_dir: Path) -> Path:
    """Run every probe; returns the file holding this GPU's entries."""
    # FlexGEMM would rewrite its whole cache file after every new key; this writes ours as it goes.
    os.environ["FLEX_GEMM_AUTOSAVE_AUTOTUNE_CACHE"] = "0"
    import torch
    from flex_gemm.utils import get_autotune_cache
    from trellis2 import models

    from trellis_mv.config import Settings
    from trellis_mv.pipeline.kernels import run_probes, tuning_probes
    from trellis_mv.weights import find_weights

    weights = find_weights(Settings(model_dir=model_dir, background_model=background_model))
    refs = json.loads((weights.model_dir / "pipeline.json").read_text())["args"]["models"]
    with torch.device("cuda"):
        decoder = models.from_pretrained(str(weights.path(refs["shape_slat_decoder"])))
    tex_path = weights.path(refs["tex_slat_decoder"])
    channels = json.loads(tex_path.with_name(tex_path.name + ".json").read_text())["args"]["out_channels"]
    gpu = torch.cuda.get_device_name()
    out = out_dir / gpu_file_name(gpu)
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> int:
        tuned = {kernel: keys for kernel, keys in get_autotune_cache().get(gpu, {}).items() if keys}
        out.write_text(json.dumps({gpu: tuned}, indent=1, sort_keys=True))
        return sum(map(len, tuned.values()))

    probes, levels = tuning_probes(decoder, log_tokens), len(decoder.model_channels)
    del decoder
    start, before = time.perf_counter(), save()
    for index in range(0, len(probes), _SAVE_EVERY):
        run_probes(probes[index:index + _SAVE_EVERY])
        torch.cuda.empty_cache()
        print(f"convolutions {min(index + _SAVE_EVERY, len(probes))}/{len(probes)}: {save() - before} new entries, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    for log_voxels in grid_sample_buckets(log_tokens, levels):
        _grid_sample(2**log_voxels + 1, channels, textures)
        torch.cuda.empty_cache()
        print(f"grid_sample 2^{log_voxels} voxels, textures {textures}: {save() - before} new entries, "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    return out


def _grid_sample(voxels: int, channels: int, textures: list[int]) -> None:
    """The export's ``grid_sample_3d`` call (trellis_mv.export.bake.bake) on a block of ``voxels``, per texture size."""
    import torch
    from flex_gemm.ops.grid_sample import grid_sample_3d

    side = math.ceil(voxels ** (1 / 3)) + 1
    index = torch.arange(voxels, device="cuda")
    coords = torch.stack([index * 0, index // side**2, index // side % side, index % side], dim=1).int()
    feats = torch.rand(voxels, channels, device="cuda")
    for size in textures:
        points = torch.rand(1, size * size, 3, device="cuda") * side
        grid_sample_3d(feats, coords, shape=torch.Size([1, channels, side, side, side]), grid=points, mode="trilinear")
    torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tuning = commands.add_parser("tune", help="tune on this GPU and write its entries")
    tuning.add_argument("--model-dir", default="/models/TRELLIS.2-4B")
    tuning.add_argument("--background-model", default="/models/BiRefNet")
    tuning.add_argument("--log-tokens", default=",".join(map(str, LOG_TOKENS)),
                        help="lo,hi: log2 of the fewest and most voxels of a decoded latent")
    tuning.add_argument("--textures", default=",".join(map(str, TEXTURES)), help="texture sizes the export bakes")
    tuning.add_argument("--out-dir", type=Path, default=ROOT / "builder" / "flex_gemm_autotune")
    merging = commands.add_parser("merge", help="join cache files into one")
    merging.add_argument("--as-tuned", action="store_true", help="leave untuned buckets empty (tune's input)")
    merging.add_argument("out", type=Path)
    merging.add_argument("caches", type=Path, nargs="+", help="cache files, or folders of them (their *.json)")
    args = parser.parse_args()
    if args.command == "merge":
        files = [file for path in args.caches for file in (sorted(path.glob("*.json")) if path.is_dir() else [path])]
        merged = merge([json.loads(file.read_text()) for file in files])
        args.out.write_text(json.dumps(merged if args.as_tuned else fill_buckets(merged), indent=1))
        return
    low, high = (int(value) for value in args.log_tokens.split(","))
    if not 0 < low <= high:
        parser.error(f"--log-tokens: {args.log_tokens!r} is not lo,hi with 0 < lo <= hi")
    sys.path.insert(0, str(ROOT))
    out = tune(args.model_dir, args.background_model, (low, high), [int(size) for size in args.textures.split(",")],
               args.out_dir)
    print(f"entries for this GPU in {out}")


if __name__ == "__main__":
    main()
