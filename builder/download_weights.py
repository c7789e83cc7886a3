#!/usr/bin/env python3
"""Download the worker's weights at pinned Hugging Face revisions, one image layer at a time.

    builder/download_weights.py ROOT [--layer N] [--bake auto|all|none] [--rmbg [0|1]] [--token-file FILE]

ROOT (``/models`` in the image, or e.g. ``/runpod-volume/models`` on a network volume) gets one
folder per repository, named after it without the owner:

- ``TRELLIS.2-4B/``: ``pipeline.json`` and exactly the ``ckpts/*.{json,safetensors}`` it names;
- ``TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.{json,safetensors}``, which that
  ``pipeline.json`` names by hub id (any hub-id checkpoint goes to ``ROOT/<name>/<path>``);
- ``dinov3-vitl16-pretrain-lvd1689m/`` (gated: needs a token) and ``BiRefNet/`` (MIT);
- with ``--rmbg`` only, ``RMBG-2.0/`` (gated, CC BY-NC 4.0);

and ``weights.json``, the repository and revision of every folder. ``trellis_mv.weights`` reads
this layout (a test keeps the two in step).

``--layer N`` downloads only the files builder/weights_manifest.json puts in image layer N, so each
of the Dockerfile's weight RUN steps is one layer under the registry limit; then it checks the
files against the manifest (every listed size, no large unlisted file, the layer's total under
``limit_bytes``) and fails naming what differs. Without ``--layer``, everything at once.

``--bake``: ``all`` (the default) fails without a token when a gated repository is wanted;
``auto`` (the Dockerfile's default) skips the gated ones when no token was given, leaving them to
a RunPod cached model or a network volume; ``none`` downloads nothing. ``1`` and ``0`` mean
``all`` and ``none``. The token is read from ``--token-file`` (default ``/run/secrets/hf_token``,
the BuildKit secret) when that file is not empty, else huggingface_hub's own ``HF_TOKEN`` / login;
it is never printed or written. Repos and revisions come from builder/versions.env; a variable of
the same name in the environment wins. Idempotent: files already present are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pins import hub_revisions, read_versions  # noqa: E402  (the versions reader next to this file)

# Weights formats the worker never reads: not downloaded.
IGNORE = ["*.bin", "*.pth", "*.pt", "*.ckpt", "*.onnx", "*.msgpack", "*.h5", "*.gguf"]
# An unlisted file this large means the manifest misses a weights file and its layer sizes are wrong.
UNLISTED_LIMIT = 10_000_000
BAKE_MODES = {"auto": "auto", "all": "all", "none": "none", "1": "all", "0": "none"}


class Download(NamedTuple):
    """One ``snapshot_download`` call: ``allow_patterns`` None means the whole repository."""

    repo: str
    revision: str
    local_dir: Path
    allow_patterns: list[str] | None
    ignore_patterns: list[str]


def local_dir(repo: str, root: Path) -> Path:
    """Where a hub repository lives under ROOT: its name without the owner."""
    return root / repo.split("/", 1)[1]


def wanted(pipeline: dict, pins: dict[str, str], *, rmbg: bool) -> dict[str, list[str] | None]:
    """Repo -> the files the worker reads (None: the whole repository, less IGNORE)."""
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
    files: dict[str, list[str] | None] = {pins["TRELLIS2_MODEL_REPO"]: sorted(set(main))}
    files |= {repo: sorted(paths) for repo, paths in by_repo.items()}
    files |= {encoder: None, pins["BIREFNET_REPO"]: None}
    if rmbg:
        files[pins["RMBG_REPO"]] = None
    return files


def layer_of(entry: dict, path: str) -> int:
    """The image layer of one file of a manifest repository entry."""
    return entry["files"].get(path, {}).get("layer", entry["layer"])


def plan(pipeline: dict, pins: dict[str, str], manifest: dict, root: Path, *, layer: int | None = None,
         rmbg: bool = False, skip: frozenset[str] = frozenset()) -> list[Download]:
    """The downloads of one layer (or all), every repository at its pinned revision."""
    known = hub_revisions(pins)
    files = wanted(pipeline, pins, rmbg=rmbg)
    problems = [f"no revision pinned for {repo}: add <NAME>_REPO and <NAME>_REVISION to builder/versions.env"
                for repo in files if repo not in known]
    problems += [f"{repo} is not in builder/weights_manifest.json" for repo in files if repo not in manifest["repos"]]
    problems += [f"{repo}/{path} is not in builder/weights_manifest.json: add its size and layer"
                 for repo, paths in files.items() if repo in manifest["repos"] for path in paths or []
                 if path.endswith(".safetensors") and path not in manifest["repos"][repo]["files"]]
    if problems:
        raise SystemExit("download_weights: " + "; ".join(problems))
    downloads = []
    for repo, paths in files.items():
        if repo in skip:
            continue
        entry = manifest["repos"][repo]
        if paths is None and layer is not None and entry["layer"] == layer:
            elsewhere = [path for path in entry["files"] if layer_of(entry, path) != layer]
            downloads.append(Download(repo, known[repo], local_dir(repo, root), None, IGNORE + elsewhere))
            continue
        listed = list(entry["files"]) if paths is None else paths
        allow = [path for path in listed if layer is None or layer_of(entry, path) == layer]
        if paths is None and layer is None:
            allow = None
        if allow is None or allow:
            downloads.append(Download(repo, known[repo], local_dir(repo, root), allow, IGNORE))
    return downloads


def layer_problems(manifest: dict, root: Path, new: dict[Path, int]) -> list[str]:
    """What is wrong with the files one run added: sizes unlike the manifest's, big unlisted files, the limit."""
    listed = {local_dir(repo, root) / path: spec for repo, entry in manifest["repos"].items()
              for path, spec in entry["files"].items()}
    problems = []
    for path, size in sorted(new.items()):
        spec = listed.get(path)
        if spec is None and size > UNLISTED_LIMIT:
            problems.append(f"{path} ({size} bytes) is not in builder/weights_manifest.json")
        elif spec is not None and spec["source"] != "estimate" and size != spec["bytes"]:
            problems.append(f"{path} has {size} bytes, the manifest says {spec['bytes']} (wrong revision?)")
    total = sum(new.values())
    if total > manifest["limit_bytes"]:
        problems.append(f"this layer holds {total} bytes, above the registry-safe {manifest['limit_bytes']}")
    return problems


def files_under(root: Path) -> dict[Path, int]:
    """Every weights file under ROOT with its size (huggingface_hub's .cache bookkeeping left out)."""
    if not root.is_dir():
        return {}
    return {path: path.stat().st_size for path in root.rglob("*") if path.is_file() and ".cache" not in path.parts}


def main(argv: list[str] | None = None) -> None:
    """Download what ``plan`` lists for the chosen layer, then check it against the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="directory that gets one subdirectory per repository")
    parser.add_argument("--layer", type=int, help="only the files of this image layer (weights_manifest.json)")
    parser.add_argument("--bake", default="all", choices=sorted(BAKE_MODES), help="all, auto (skip gated "
                        "repositories without a token) or none")
    parser.add_argument("--rmbg", nargs="?", const="1", default="0", choices=["0", "1"],
                        help="also RMBG-2.0 (gated, non-commercial licence); --rmbg 0 leaves it out")
    parser.add_argument("--token-file", type=Path, default=Path("/run/secrets/hf_token"))
    parser.add_argument("--manifest", type=Path, default=HERE / "weights_manifest.json")
    args = parser.parse_args(argv)
    args.rmbg = args.rmbg == "1"
    bake = BAKE_MODES[args.bake]
    if bake == "none":
        print(f"download_weights: BAKE_WEIGHTS=none, layer {args.layer or 'all'}: nothing baked", flush=True)
        return

    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    pins = read_versions(HERE, os.environ)
    manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
    # An empty secret (a fork's pull request) counts as none.
    token = (args.token_file.read_text(encoding="utf-8").strip() if args.token_file.is_file() else "") or None
    gated = frozenset(pins["GATED_REPOS"].split())
    if token is None and args.rmbg:
        sys.exit("download_weights: --rmbg (WITH_RMBG=1) needs the hf_token secret: RMBG-2.0 is gated")
    repo, revision = pins["TRELLIS2_MODEL_REPO"], pins["TRELLIS2_MODEL_REVISION"]
    before = files_under(args.root)
    try:
        with tempfile.TemporaryDirectory() as cache:
            config = hf_hub_download(repo, "pipeline.json", revision=revision, cache_dir=cache, token=token)
            pipeline = json.loads(Path(config).read_text(encoding="utf-8"))
        needed_gated = sorted(gated & set(wanted(pipeline, pins, rmbg=args.rmbg)))
        if token is None and needed_gated and bake == "all":
            sys.exit(f"download_weights: {', '.join(needed_gated)} is gated: accept its licence on the Hub and "
                     "build with a token (docker build --secret id=hf_token,env=HF_TOKEN ...), or use "
                     "BAKE_WEIGHTS=auto to leave it to a RunPod cached model")
        skip = frozenset(needed_gated) if token is None else frozenset()
        for name in sorted(skip):
            print(f"download_weights: {name} not baked (gated, no hf_token secret): the worker takes it from a "
                  "RunPod cached model or TRELLIS_MV_MODEL_DIR", flush=True)
        downloads = plan(pipeline, pins, manifest, args.root, layer=args.layer, rmbg=args.rmbg, skip=skip)
        for download in downloads:
            start = time.monotonic()
            snapshot_download(download.repo, revision=download.revision, local_dir=download.local_dir,
                              allow_patterns=download.allow_patterns, ignore_patterns=download.ignore_patterns,
                              token=token, max_workers=8)
            print(f"{download.repo}@{download.revision[:12]} -> {download.local_dir} "
                  f"in {time.monotonic() - start:.0f} s", flush=True)
    except HfHubHTTPError as error:
        hint = ("; a gated repository needs its licence accepted on the Hub by the token's account"
                if isinstance(error, GatedRepoError) else "")
        sys.exit(f"download_weights: {str(error).splitlines()[0]}{hint}")
    new = {path: size for path, size in files_under(args.root).items() if before.get(path) != size}
    problems = layer_problems(manifest, args.root, new)
    if problems:
        sys.exit("download_weights: " + "; ".join(problems))
    print(f"download_weights: layer {args.layer or 'all'}: {len(new)} files, {sum(new.values()) / 1e9:.2f} GB",
          flush=True)
    record = args.root / "weights.json"
    baked = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    baked |= {d.local_dir.name: {"repo": d.repo, "revision": d.revision} for d in downloads}
    record.write_text(json.dumps(baked, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
