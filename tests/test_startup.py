"""Start-up checks: the weights check on a real (tiny) weights tree, the toolchain check compiling a
real C extension, the CUDA and extension checks failing with one clear line on this CPU machine."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from weights_trees import repo_files, write_folder

from trellis_mv import startup
from trellis_mv.config import Settings
from trellis_mv.errors import StartupError
from trellis_mv.weights import Source, Weights, find_weights

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A complete weights tree in the image's layout; returns the models root."""
    write_folder(tmp_path, repo_files())
    return tmp_path


def found(root: Path) -> Weights:
    return find_weights(Settings(model_dir=str(root / "TRELLIS.2-4B")), [Source("the image", root)])


def check(root: Path) -> str:
    return startup.check_weights(found(root))


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
     "shape_dec_next_dc_f16c32_fp16.safetensors is truncated ("),
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


def test_complete_weights_pass_and_name_their_source(models: Path) -> None:
    summary = check(models)
    assert summary.startswith("8 checkpoints; microsoft/TRELLIS.2-4B@af44b45f2e35 from the image "
                              f"({models / 'TRELLIS.2-4B'}); ")
    assert f"ZhengPeng7/BiRefNet@26e7919b869d from the image ({models / 'BiRefNet'})" in summary


@pytest.mark.parametrize(("relative", "damage", "message"), BROKEN)
def test_incomplete_weights_are_named(models: Path, relative: str, damage, message: str) -> None:
    damage(models / relative)
    with pytest.raises(StartupError, match="^weights incomplete: ") as raised:
        check(models)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_missing_pipeline_json(models: Path) -> None:
    (models / "TRELLIS.2-4B" / "pipeline.json").unlink()
    with pytest.raises(StartupError, match=r"^weights: .*TRELLIS.2-4B/pipeline.json is missing$"):
        check(models)


def test_a_missing_background_model_is_looked_for_by_name(models: Path) -> None:
    settings = Settings(model_dir=str(models / "TRELLIS.2-4B"), background_model=str(models / "RMBG-2.0"))
    with pytest.raises(StartupError, match=r"briaai/RMBG-2.0 is in none of the image .*: briaai/RMBG-2.0 is "
                                           r"gated: accept its licence"):
        find_weights(settings, [Source("the image", models)])


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows the failure on a machine without CUDA")
def test_cuda_check_fails_clearly_without_a_gpu() -> None:
    with pytest.raises(StartupError, match=r"^CUDA: no usable GPU \(torch .*\); this worker needs an NVIDIA GPU "
                                           r"of compute capability 8.0, 8.6, 8.9, 9.0$"):
        startup.check_cuda(("8.0", "8.6", "8.9", "9.0"))


CU124 = ("8.0", "8.6", "8.9", "9.0")
CU128 = ("8.0", "8.6", "8.9", "9.0", "10.0", "12.0")
CAPABILITIES = [  # (GPU, capability, runs the cu124 image, runs the cu128 image)
    ("A100", (8, 0), True, True), ("RTX 3090", (8, 6), True, True), ("L4", (8, 9), True, True),
    ("H100", (9, 0), True, True), ("T4", (7, 5), False, False), ("B200", (10, 0), False, True),
    ("B300", (10, 3), False, True), ("RTX 5090", (12, 0), False, True), ("GB10", (12, 1), False, True),
]


@pytest.mark.parametrize(("gpu", "capability", "cu124", "cu128"), CAPABILITIES)
def test_supported_capabilities(gpu: str, capability: tuple[int, int], cu124: bool, cu128: bool) -> None:
    assert startup.capability_supported(*capability, CU124) is cu124
    assert startup.capability_supported(*capability, CU128) is cu128


def test_a_gpu_outside_the_image_is_refused_by_name_and_capability(tmp_path: Path) -> None:
    """The arch list the build recorded decides: an image built for 9.0 only refuses an A100 (8.0)."""
    info = tmp_path / "build-info.json"
    info.write_text(json.dumps({"torch_cuda_arch_list": "9.0", "variant": "cu124"}))
    archs = startup.image_archs(info)
    assert archs == ("9.0",)
    assert startup.capability_supported(9, 0, archs) and not startup.capability_supported(8, 0, archs)
    message = startup.arch_refusal("NVIDIA A100-SXM4-80GB", (8, 0), archs)
    assert message == ("CUDA: NVIDIA A100-SXM4-80GB has compute capability 8.0; this image's extensions are built "
                       "for 9.0: choose another GPU type, or the image variant built for it (docs/image.md)")


@pytest.mark.parametrize(("content", "expected"), [
    (None, None),
    ('{"torch_cuda_arch_list": "8.0 8.6 8.9 9.0 10.0 12.0"}', CU128),
    ("{}", "has no torch_cuda_arch_list"),
    ("not json", "has no torch_cuda_arch_list"),
])
def test_image_archs_reads_the_build_record(tmp_path: Path, content: str | None, expected) -> None:
    info = tmp_path / "build-info.json"
    if content is not None:
        info.write_text(content)
    if isinstance(expected, str):
        with pytest.raises(StartupError, match=expected):
            startup.image_archs(info)
    else:
        assert startup.image_archs(info) == expected


def test_the_toolchain_builds_and_imports_an_extension_as_triton_does() -> None:
    assert " builds and loads Python extensions against " in startup.check_toolchain()


@pytest.mark.parametrize(("env", "include", "message"), [
    ({"PATH": ""}, None, r"^toolchain: no C compiler \(CC unset, no gcc or clang on PATH\)"),
    ({"CC": "/nonexistent/cc"}, None, r"^toolchain: cannot run /nonexistent/cc \(No such file or directory\)"),
    ({}, "empty", r"^toolchain: .*/Python.h is missing \(the Python headers Triton compiles against\)"),
    ({}, "broken", r"^toolchain: .* cannot build a Python extension \(.*Python.h:1:2: error: #error broken"),
])
def test_a_missing_toolchain_is_named(tmp_path: Path, env: dict, include: str | None, message: str) -> None:
    folder = None
    if include is not None:
        folder = tmp_path / include
        folder.mkdir()
        if include == "broken":
            (folder / "Python.h").write_text("#error broken header\n")
    with pytest.raises(StartupError, match=message) as raised:
        startup.check_toolchain({**os.environ, **env}, folder)
    assert str(raised.value).endswith("install gcc, libc6-dev and python3.11-dev (builder/install_system.sh runtime)")


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


def test_the_checks_run_in_order() -> None:
    names = [check.__name__ for check in startup.fitness_checks(Settings())]
    assert names == ["cuda_usable", "toolchain_builds", "extensions_import", "weights_complete"]


def test_public_names() -> None:
    assert startup.__all__ == [
        "ATTENTION_BACKENDS", "BUILD_INFO", "EXTENSIONS", "arch_refusal", "capability_supported", "check_cuda",
        "check_extensions", "check_toolchain", "check_weights", "fitness_checks", "image_archs", "run_checks",
    ]


class _Head:
    """What the factory uses of a head start (``trellis_mv.headstart.HeadStart``), recording its stop."""

    compiling = None
    stopped = False

    def wait_read(self, path: Path) -> None:
        pass

    def wait_imported(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def trellis_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """TRELLIS.2's start in the factory with the GPU seam faked: CUDA there, checks, load and warm-up
    recorded in the order they run; returns that record."""
    import trellis_mv.pipeline
    import trellis_mv.warmup
    from trellis_mv import factory

    steps: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(factory, "run_checks", lambda settings: steps.append("checks"))
    monkeypatch.setattr(trellis_mv.pipeline, "load_generator", lambda settings, **hooks: steps.append("load") or _Loaded())
    monkeypatch.setattr(trellis_mv.warmup, "start_export_warm_up", lambda compiling: None)
    monkeypatch.setattr(trellis_mv.warmup, "warm_up", lambda generator, **parts: steps.append("warm-up"))
    return steps


class _Loaded:
    components: tuple[str, ...] = ()


def test_what_must_pass_before_the_load_is_waited_for_after_the_checks(trellis_start: list[str]) -> None:
    from trellis_mv.factory import build_generator

    head = _Head()
    build_generator(Settings(), head, before_load=lambda: trellis_start.append("bucket"))
    assert trellis_start == ["checks", "bucket", "load", "warm-up"] and not head.stopped

    trellis_start.clear()

    def missing() -> None:
        raise StartupError("bucket 'gone' does not exist")

    with pytest.raises(StartupError, match="bucket 'gone'"):
        build_generator(Settings(), head, before_load=missing)
    assert trellis_start == ["checks"] and head.stopped  # nothing loaded, the kernel compiles ended
