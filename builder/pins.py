#!/usr/bin/env python3
"""The image's pins, read the way builder/lib.sh's ``load_versions`` reads them.

    builder/pins.py revisions     print trellis_mv/revisions.py (the Hugging Face revisions the worker expects)

``versions.env`` holds every pin shared by all builds; ``variants/<VARIANT>.env`` holds what differs
between the CUDA 12.4 image (``cu124``, the default: ``VARIANT=`` in versions.env) and the
Blackwell one (``cu128``). A pin set in the environment (a Docker build argument) wins over the
variant file, which wins over versions.env. Standard library only: the weights stage runs this with
nothing but huggingface_hub installed.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Mapping

HERE = Path(__file__).resolve().parent


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a versions file (shell quoting and trailing comments removed); the first wins."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier() and key.isupper():
            pins.setdefault(key, " ".join(shlex.split(value, comments=True)))
    return pins


def read_versions(folder: Path = HERE, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every pin of ``folder/versions.env`` merged with its variant file; non-empty ``env`` values win.

    A folder without ``variants/`` (a Docker stage that got a pre-merged subset) is read as is.
    """
    env = {} if env is None else env
    common = parse_env_file(folder / "versions.env")
    variant = env.get("VARIANT") or common.get("VARIANT", "")
    variant_file = folder / "variants" / f"{variant}.env"
    if (folder / "variants").is_dir() and not variant_file.is_file():
        known = sorted(path.stem for path in (folder / "variants").glob("*.env"))
        raise SystemExit(f"VARIANT={variant}: no {variant_file}; known variants: {', '.join(known)}")
    specific = parse_env_file(variant_file) if variant_file.is_file() else {}
    merged = {**common, **specific, "VARIANT": variant} if variant else {**common, **specific}
    return {key: env.get(key) or value for key, value in merged.items()}


def hub_revisions(pins: Mapping[str, str]) -> dict[str, str]:
    """Hugging Face repo id -> pinned revision, from every ``X_REPO`` / ``X_REVISION`` pair."""
    return {
        repo: pins[key[: -len("_REPO")] + "_REVISION"]
        for key, repo in pins.items()
        if key.endswith("_REPO") and "/" in repo and "://" not in repo and key[: -len("_REPO")] + "_REVISION" in pins
    }


def revisions_module(pins: Mapping[str, str]) -> str:
    """The text of trellis_mv/revisions.py for these pins."""
    lines = [f'    "{repo}": "{revision}",' for repo, revision in sorted(hub_revisions(pins).items())]
    return "\n".join([
        '"""The Hugging Face revision the worker expects of each repository it loads.',
        "",
        "Generated from builder/versions.env by ``builder/pins.py revisions > trellis_mv/revisions.py``;",
        "tests/test_weights.py fails when the two differ. Do not edit by hand.",
        '"""',
        "",
        f'TRELLIS2 = "{pins["TRELLIS2_MODEL_REPO"]}"',
        "# what TRELLIS.2-4B's pipeline.json names by hub id, and the default background remover",
        f'NAMED_BY_PIPELINE = ("{pins["SS_DECODER_REPO"]}", "{pins["DINOV3_REPO"]}")',
        f'BACKGROUND = "{pins["BIREFNET_REPO"]}"',
        "GATED = (" + ", ".join(f'"{repo}"' for repo in pins["GATED_REPOS"].split()) + ")",
        "PINNED = {",
        *lines,
        "}",
        "",
    ])


def main(argv: list[str]) -> None:
    """The one command: print the revisions module."""
    if argv != ["revisions"]:
        sys.exit(__doc__)
    sys.stdout.write(revisions_module(read_versions()))


if __name__ == "__main__":
    main(sys.argv[1:])
