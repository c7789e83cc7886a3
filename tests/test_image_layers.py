"""The baked weights go into several image layers, none above 5 GB (ghcr.io refuses layers over
10 GB): each layer's size is computed from builder/weights_manifest.json and the Dockerfile's weight
steps, so a new checkpoint or a moved file that would make a layer too big fails here, not at push."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from random_weights import PIPELINE_MODELS

from test_image_build import PINS, stages

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "builder" / "weights_manifest.json").read_text(encoding="utf-8"))
LIMIT = 5_000_000_000


def dockerfile_layers() -> list[int]:
    """The layer of every weight step of the runtime stage, in order."""
    return [int(match) for keyword, rest in stages()["runtime"] if keyword == "RUN"
            for match in re.findall(r"/opt/weights/bake_layer\.sh (\d+)$", rest)]


def layer_bytes(*, rmbg: bool, without: frozenset[str] = frozenset()) -> dict[int, int]:
    """Bytes per layer: listed files in their layer, a repository's unlisted files in its own."""
    sizes: dict[int, int] = {}
    for repo, entry in MANIFEST["repos"].items():
        if repo in without or (entry.get("optional") and not rmbg):
            continue
        sizes[entry["layer"]] = sizes.get(entry["layer"], 0) + entry["other_bytes"]
        for spec in entry["files"].values():
            layer = spec.get("layer", entry["layer"])
            sizes[layer] = sizes.get(layer, 0) + spec["bytes"]
    return dict(sorted(sizes.items()))


def test_every_layer_of_the_manifest_is_one_step_of_the_dockerfile_before_anything_else() -> None:
    assert dockerfile_layers() == sorted(layer_bytes(rmbg=True)) == [1, 2, 3, 4, 5]
    runs = [rest for keyword, rest in stages()["runtime"] if keyword in ("RUN", "COPY")]
    assert all("bake_layer.sh" in rest for rest in runs[:5]), "the weights come first (they change least)"
    script = (ROOT / "builder" / "bake_layer.sh").read_text(encoding="utf-8")
    assert '/models \\\n  --layer "$layer"' in script


@pytest.mark.parametrize(("rmbg", "without"), [
    (False, frozenset()),
    (True, frozenset()),
    (False, frozenset({PINS["DINOV3_REPO"]})),  # the Hub build: no token, DINOv3 from the cached model
])
def test_no_weights_layer_is_above_5_gb(rmbg: bool, without: frozenset[str]) -> None:
    assert MANIFEST["limit_bytes"] <= LIMIT
    sizes = layer_bytes(rmbg=rmbg, without=without)
    too_big = {layer: size for layer, size in sizes.items() if size > MANIFEST["limit_bytes"]}
    assert not too_big, f"layers above {MANIFEST['limit_bytes']} bytes: {too_big}"


def test_the_total_is_what_docs_image_md_says() -> None:
    docs = (ROOT / "docs" / "image.md").read_text(encoding="utf-8")
    sizes = layer_bytes(rmbg=False)
    for layer, size in sizes.items():
        assert f"| {layer} | " in docs and f"{size / 1e9:.2f} GB" in docs, layer
    assert f"{sum(sizes.values()) / 1e9:.2f} GB" in docs
    assert 16.0e9 < sum(sizes.values()) < 17.0e9


def test_the_manifest_is_at_the_pinned_revisions() -> None:
    for repo, entry in MANIFEST["repos"].items():
        key = next(key for key, value in PINS.items() if key.endswith("_REPO") and value == repo)
        assert entry["revision"] == PINS[key.removesuffix("_REPO") + "_REVISION"], repo
        assert entry["gated"] == (repo in PINS["GATED_REPOS"].split()), repo


def test_the_manifest_lists_every_checkpoint_pipeline_json_names() -> None:
    for ref in PIPELINE_MODELS.values():
        parts = ref.split("/")
        local = parts[0] == "ckpts"
        repo, path = (PINS["TRELLIS2_MODEL_REPO"], ref) if local else ("/".join(parts[:2]), "/".join(parts[2:]))
        for suffix in (".json", ".safetensors"):
            assert path + suffix in MANIFEST["repos"][repo]["files"], f"{repo}/{path}{suffix}"


def test_every_size_says_where_it_came_from() -> None:
    for repo, entry in MANIFEST["repos"].items():
        for path, spec in entry["files"].items():
            assert spec["source"] in MANIFEST["sources"], f"{repo}/{path}"
            if path.endswith(".safetensors") and not entry.get("optional"):
                assert spec["source"] != "estimate", f"{repo}/{path}: a required weights file needs a published size"
