#!/usr/bin/env python3
"""How much disk a BuildKit build of the image needs, per variant, with and without baked weights.

    builder/disk_budget.py                          the table docs/image.md shows
    builder/disk_budget.py --need VARIANT BAKE      free gigabytes a build needs (the workflow asks this)

Computed from builder/locks/sizes.json (the bytes of every locked wheel, from PyPI's metadata) and
builder/weights_manifest.json (every baked file), plus estimates where no number is published
(marked so): the CUDA base images, the build's apt packages, sources and compiler scratch, and how
much a wheel grows when installed. The model is BuildKit's docker-container driver at the end of
the export, the peak: base images held compressed and unpacked, every stage's snapshots, and the
new layers compressed again for the push (the weights do not compress) or the cache export.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1e9
# Estimates (no Docker engine where this was written). CUDA devel images contain the runtime ones.
BASE_IMAGE = {"cu124": {"unpacked": 8.0 * GB, "compressed": 4.4 * GB},
              "cu128": {"unpacked": 9.6 * GB, "compressed": 5.2 * GB}}
INSTALLED_PER_WHEEL_BYTE = 2.0   # torch and the nvidia-* wheels roughly double when unzipped
APT_BUILD = 0.6 * GB             # build-essential, git, Python headers
APT_RUNTIME = 0.35 * GB          # Python, gcc, libc6-dev, Python headers
SOURCES_AND_SCRATCH = {"cu124": 2.5 * GB, "cu128": 3.5 * GB}  # checkouts, nvcc objects per architecture
FLASH_ATTN_WHEEL = 0.27 * GB     # the cu128 wheel is about 256 MiB (a public Dockerfile's comment)


def weights_bytes(manifest: dict) -> int:
    """Every file download_weights.py bakes by default (RMBG-2.0 left out)."""
    return sum(entry["other_bytes"] + sum(spec["bytes"] for spec in entry["files"].values())
               for entry in manifest["repos"].values() if not entry.get("optional"))


def budget(variant: str, *, bake: bool, sizes: dict[str, int], manifest: dict) -> dict[str, float]:
    """Bytes per part of one build; ``bake`` False is a pull request's build (no weights, a cache export)."""
    build_venv = sizes[f"build-{variant}.txt"] * INSTALLED_PER_WHEEL_BYTE
    runtime_wheels = sizes[f"runtime-{variant}.txt"] + FLASH_ATTN_WHEEL
    weights = weights_bytes(manifest) if bake else 0
    parts = {
        "base images (compressed + unpacked)": sum(BASE_IMAGE[variant].values()),
        "build stage": APT_BUILD + build_venv + SOURCES_AND_SCRATCH[variant],
        "hf stage": sizes["weights.txt"] * INSTALLED_PER_WHEEL_BYTE,
        "runtime stage": APT_RUNTIME + weights + runtime_wheels * INSTALLED_PER_WHEEL_BYTE,
        "push (new layers, compressed)": weights + runtime_wheels if bake else 0,
        "cache export (build layers, compressed)": 0 if bake else sizes[f"build-{variant}.txt"] + runtime_wheels,
    }
    return parts


def need_gb(variant: str, *, bake: bool) -> int:
    """Free gigabytes the workflow asks for: the budget plus 10 % headroom, rounded up."""
    parts = budget(variant, bake=bake, sizes=_sizes(), manifest=_manifest())
    return math.ceil(sum(parts.values()) * 1.1 / GB)


def _sizes() -> dict[str, int]:
    return json.loads((HERE / "locks" / "sizes.json").read_text(encoding="utf-8"))


def _manifest() -> dict:
    return json.loads((HERE / "weights_manifest.json").read_text(encoding="utf-8"))


def main(argv: list[str]) -> None:
    """Print each variant's budget, part by part; with --need, one number."""
    if argv[:1] == ["--need"] and len(argv) == 3:
        print(need_gb(argv[1], bake=argv[2] not in ("none", "0")))
        return
    for variant in sorted(path.stem for path in (HERE / "variants").glob("*.env")):
        for bake in (True, False):
            parts = budget(variant, bake=bake, sizes=_sizes(), manifest=_manifest())
            print(f"{variant}, {'weights baked' if bake else 'no weights'}: "
                  f"{sum(parts.values()) / GB:.1f} GB, NEED_GB={need_gb(variant, bake=bake)}")
            for name, size in parts.items():
                print(f"  {name}: {size / GB:.1f} GB")


if __name__ == "__main__":
    main(sys.argv[1:])
