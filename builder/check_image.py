#!/usr/bin/env python3
"""Build-time checks of the image's Python environment; run with the venv's python.

    builder/check_image.py [--python] [--extensions] [--weights]

--python      torch, torchvision, transformers, xformers and flash-attn at the versions.env pins,
              torch built for the image's CUDA and with the C++ ABI of the flash-attn wheel, one
              Pillow build with WebP, and ``pip check``.
--extensions  flex_gemm, cumesh, o_voxel, nvdiffrast and trellis2 are installed. Found with
              ``importlib.util.find_spec``, not imported: importing o_voxel needs libcuda, which a
              build has no GPU driver to provide. The fitness checks import them at start-up.
--weights     the worker's weights are complete (``trellis_mv.startup.check_weights`` with the
              settings of this environment: TRELLIS_MV_MODEL_DIR, TRELLIS_MV_BACKGROUND_MODEL).
Prints one line per check and exits 1 naming every failure.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from download_weights import read_versions  # noqa: E402  (the versions.env reader, next to this file)

EXTENSIONS = ("flex_gemm", "cumesh", "o_voxel", "nvdiffrast", "trellis2")


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


def weights_problems() -> list[str]:
    """The weights this environment's settings point to are complete."""
    from trellis_mv.config import Settings
    from trellis_mv.errors import StartupError
    from trellis_mv.startup import check_weights

    settings = Settings.from_env(os.environ)
    try:
        print("weights:", check_weights(settings.model_dir, settings.background_model))
    except StartupError as error:
        return [str(error)]
    return []


def main(argv: list[str] | None = None) -> None:
    """Run the selected checks; exit 1 with every failure listed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="store_true")
    parser.add_argument("--extensions", action="store_true")
    parser.add_argument("--weights", action="store_true")
    args = parser.parse_args(argv)
    pins = read_versions(Path(__file__).resolve().parent / "versions.env", os.environ)
    problems = []
    if args.python:
        problems += python_problems(pins)
    if args.extensions:
        problems += extension_problems()
    if args.weights:
        problems += weights_problems()
    if problems:
        sys.exit("check_image: " + "\n  ".join(["failed:", *problems]))
    print("check_image: ok", " ".join(f"--{name}" for name, on in vars(args).items() if on))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
