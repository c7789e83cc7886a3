"""Start-up checks: the weights check on a real (tiny) weights tree, the CUDA and extension checks
failing with one clear line on this CPU machine."""

from __future__ import annotations

import importlib.util
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trellis_mv import startup
from trellis_mv.config import Settings
from trellis_mv.errors import StartupError

ROOT = Path(__file__).resolve().parent.parent
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


def write_safetensors(path: Path, sizes: dict[str, int]) -> None:
    """A safetensors file (8-byte header length, JSON header, data) with one F32 tensor per entry."""
    header, offset = {}, 0
    for name, count in sizes.items():
        header[name] = {"dtype": "F32", "shape": [count], "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    encoded = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset))


def write_hf_model(folder: Path, config: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "model.safetensors", {"weight": 16})


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A complete weights tree in the image's layout; returns the models root."""
    model_dir = tmp_path / "TRELLIS.2-4B"
    model_dir.mkdir()
    (model_dir / "pipeline.json").write_text(json.dumps(PIPELINE))
    for ref in MODELS.values():
        path = startup.local_model_path(ref, model_dir)
        write_safetensors(path.with_name(path.name + ".safetensors"), {"a": 8, "b": 3})
        path.with_name(path.name + ".json").write_text(json.dumps({"name": "Model", "args": {}}))
    write_hf_model(tmp_path / "dinov3-vitl16-pretrain-lvd1689m", {"model_type": "dinov3_vit"})
    write_hf_model(tmp_path / "BiRefNet", {"auto_map": {"AutoConfig": "BiRefNet_config.BiRefNetConfig",
                                                        "AutoModelForImageSegmentation": "birefnet.BiRefNet"}})
    (tmp_path / "BiRefNet" / "birefnet.py").write_text("")
    (tmp_path / "BiRefNet" / "BiRefNet_config.py").write_text("")
    return tmp_path


def check(root: Path) -> str:
    return startup.check_weights(root / "TRELLIS.2-4B", root / "BiRefNet")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def garbage_header(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!" + bytes(8))


def lfs_pointer(path: Path) -> None:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 123\n")


DINO = "dinov3-vitl16-pretrain-lvd1689m"
SS_DEC = "TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
BROKEN = [
    ("TRELLIS.2-4B/ckpts/tex_dec_next_dc_f16c32_fp16.safetensors", Path.unlink,
     "TRELLIS.2-4B/ckpts/tex_dec_next_dc_f16c32_fp16.safetensors is missing"),
    ("TRELLIS.2-4B/ckpts/ss_flow_img_dit_1_3B_64_bf16.json", Path.unlink,
     "TRELLIS.2-4B/ckpts/ss_flow_img_dit_1_3B_64_bf16.json is missing"),
    (f"{SS_DEC}.safetensors", Path.unlink, f"{SS_DEC}.safetensors is missing"),
    ("TRELLIS.2-4B/ckpts/shape_dec_next_dc_f16c32_fp16.safetensors", truncate,
     "shape_dec_next_dc_f16c32_fp16.safetensors is truncated (172 of 177 bytes)"),
    ("TRELLIS.2-4B/ckpts/shape_dec_next_dc_f16c32_fp16.safetensors", garbage_header, "has an unreadable header"),
    ("TRELLIS.2-4B/ckpts/shape_dec_next_dc_f16c32_fp16.safetensors", lfs_pointer,
     "is a Git LFS pointer, not the weights"),
    ("TRELLIS.2-4B/ckpts/tex_dec_next_dc_f16c32_fp16.json", lambda p: p.write_text("{"),
     "tex_dec_next_dc_f16c32_fp16.json is not readable JSON"),
    (f"{DINO}/model.safetensors", Path.unlink, f"{DINO} has no *.safetensors weights"),
    (f"{DINO}/config.json", Path.unlink, f"{DINO}/config.json is missing"),
    ("BiRefNet/birefnet.py", Path.unlink, "BiRefNet/birefnet.py is missing (remote code)"),
    ("BiRefNet/model.safetensors", truncate, "BiRefNet/model.safetensors is truncated"),
]


def test_complete_weights_pass(models: Path) -> None:
    summary = check(models)
    assert summary.startswith(f"8 checkpoints in {models / 'TRELLIS.2-4B'}")


@pytest.mark.parametrize(("relative", "damage", "message"), BROKEN)
def test_incomplete_weights_are_named(models: Path, relative: str, damage, message: str) -> None:
    damage(models / relative)
    with pytest.raises(StartupError, match="weights incomplete under") as raised:
        check(models)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_pipeline_json(models: Path) -> None:
    (models / "TRELLIS.2-4B" / "pipeline.json").unlink()
    with pytest.raises(StartupError, match=r"^weights: .*TRELLIS.2-4B/pipeline.json is missing$"):
        check(models)


def test_missing_background_model_directory(models: Path) -> None:
    with pytest.raises(StartupError, match=r"RMBG-2.0 is missing$"):
        startup.check_weights(models / "TRELLIS.2-4B", models / "RMBG-2.0")


def test_sharded_weights_need_every_shard(models: Path) -> None:
    folder = models / DINO
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(StartupError, match="model-00002-of-00002.safetensors is missing"):
        check(models)


def test_many_problems_are_summarised(models: Path) -> None:
    for path in (models / "TRELLIS.2-4B" / "ckpts").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(StartupError, match=r"; and 1 more$"):
        check(models)


@pytest.mark.parametrize(("ref", "expected"), [
    ("ckpts/tex_dec", "models/TRELLIS.2-4B/ckpts/tex_dec"),
    ("microsoft/TRELLIS-image-large/ckpts/ss_dec", "models/TRELLIS-image-large/ckpts/ss_dec"),
    ("facebook/dinov3-vitl16-pretrain-lvd1689m", "models/dinov3-vitl16-pretrain-lvd1689m"),
])
def test_local_model_path(ref: str, expected: str) -> None:
    assert startup.local_model_path(ref, "/runpod-volume/models/TRELLIS.2-4B") == Path("/runpod-volume", expected)


def test_a_local_checkpoint_wins_over_the_hub_mapping(models: Path) -> None:
    ref = "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16"
    local = models / "TRELLIS.2-4B" / ref
    local.parent.mkdir(parents=True)
    local.with_name(local.name + ".json").write_text("{}")
    assert startup.local_model_path(ref, models / "TRELLIS.2-4B") == local


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows the failure on a machine without CUDA")
def test_cuda_check_fails_clearly_without_a_gpu() -> None:
    with pytest.raises(StartupError, match=r"^CUDA: no usable GPU \(torch .*\); this worker needs an NVIDIA GPU "
                                           r"of compute capability 8.0, 8.6, 8.9, 9.0$"):
        startup.check_cuda()


@pytest.mark.parametrize(("capability", "supported"), [
    ((8, 0), True), ((8, 6), True), ((8, 9), True), ((9, 0), True),
    ((7, 5), False), ((10, 0), False), ((12, 0), False),
])
def test_supported_capabilities(capability: tuple[int, int], supported: bool) -> None:
    assert startup.capability_supported(*capability) is supported


def test_extension_check_names_every_missing_module() -> None:
    if importlib.util.find_spec("flex_gemm") is not None:
        pytest.skip("shows the failure on a machine without the extensions")
    missing = r"^extensions: cannot import flex_gemm \(No module named 'flex_gemm'\)"
    with pytest.raises(StartupError, match=missing):
        startup.check_extensions()


def test_extension_check_passes_and_picks_the_first_attention_backend_that_imports() -> None:
    assert startup.check_extensions(("json", "struct"), ("no_such_backend", "xml", "json")) == "xml"


def test_extension_check_without_any_attention_backend() -> None:
    with pytest.raises(StartupError, match=r"an attention backend \(nope_a: No module named 'nope_a'; nope_b: "):
        startup.check_extensions(("json",), ("nope_a", "nope_b"))


def test_a_custom_generator_needs_no_checks() -> None:
    assert startup.fitness_checks(Settings(generator="cpu_generator:create")) == []
    startup.run_checks(Settings(generator="cpu_generator:create"))


def test_run_checks_raises_the_first_failure(models: Path) -> None:
    settings = Settings(model_dir=str(models / "TRELLIS.2-4B"), background_model=str(models / "BiRefNet"))
    if torch.cuda.is_available():
        pytest.skip("shows the failure on a machine without CUDA")
    with pytest.raises(StartupError, match="^CUDA: no usable GPU"):
        startup.run_checks(settings)


def test_import_does_not_load_torch() -> None:
    code = "import sys, trellis_mv.startup; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, check=False).returncode == 0


def test_public_names() -> None:
    assert startup.__all__ == [
        "ATTENTION_BACKENDS", "EXTENSIONS", "SUPPORTED_ARCHS", "capability_supported", "check_cuda",
        "check_extensions", "check_weights", "fitness_checks", "local_model_path", "run_checks",
    ]
