#!/usr/bin/env python3
"""Compile the image's Python lock files from the pins with uv, or check that they are current.

    builder/lock.py            write builder/locks/*.txt and builder/locks/sizes.json
    builder/lock.py --check    compile into a temporary folder and compare; exit 1 naming what differs

One lock per image stage and variant (``weights.txt``, ``build-<variant>.txt``,
``runtime-<variant>.txt``): every package with its version and sha256 hashes, resolved by
``uv pip compile`` for CPython 3.11 on manylinux_2_28 x86_64 from PyPI alone (PyPI's torch 2.6.0
Linux wheel is its CUDA 12.4 build, 2.8.0's its CUDA 12.8 build). The inputs are the pins of
``versions.env`` and ``variants/<variant>.env`` and, for the runtime stage, pyproject.toml's
dependencies. ``--exclude-newer LOCK_EXCLUDE_NEWER`` hides everything uploaded after that moment.
uv reads package metadata from the index and downloads no wheels.

The committed locks are the resolver's preferences (as pip-tools and uv treat an existing output
file): a lock changes only where the pins no longer admit what it holds. So ``--check`` is a function
of the repository, the same on any day: a release published later, or a file an index mirror shows
later with an earlier upload time, cannot change its answer, and a changed pin can. ``--upgrade``
resolves afresh, ignoring the committed versions; move ``LOCK_EXCLUDE_NEWER`` forward with it (it is
refused when it lies in the future, where the next day's index could answer differently).

``sizes.json`` records, per lock, the bytes of the wheels pip downloads for it (from the same
resolution in PEP 751 ``pylock.toml`` form, which carries each file's size): the build's disk
budget (docs/image.md) is computed from it and builder/weights_manifest.json.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pins import read_versions  # noqa: E402  (the versions reader next to this file)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCKS = HERE / "locks"
VARIANTS = sorted(path.stem for path in (HERE / "variants").glob("*.env"))
PLATFORM = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
PYPI = "https://pypi.org/simple"


def requirements(stage: str, pins: dict[str, str]) -> list[str]:
    """The pinned requirements of one stage (pyproject.toml's dependencies come on top for runtime)."""
    torch = [f"torch=={pins['TORCH_VERSION']}", f"torchvision=={pins['TORCHVISION_VERSION']}"]
    setuptools = f"setuptools=={pins['SETUPTOOLS_VERSION']}"
    if stage == "weights":
        return [f"huggingface_hub=={pins['HF_HUB_VERSION']}"]
    if stage == "build":
        return [*torch, setuptools, *pins["BUILD_PACKAGES"].split()]
    return [*torch, f"xformers=={pins['XFORMERS_VERSION']}", f"transformers=={pins['TRANSFORMERS_VERSION']}",
            f"huggingface_hub=={pins['HF_HUB_VERSION']}", f"Pillow=={pins['PILLOW_VERSION']}", setuptools,
            *pins["TRELLIS2_PACKAGES"].split()]


def locks() -> dict[str, tuple[str, dict[str, str]]]:
    """Lock file name -> (stage, pins of its variant)."""
    plan = {"weights.txt": ("weights", read_versions(HERE, {"VARIANT": VARIANTS[0]}))}
    for variant in VARIANTS:
        pins = read_versions(HERE, {"VARIANT": variant})
        plan |= {f"build-{variant}.txt": ("build", pins), f"runtime-{variant}.txt": ("runtime", pins)}
    return plan


def compile_lock(stage: str, pins: dict[str, str], output: Path, work: Path, *, prefer: Path | None = None,
                 constraints: Path | None = None, pylock: bool = False) -> None:
    """One stage's lock into ``output``: its pins (and pyproject.toml's dependencies for runtime)."""
    source = work / f"{stage}.in"
    source.write_text("\n".join(requirements(stage, pins)) + "\n", encoding="utf-8")
    inputs = [source] + ([ROOT / "pyproject.toml"] if stage == "runtime" else [])
    uv_compile(inputs, output, exclude_newer=pins["LOCK_EXCLUDE_NEWER"], prefer=prefer, constraints=constraints,
               pylock=pylock)


def uv_compile(inputs: list[Path], output: Path, *, exclude_newer: str, index: str = PYPI, prefer: Path | None = None,
               constraints: Path | None = None, pylock: bool = False) -> None:
    """``uv pip compile`` of ``inputs`` into ``output`` for the image's Python and platform.

    ``prefer``: a lock whose versions are kept wherever the inputs still admit them (copied to
    ``output``, which uv reads as its preferences). ``constraints``: a lock that fixes every version
    (the pylock.toml form of a lock just compiled, for its file sizes).
    """
    if prefer is not None and prefer.is_file() and prefer.resolve() != output.resolve():
        shutil.copyfile(prefer, output)
    form = ["--format", "pylock.toml"] if pylock else ["--generate-hashes", "--no-annotate",
                                                      "--custom-compile-command", "builder/lock.py"]
    fixed = ["--constraint", str(constraints)] if constraints is not None else []
    command = [uv(), "pip", "compile", "--no-config", "--quiet", *PLATFORM, "--default-index", index,
               "--exclude-newer", exclude_newer, *form, *fixed, "-o", str(output), *map(str, inputs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"lock.py: uv pip compile failed for {output.name}:\n{done.stderr.strip()}")


def wheel_bytes(pylock: Path) -> int:
    """Bytes of the wheels a pylock.toml resolution installs (the largest listed file of each package)."""
    packages = tomllib.loads(pylock.read_text(encoding="utf-8"))["packages"]
    return sum(max(wheel["size"] for wheel in package["wheels"]) for package in packages)


def build(folder: Path, *, upgrade: bool = False) -> None:
    """Write every lock and sizes.json into ``folder``, keeping the committed versions unless ``upgrade``."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (stage, pins) in locks().items():
            past(pins["LOCK_EXCLUDE_NEWER"])
            compile_lock(stage, pins, folder / name, work, prefer=None if upgrade else LOCKS / name)
            pylock = work / "pylock.sizes.toml"
            compile_lock(stage, pins, pylock, work, constraints=folder / name, pylock=True)
            sizes[name] = wheel_bytes(pylock)
    (folder / "sizes.json").write_text(json.dumps(sizes, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def past(moment: str) -> None:
    """Refuse an exclusion date in the future: files uploaded before it may still appear tomorrow."""
    when = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if when > datetime.datetime.now(datetime.timezone.utc):
        sys.exit(f"lock.py: LOCK_EXCLUDE_NEWER={moment} lies in the future; set it to a moment already past")


def differences(committed: Path, fresh: Path) -> list[str]:
    """What differs between two folders of locks, per file of ``fresh`` (empty: the same)."""
    problems = []
    for path in sorted(fresh.iterdir()):
        old_path = committed / path.name
        old = old_path.read_text(encoding="utf-8").splitlines() if old_path.is_file() else []
        new = path.read_text(encoding="utf-8").splitlines()
        if old != new:
            diff = [line for line in difflib.unified_diff(old, new, lineterm="", n=0) if line[:1] in "+-"]
            problems.append(f"{path.name}: {len(diff)} lines differ, e.g. {diff[2:6]}")
    return problems


def check() -> list[str]:
    """What differs between the committed locks and what the pins compile to (empty: all current)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "locks"
        build(fresh)
        return [f"builder/locks/{problem}" for problem in differences(LOCKS, fresh)]


def uv() -> str:
    """The uv binary: next to this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        sys.exit("lock.py: uv is not installed (pip install uv, or pip install -e '.[test]')")
    return found


def main(argv: list[str] | None = None) -> None:
    """Write the locks, or with --check compare them with a fresh compilation."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    parser.add_argument("--upgrade", action="store_true", help="resolve afresh, ignoring the committed versions")
    args = parser.parse_args(argv)
    os.environ.pop("UV_INDEX_URL", None)
    if not args.check:
        build(LOCKS, upgrade=args.upgrade)
        return
    problems = check()
    if problems:
        sys.exit("lock.py --check: the locks are not what the pins compile to (run builder/lock.py):\n  "
                 + "\n  ".join(problems))
    print(f"lock.py --check: {len(locks())} locks current with the pins")


if __name__ == "__main__":
    main()
