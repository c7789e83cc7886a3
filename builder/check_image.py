#!/usr/bin/env python3
"""Build-time checks of the image; run with the venv's python. No GPU is needed.

    builder/check_image.py [--python] [--extensions] [--toolchain] [--build-info FILE] [--weights MODE]

--python      torch, torchvision, transformers, xformers and flash-attn at the pins of versions.env
              and variants/$VARIANT.env, torch built for the variant's CUDA and with the C++ ABI of
              the flash-attn wheel, one Pillow build with WebP, and ``pip check``.
--extensions  flex_gemm, cumesh, o_voxel and trellis2 are installed. Found with
              ``importlib.util.find_spec``, not imported: importing o_voxel needs libcuda, which a
              build has no GPU driver to provide. The start-up checks import them.
--toolchain   a C extension compiles and imports the way Triton builds its launcher at the first
              kernel launch (``trellis_mv.toolchain.check_toolchain``): a compiler and Python.h.
--build-info  FILE records the TORCH_CUDA_ARCH_LIST of this build (what the start-up check reads).
--weights     what BAKE_WEIGHTS baked is complete (``trellis_mv.startup.check_weights``): with
              ``all`` every repository must be under /models; with ``auto`` the ones not baked
              (gated, no token) are listed as left to a RunPod cached model; ``none`` checks nothing.
Prints one line per check and exits 1 naming every failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import read_versions  # noqa: E402  (the versions reader, next to this file)

EXTENSIONS = ("flex_gemm", "cumesh", "o_voxel", "trellis2")


def python_problems(pins: dict[str, str]) -> list[str]:
    """Pinned versions, torch's CUDA, one Pillow with WebP, a consistent environment."""
    import PIL
    import PIL.features
    import torch

    problems = []
    cuda = ".".join(pins["CUDA_VERSION"].split(".")[:2])
    if torch.__version__.split("+")[0] != pins["TORCH_VERSION"] or torch.version.cuda != cuda:
        problems.append(f"torch is {torch.__version__} for CUDA {torch.version.cuda}, "
                        f"expected {pins['TORCH_VERSION']} for CUDA {cuda}")
    wheel = pins["FLASH_ATTN_URL"].rsplit("/", 1)[1]
    flash_attn = wheel.split("-")[1].split("+")[0]
    if ("cxx11abiTRUE" in wheel) != torch.compiled_with_cxx11_abi():
        problems.append(f"{wheel} does not match torch's C++ ABI (cxx11 {torch.compiled_with_cxx11_abi()})")
    expected = {"torchvision": pins["TORCHVISION_VERSION"], "transformers": pins["TRANSFORMERS_VERSION"],
                "xformers": pins["XFORMERS_VERSION"], "flash_attn": flash_attn, "pillow": pins["PILLOW_VERSION"]}
    for name, version in expected.items():
        found = _version(name)
        if found is None or found.split("+")[0] != version:
            problems.append(f"{name} is {found or 'not installed'}, expected {version}")
    simd = _version("pillow-simd")
    if simd is not None or PIL.__version__ != _version("pillow"):
        problems.append(f"mixed Pillow builds: PIL {PIL.__version__}, pillow {_version('pillow')}, "
                        f"pillow-simd {simd}")
    if not PIL.features.check("webp"):
        problems.append("Pillow has no WebP support (GLB export writes WebP textures)")
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        problems.append("pip check: " + " | ".join(check.stdout.strip().splitlines()))
    return problems


def extension_problems() -> list[str]:
    """Every native extension and trellis2 is installed (found, not imported)."""
    return [f"{name} is not installed" for name in EXTENSIONS if importlib.util.find_spec(name) is None]


def toolchain_problems() -> list[str]:
    """Triton's first-launch compile would work: a C compiler and the Python headers are here."""
    from trellis_mv.errors import StartupError
    from trellis_mv.toolchain import check_toolchain

    try:
        print("toolchain:", check_toolchain())
    except StartupError as error:
        return [str(error)]
    return []


def build_info_problems(path: Path, pins: dict[str, str]) -> list[str]:
    """The build recorded the architecture list the extensions were compiled for."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("torch_cuda_arch_list", "")
    except (OSError, ValueError, AttributeError) as error:
        return [f"{path} is not a readable build record ({error})"]
    if not recorded.split():
        return [f"{path} records no torch_cuda_arch_list"]
    print(f"build-info: extensions built for {recorded} (variant {pins['VARIANT']})")
    return []


def weights_problems(mode: str) -> list[str]:
    """What BAKE_WEIGHTS baked is complete; only ``auto`` may leave out gated repositories."""
    from trellis_mv import revisions
    from trellis_mv.config import Settings
    from trellis_mv.errors import StartupError
    from trellis_mv.startup import check_weights
    from trellis_mv.weights import BAKED, Source, find_repo, find_weights

    if mode in ("none", "0"):
        print("weights: none baked (BAKE_WEIGHTS=none)")
        return []
    baked = [Source("the image", BAKED)]
    try:
        print("weights:", check_weights(find_weights(Settings(), baked)))
        return []
    except StartupError as error:
        failure = str(error)
    repos = (revisions.TRELLIS2, *revisions.NAMED_BY_PIPELINE, revisions.BACKGROUND)
    missing = [repo for repo in repos if find_repo(repo, baked) is None]
    if mode == "auto" and missing and set(missing) <= set(revisions.GATED):
        # download_weights.py checked every file it baked against builder/weights_manifest.json.
        print(f"weights: {', '.join(missing)} not baked (gated, no token): left to a RunPod cached model "
              "or TRELLIS_MV_MODEL_DIR")
        return []
    return [failure]


def main(argv: list[str] | None = None) -> None:
    """Run the selected checks; exit 1 with every failure listed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="store_true")
    parser.add_argument("--extensions", action="store_true")
    parser.add_argument("--toolchain", action="store_true")
    parser.add_argument("--build-info", type=Path)
    parser.add_argument("--weights", choices=["auto", "all", "none", "1", "0"])
    args = parser.parse_args(argv)
    pins = read_versions(Path(__file__).resolve().parent, os.environ)
    problems = []
    if args.python:
        problems += python_problems(pins)
    if args.extensions:
        problems += extension_problems()
    if args.toolchain:
        problems += toolchain_problems()
    if args.build_info:
        problems += build_info_problems(args.build_info, pins)
    if args.weights:
        problems += weights_problems(args.weights)
    if problems:
        sys.exit("check_image: " + "\n  ".join(["failed:", *problems]))
    print("check_image: ok", " ".join(f"--{name.replace('_', '-')}" for name, on in vars(args).items() if on))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
