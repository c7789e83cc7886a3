"""Where the weights come from (trellis_mv.weights): fake Hugging Face caches as RunPod's cached
models lay them out, the image's baked folder, TRELLIS_MV_MODEL_DIR, in every mix, checked by the
same start-up check the worker runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from weights_trees import BIREFNET, DECODER, DINO, TRELLIS2, repo_files, write_cache, write_folder

from trellis_mv import revisions, weights
from trellis_mv.config import Settings
from trellis_mv.errors import StartupError
from trellis_mv.startup import check_weights
from trellis_mv.weights import Source, default_sources, find_repo, find_weights

ROOT = Path(__file__).resolve().parent.parent
OTHER = "0123456789abcdef0123456789abcdef01234567"
REPOS = (TRELLIS2, DECODER, DINO, BIREFNET)


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    return {"baked": tmp_path / "models", "cache": tmp_path / "runpod-volume" / "huggingface-cache" / "hub",
            "volume": tmp_path / "volume"}


def sources(places: dict[str, Path]) -> list[Source]:
    settings = Settings(model_dir=str(places["volume"]))
    return default_sources(settings, baked=places["baked"], runpod_cache=places["cache"])


def find(places: dict[str, Path], **settings) -> weights.Weights:
    return find_weights(Settings(model_dir=str(places["volume"]), **settings), sources(places))


def cache_all(cache: Path, revision_of=revisions.PINNED.get, only=REPOS) -> None:
    for repo, files in repo_files().items():
        if repo in only:
            write_cache(cache, repo, revision_of(repo), files)


def test_everything_from_runpod_cached_models(places) -> None:
    cache_all(places["cache"])
    found = find(places, background_model="/nonexistent/BiRefNet")
    snapshot = places["cache"] / "models--microsoft--TRELLIS.2-4B" / "snapshots" / revisions.PINNED[TRELLIS2]
    assert found.model_dir == snapshot
    assert all(f.source.name == "the RunPod cached model" and f.pinned for f in (found.model, *found.named.values()))
    assert found.background.path.parent.parent.name == "models--ZhengPeng7--BiRefNet"
    summary = check_weights(found)
    assert f"microsoft/TRELLIS.2-4B@af44b45f2e35 from the RunPod cached model ({snapshot})" in summary
    assert "not the pinned" not in summary


def test_the_hub_image_bakes_the_public_repos_and_takes_dinov3_from_the_cached_model(places) -> None:
    files = repo_files()
    write_folder(places["baked"], {repo: files[repo] for repo in (TRELLIS2, DECODER, BIREFNET)})
    cache_all(places["cache"], only=(DINO,))
    found = find(places, background_model=str(places["baked"] / "BiRefNet"))
    origin = {f.repo: f.source.name for f in (found.model, *found.named.values(), found.background)}
    assert origin == {TRELLIS2: "the image", DECODER: "the image",
                      DINO: "the RunPod cached model", BIREFNET: "the image"}
    assert check_weights(found).startswith("8 checkpoints; ")


def test_another_revision_is_used_and_named(places) -> None:
    cache_all(places["cache"], revision_of=lambda repo: OTHER)
    found = find(places, background_model="ZhengPeng7/BiRefNet")
    assert found.model.revision == OTHER and not found.model.pinned
    described = found.model.describe()
    assert described.endswith(f"[revision {OTHER}, not the pinned af44b45f2e35]")
    check_weights(found)


def test_the_pinned_revision_wins_over_an_earlier_source_with_another(places) -> None:
    files = repo_files()
    write_folder(places["baked"], files, revision_of=lambda repo: OTHER)
    cache_all(places["cache"], only=(BIREFNET,))
    assert find_repo(BIREFNET, sources(places)).source.name == "the RunPod cached model"
    assert find_repo(TRELLIS2, sources(places)).source.name == "the image"


def test_refs_main_picks_among_cached_revisions(places) -> None:
    files = repo_files()[DINO]
    write_cache(places["cache"], DINO, OTHER, files)
    newer = "f" * 40
    write_cache(places["cache"], DINO, newer, files, main=False)
    assert find_repo(DINO, [Source("the RunPod cached model", places["cache"])]).revision == OTHER


@pytest.mark.parametrize(("damage", "message"), [
    (lambda snap: (snap / "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors").unlink(),
     "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors is missing"),
    (lambda snap: (snap / "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors").resolve().write_bytes(b"\x10" + bytes(7)),
     "tex_dec_next_dc_f16c32_fp16.safetensors has a header of 16 bytes in a file of 8"),
    (lambda snap: _truncate((snap / "ckpts/shape_dec_next_dc_f16c32_fp16.safetensors").resolve()),
     "shape_dec_next_dc_f16c32_fp16.safetensors is truncated"),
    (lambda snap: (snap / "pipeline.json").unlink(), "pipeline.json is missing"),
])
def test_a_damaged_cached_model_is_named(places, damage, message: str) -> None:
    cache_all(places["cache"])
    snapshot = places["cache"] / "models--microsoft--TRELLIS.2-4B" / "snapshots" / revisions.PINNED[TRELLIS2]
    damage(snapshot)
    with pytest.raises(StartupError, match="^weights") as raised:
        check_weights(find(places, background_model="ZhengPeng7/BiRefNet"))
    assert message in str(raised.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def test_the_model_dir_may_be_the_trellis2_folder_itself(places) -> None:
    write_folder(places["volume"], repo_files(), revision_of=lambda repo: None)
    settings = Settings(model_dir=str(places["volume"] / "TRELLIS.2-4B"),
                        background_model=str(places["volume"] / "BiRefNet"))
    found = find_weights(settings, default_sources(settings, baked=places["baked"], runpod_cache=places["cache"]))
    assert found.model_dir == places["volume"] / "TRELLIS.2-4B"
    assert found.path("microsoft/TRELLIS-image-large/ckpts/x") == places["volume"] / "TRELLIS-image-large/ckpts/x"
    assert found.path(DINO) == places["volume"] / "dinov3-vitl16-pretrain-lvd1689m"
    assert found.path("ckpts/y") == places["volume"] / "TRELLIS.2-4B/ckpts/y"
    assert found.model.describe().endswith("[revision unknown, not the pinned af44b45f2e35]")
    check_weights(found)


def test_the_model_dir_may_be_a_hugging_face_home(places) -> None:
    cache_all(places["volume"] / "hub")
    found = find(places, background_model="ZhengPeng7/BiRefNet")
    assert {f.source.name for f in (found.model, *found.named.values(), found.background)} == {"TRELLIS_MV_MODEL_DIR"}


@pytest.mark.parametrize(("missing", "remedy"), [
    (DINO, "facebook/dinov3-vitl16-pretrain-lvd1689m is gated: accept its licence on huggingface.co, then set the "
           "endpoint's Model to facebook/dinov3-vitl16-pretrain-lvd1689m and give the endpoint a Hugging Face token"),
    (DECODER, "set the endpoint's Model to microsoft/TRELLIS-image-large, bake it into the image "
              "(builder/download_weights.py) or put it in <TRELLIS_MV_MODEL_DIR>/TRELLIS-image-large"),
])
def test_a_missing_repository_is_named_with_every_place_looked_and_how_to_provide_it(places, missing, remedy) -> None:
    files = repo_files()
    write_folder(places["baked"], {repo: content for repo, content in files.items() if repo != missing})
    with pytest.raises(StartupError) as raised:
        find(places, background_model=str(places["baked"] / "BiRefNet"))
    message = str(raised.value)
    assert message.startswith(f"weights: {missing} is in none of the image ({places['baked']}), the "
                              f"RunPod cached model ({places['cache']}), TRELLIS_MV_MODEL_DIR ({places['volume']}): ")
    assert remedy in message and "\n" not in message


def test_every_missing_repository_is_named_at_once(places) -> None:
    with pytest.raises(StartupError) as raised:
        find(places, background_model="/models/BiRefNet")
    assert [repo for repo in (*REPOS,) if f"{repo} is in none of" in str(raised.value)] == list(REPOS)


def test_an_unknown_background_folder_is_named(places) -> None:
    cache_all(places["cache"])
    with pytest.raises(StartupError, match="TRELLIS_MV_BACKGROUND_MODEL: /nowhere/my-remover does not exist and "
                                           "names no known repository"):
        find(places, background_model="/nowhere/my-remover")


def test_default_sources_are_the_image_the_runpod_cache_and_the_model_dir() -> None:
    assert [str(source) for source in default_sources(Settings())] == [
        "the image (/models)", "the RunPod cached model (/runpod-volume/huggingface-cache/hub)"]
    volume = default_sources(Settings(model_dir="/runpod-volume/models"))
    assert str(volume[-1]) == "TRELLIS_MV_MODEL_DIR (/runpod-volume/models)"


def test_the_revisions_module_is_generated_from_versions_env() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "builder" / "pins.py"), "revisions"], capture_output=True,
                          text=True, timeout=30, check=True)
    assert (ROOT / "trellis_mv" / "revisions.py").read_text(encoding="utf-8") == done.stdout, \
        "trellis_mv/revisions.py is stale: builder/pins.py revisions > trellis_mv/revisions.py"


def test_public_names() -> None:
    assert weights.__all__ == ["BAKED", "RUNPOD_CACHE", "Found", "Source", "Weights", "checkpoint",
                               "default_sources", "find_repo", "find_weights"]


def test_a_models_checkpoint_lies_beside_its_config() -> None:
    assert weights.checkpoint(Path("/w/ckpts/ss_flow_img_dit_1_3B_64_bf16")) == \
        Path("/w/ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors")
