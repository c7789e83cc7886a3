"""Tiny weights trees for the CPU tests, in the three layouts the worker reads.

``repo_files()`` is every file the worker loads from the four repositories (TRELLIS.2-4B's
``pipeline.json`` reduced to what the checks read, real safetensors headers over a few bytes of
data). ``write_folder`` lays them out as ``builder/download_weights.py`` does (``<root>/<name>/``
plus ``weights.json``); ``write_cache`` as the Hugging Face cache does (``models--<org>--<name>/``
with ``blobs/<sha256>``, ``snapshots/<revision>/`` symlinks into them and ``refs/main``), which is
what RunPod's cached models look like under ``/runpod-volume/huggingface-cache/hub``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from trellis_mv import revisions

# TRELLIS.2-4B's pipeline.json, reduced to what the checks read: one checkpoint by hub id, the rest local.
MODELS = {
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "sparse_structure_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
}
PIPELINE = {
    "name": "Trellis2ImageTo3DPipeline",
    "args": {
        "models": MODELS,
        "image_cond_model": {"name": "DinoV3FeatureExtractor",
                             "args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
    },
}
TRELLIS2, DECODER, DINO, BIREFNET = revisions.TRELLIS2, *revisions.NAMED_BY_PIPELINE, revisions.BACKGROUND
BIREFNET_CONFIG = {"auto_map": {"AutoConfig": "BiRefNet_config.BiRefNetConfig",
                                "AutoModelForImageSegmentation": "birefnet.BiRefNet"}}


def safetensors_bytes(sizes: dict[str, int], name: str = "") -> bytes:
    """A safetensors file (8-byte header length, JSON header, data) with one F32 tensor per entry.

    ``name`` goes into the header's metadata, so that no two files share a blob in a cache.
    """
    header: dict = {"__metadata__": {"name": name}} if name else {}
    offset = 0
    for name, count in sizes.items():
        header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + bytes(offset)


def write_safetensors(path: Path, sizes: dict[str, int]) -> None:
    """``safetensors_bytes`` written to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(safetensors_bytes(sizes))


def repo_files() -> dict[str, dict[str, bytes]]:
    """Repository -> relative path -> content: everything the worker's checks read."""
    model = json.dumps({"name": "Model", "args": {}}).encode()
    main = {"pipeline.json": json.dumps(PIPELINE).encode()}
    for ref in MODELS.values():
        if ref.startswith("ckpts/"):
            main |= {f"{ref}.json": model, f"{ref}.safetensors": safetensors_bytes({"a": 8, "b": 3}, ref)}
    decoder = "ckpts/ss_dec_conv3d_16l8_fp16"
    return {
        TRELLIS2: main,
        DECODER: {f"{decoder}.json": model, f"{decoder}.safetensors": safetensors_bytes({"a": 8, "b": 3}, decoder)},
        DINO: {"config.json": json.dumps({"model_type": "dinov3_vit"}).encode(),
               "model.safetensors": safetensors_bytes({"weight": 16})},
        BIREFNET: {"config.json": json.dumps(BIREFNET_CONFIG).encode(), "birefnet.py": b"",
                   "BiRefNet_config.py": b"", "model.safetensors": safetensors_bytes({"weight": 16})},
    }


def write_folder(root: Path, repos: dict[str, dict[str, bytes]], *, revision_of=revisions.PINNED.get) -> None:
    """``<root>/<name>/<path>`` for every file, and ``weights.json`` with each repository's revision."""
    record = {}
    for repo, files in repos.items():
        name = repo.split("/", 1)[1]
        for path, content in files.items():
            (root / name / path).parent.mkdir(parents=True, exist_ok=True)
            (root / name / path).write_bytes(content)
        if revision_of(repo):
            record[name] = {"repo": repo, "revision": revision_of(repo)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "weights.json").write_text(json.dumps(record), encoding="utf-8")


def write_cache(cache: Path, repo: str, revision: str, files: dict[str, bytes], *, main: bool = True) -> Path:
    """One snapshot in the Hugging Face cache layout; returns its folder."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / revision
    for path, content in files.items():
        blob = storage / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if main:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot
