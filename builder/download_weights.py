#!/usr/bin/env python3
"""Download the worker's weights at pinned Hugging Face revisions into the layout it reads.

    builder/download_weights.py ROOT [--rmbg] [--token-file FILE]

ROOT (``/models`` in the image, or e.g. ``/runpod-volume/models`` on a network volume) gets:

- ``TRELLIS.2-4B/``: ``pipeline.json`` and exactly the ``ckpts/*.{json,safetensors}`` it names;
- ``TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.{json,safetensors}``, which that
  ``pipeline.json`` names by hub id (any hub-id checkpoint goes to ``ROOT/<repo>/<path>``);
- ``dinov3-vitl16-pretrain-lvd1689m/`` (gated: needs a token) and ``BiRefNet/`` (MIT);
- with ``--rmbg`` only, ``RMBG-2.0/`` (gated, CC BY-NC 4.0).

That is the rule of ``trellis_mv.startup.local_model_path``; a test keeps the two in step. Repos
and revisions come from ``builder/versions.env`` (``*_REPO`` / ``*_REVISION``); a variable of
the same name in the environment wins. The token is read from ``--token-file`` (default
``/run/secrets/hf_token``, the BuildKit secret) when that file exists, else huggingface_hub's own
``HF_TOKEN`` / login; it is never printed or written. Idempotent: files already present are kept.
Writes ``ROOT/weights.json`` with the repo and revision of every directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Mapping, NamedTuple

HERE = Path(__file__).resolve().parent
# Weights formats the worker never reads: not downloaded.
IGNORE = ["*.bin", "*.pth", "*.pt", "*.ckpt", "*.onnx", "*.msgpack", "*.h5", "*.gguf"]


class Download(NamedTuple):
    """One ``snapshot_download`` call."""

    repo: str
    revision: str
    local_dir: Path
    allow_patterns: list[str] | None


def read_versions(path: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``KEY=value`` pins of a versions.env file; a non-empty ``env`` variable of the same name wins."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier() and key.isupper():
            pins[key] = env.get(key) or " ".join(shlex.split(value, comments=True))
    return pins


def revisions(pins: Mapping[str, str]) -> dict[str, str]:
    """Repo id -> revision, from every ``X_REPO`` / ``X_REVISION`` pair of the pins."""
    return {
        repo: pins[key[: -len("_REPO")] + "_REVISION"]
        for key, repo in pins.items()
        if key.endswith("_REPO") and "/" in repo and key[: -len("_REPO")] + "_REVISION" in pins
    }


def local_dir(repo: str, root: Path) -> Path:
    """Where a hub repository lives under ROOT: its name without the owner."""
    return root / repo.split("/", 1)[1]


def plan(pipeline: dict, pins: Mapping[str, str], root: Path, *, rmbg: bool) -> list[Download]:
    """Every download after ``pipeline.json``: its checkpoints, those it names by hub id, the encoders."""
    known = revisions(pins)
    main_repo = pins["TRELLIS2_MODEL_REPO"]
    main = ["pipeline.json", "README.md", "LICENSE*"]
    by_repo: dict[str, list[str]] = {}
    for ref in pipeline["args"]["models"].values():
        parts = ref.split("/")
        if len(parts) < 3 or parts[0] == "ckpts":
            main += [f"{ref}.json", f"{ref}.safetensors"]
        else:
            path = "/".join(parts[2:])
            by_repo.setdefault("/".join(parts[:2]), []).extend([f"{path}.json", f"{path}.safetensors"])
    encoder = pipeline["args"]["image_cond_model"]["args"]["model_name"]
    wanted = {**{repo: sorted(patterns) for repo, patterns in by_repo.items()}, encoder: None,
              pins["BIREFNET_REPO"]: None}
    if rmbg:
        wanted[pins["RMBG_REPO"]] = None
    missing = sorted(repo for repo in wanted if repo not in known)
    if missing:
        raise SystemExit(f"no revision pinned for {', '.join(missing)}: add <NAME>_REPO and <NAME>_REVISION "
                         "to builder/versions.env")
    downloads = [Download(main_repo, known[main_repo], local_dir(main_repo, root), sorted(set(main)))]
    downloads += [Download(repo, known[repo], local_dir(repo, root), allow) for repo, allow in wanted.items()]
    return downloads


def main(argv: list[str] | None = None) -> None:
    """Download everything ``plan`` lists, after the main repository's ``pipeline.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="directory that gets one subdirectory per repository")
    parser.add_argument("--rmbg", action="store_true", help="also RMBG-2.0 (gated, non-commercial licence)")
    parser.add_argument("--token-file", type=Path, default=Path("/run/secrets/hf_token"))
    args = parser.parse_args(argv)

    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    pins = read_versions(HERE / "versions.env", os.environ)
    # An empty secret (a fork's pull request) counts as none.
    token = (args.token_file.read_text(encoding="utf-8").strip() if args.token_file.is_file() else "") or None
    repo, revision = pins["TRELLIS2_MODEL_REPO"], pins["TRELLIS2_MODEL_REVISION"]
    try:
        config = hf_hub_download(repo, "pipeline.json", revision=revision, local_dir=local_dir(repo, args.root),
                                 token=token)
        downloads = plan(json.loads(Path(config).read_text(encoding="utf-8")), pins, args.root, rmbg=args.rmbg)
        for download in downloads:
            start = time.monotonic()
            snapshot_download(download.repo, revision=download.revision, local_dir=download.local_dir,
                              allow_patterns=download.allow_patterns, ignore_patterns=IGNORE, token=token,
                              max_workers=8)
            size = sum(f.stat().st_size for f in download.local_dir.rglob("*") if f.is_file())
            print(f"{download.repo}@{download.revision[:12]} -> {download.local_dir}: "
                  f"{size / 1e9:.2f} GB in {time.monotonic() - start:.0f} s", flush=True)
    except HfHubHTTPError as error:
        # Gated repositories (DINOv3, RMBG-2.0) answer an anonymous request as if they did not exist.
        hint = ("; gated repositories (DINOv3, RMBG-2.0) need their licence accepted on the Hub and a token: "
                "docker build --secret id=hf_token,env=HF_TOKEN ...")
        hint = hint if token is None and isinstance(error, RepositoryNotFoundError) else ""
        sys.exit(f"download_weights: {str(error).splitlines()[0]}{hint}")
    manifest = {d.local_dir.name: {"repo": d.repo, "revision": d.revision} for d in downloads}
    (args.root / "weights.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
