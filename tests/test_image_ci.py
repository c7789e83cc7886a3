"""Where the image is built and published: the GitHub workflow (every input path triggers a build,
both variants, a cache that can neither fail the build nor hold the weights, enough disk), the disk
script's choices on both runner layouts, and the RunPod Hub metadata (.runpod/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from test_image_build import BUILDER, VARIANTS, instructions
from trellis_mv.config import Settings, env_var_names

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BUILDER))
import disk_budget  # noqa: E402  (builder/ is scripts, not a package)

yaml = pytest.importorskip("yaml")
WORKFLOW = yaml.safe_load((ROOT / ".github" / "workflows" / "image.yml").read_text(encoding="utf-8"))
TRIGGERS = WORKFLOW[True]  # PyYAML reads the key "on" as True
BUILD = WORKFLOW["jobs"]["build"]
STEP = next(step for step in BUILD["steps"] if step.get("uses", "").startswith("docker/build-push-action"))


def test_every_path_that_enters_the_image_triggers_a_build() -> None:
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    inputs = {path + "/**" if (ROOT / path).is_dir() else path for path in allowed}
    inputs |= {".dockerignore", ".github/workflows/image.yml"}
    assert set(TRIGGERS["pull_request"]["paths"]) == inputs
    assert TRIGGERS["push"]["paths"] == TRIGGERS["pull_request"]["paths"]
    assert TRIGGERS["push"]["tags"] == ["v*"]


def test_both_variants_build_in_a_matrix_and_only_tags_push() -> None:
    assert [entry["variant"] for entry in BUILD["strategy"]["matrix"]["include"]] == sorted(VARIANTS)
    assert "VARIANT=${{ matrix.variant }}" in STEP["with"]["build-args"]
    assert STEP["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    assert BUILD["env"]["BAKE_WEIGHTS"].startswith("${{ startsWith(github.ref, 'refs/tags/v') && 'all'")
    assert "hf_token=${{ secrets.HF_TOKEN }}" in STEP["with"]["secrets"]
    assert any(step.get("uses", "").startswith("docker/setup-buildx-action") for step in BUILD["steps"])
    test = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert any(step.get("run") == ".ci/run" for step in test["jobs"]["test"]["steps"])


def test_the_cache_never_fails_the_build_and_never_holds_the_weights() -> None:
    """Defect 4: a gha cache export of the weights layers could fail the build."""
    assert STEP["with"]["cache-from"] == "type=gha,scope=image-${{ matrix.variant }}"
    assert STEP["with"]["cache-to"] == ("${{ env.BAKE_WEIGHTS == 'none' && format('type=gha,scope=image-{0},mode=max,"
                                        "ignore-error=true', matrix.variant) || '' }}")


def test_the_disk_step_asks_for_what_the_budget_computes_before_buildx_starts() -> None:
    """Defect 5: the runner's disk is sized from the locks and the manifest, and found before building."""
    steps = BUILD["steps"]
    disk = next(index for index, step in enumerate(steps) if "ci_disk.sh" in step.get("run", ""))
    buildx = next(index for index, step in enumerate(steps) if step.get("uses", "").startswith("docker/setup-buildx"))
    assert disk < buildx
    need = 'python3 builder/disk_budget.py --need "$VARIANT" "$BAKE_WEIGHTS"'
    assert steps[disk]["run"] == f'builder/ci_disk.sh "$({need})"'
    for variant in VARIANTS:
        baked, bare = disk_budget.need_gb(variant, bake=True), disk_budget.need_gb(variant, bake=False)
        assert 60 < baked < 100 and 30 < bare < 60, (variant, baked, bare)
        done = subprocess.run([sys.executable, str(BUILDER / "disk_budget.py"), "--need", variant, "all"],
                              capture_output=True, text=True, timeout=30, check=True)
        assert int(done.stdout) == baked


def test_docs_show_the_disk_budget() -> None:
    docs = (ROOT / "docs" / "image.md").read_text(encoding="utf-8")
    for variant in VARIANTS:
        for bake in (True, False):
            assert f"{disk_budget.need_gb(variant, bake=bake)} GB" in docs, (variant, bake)


def run_disk_script(tmp_path: Path, root_gb: int, mnt_gb: int | None, data_gb: int, need: int):
    """builder/ci_disk.sh with sudo, df, mountpoint and stat stood in for: its decisions, not its effects."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "sudo.log"
    scripts = {
        "sudo": f'echo "$*" >>{log}; case $1 in losetup) echo /dev/loop7 ;; tee) cat >>{log} ;; cat) exit 1 ;; esac',
        "df": f'case ${{@: -1}} in /) n={root_gb} ;; /mnt) n={mnt_gb or 0} ;; *) n={data_gb} ;; esac; '
              'echo Avail; echo "${n}G"',
        "mountpoint": f"exit {0 if mnt_gb is not None else 1}",
        "stat": 'case ${@: -1} in /mnt) echo 2 ;; *) echo 1 ;; esac',
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([str(BUILDER / "ci_disk.sh"), str(need)], capture_output=True, text=True, env=env,
                          timeout=30)
    return done, log.read_text() if log.exists() else ""


@pytest.mark.parametrize(("root_gb", "mnt_gb", "need", "data_root"), [
    (100, None, 82, None),                 # one 145 GB disk: Docker stays where it is
    (30, 66, 40, "/mnt/docker"),           # two disks, a pull request's build fits /mnt
    (50, 66, 82, "/docker-data"),          # a release build needs both disks joined
])
def test_the_disk_script_gives_docker_the_room(tmp_path: Path, root_gb, mnt_gb, need, data_root) -> None:
    done, log = run_disk_script(tmp_path, root_gb, mnt_gb, need + 5, need)
    assert done.returncode == 0, done.stderr
    if data_root is None:
        assert "systemctl" not in log and "docker data root: /var/lib/docker" in done.stdout
    else:
        assert f'"data-root": "{data_root}"' in log and "systemctl start docker" in log
    assert ("vgcreate" in log) is (data_root == "/docker-data")


def test_the_disk_script_fails_at_once_when_the_runner_is_too_small(tmp_path: Path) -> None:
    done, log = run_disk_script(tmp_path, 20, None, 20, 82)
    assert done.returncode == 1
    assert "the build needs 82 GB; / has 20 GB and /mnt 0 GB free" in done.stderr
    assert "systemctl" not in log


def test_runpod_hub_metadata_lists_every_setting() -> None:
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["config"]["runsOn"] == "GPU"
    env = {item["key"]: item["input"] for item in hub["config"]["env"]}
    assert list(env) == env_var_names()
    for spec in fields(Settings):
        assert env[spec.metadata["env"]]["description"] == spec.metadata["help"]


def test_the_hub_allows_cuda_12_4_to_13_drivers_and_no_no_op_negations() -> None:
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    cuda = ["12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0"]
    assert hub["config"]["allowedCudaVersions"] == cuda == tests["config"]["allowedCudaVersions"]
    assert not [item for item in hub["config"]["gpuIds"].split(",") if item.startswith("-")]
    assert "facebook/dinov3-vitl16-pretrain-lvd1689m" in hub["description"]


def test_the_hub_builds_the_root_dockerfile_with_no_secret_and_no_build_argument() -> None:
    """Defect 3: the Hub builds .runpod/'s Dockerfile if there is one, else the root one, bare."""
    assert not (ROOT / ".runpod" / "Dockerfile").exists()
    args = dict(rest.partition("=")[::2] for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)
    assert args["BAKE_WEIGHTS"] == "auto" and args["VARIANT"] == "cu124"
    mounts = [rest for keyword, rest in instructions() if "type=secret" in rest]
    assert mounts and all("required=false" in rest for rest in mounts)


def test_the_hub_test_runs_the_sample_job() -> None:
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert tests["tests"][0]["input"] == json.loads((ROOT / "test_input.json").read_text())["input"]
    assert tests["tests"][0]["timeout"] >= 600_000  # cold start, first-job autotune and export (docs/image.md)


def test_docs_name_every_setting() -> None:
    text = (ROOT / "docs" / "image.md").read_text(encoding="utf-8")
    for name in env_var_names():
        assert f"`{name}`" in text, name


def test_docs_stay_inside_the_repository() -> None:
    text = (ROOT / "docs" / "image.md").read_text(encoding="utf-8")
    assert "../shared" not in text and "GPU.md" not in text
    assert os.sep.join(["..", "builder"]) in text or "../builder" in text
