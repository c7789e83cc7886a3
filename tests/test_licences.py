"""Licences users can trust: nothing that builds or runs the image names nvdiffrast, README's licence
table is what builder/licences.py writes from builder/licences.json and the pins and covers every pin,
locked package and weights repository, and the worker says at start and in each answer which
non-commercial component it loaded or ran."""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
from pathlib import Path

import pytest
from cpu_generator import WithRemover
from helpers import png_b64

from trellis_mv import licences
from trellis_mv.config import Settings
from trellis_mv.factory import STANDIN, build_generator
from trellis_mv.standin import NOT_DONE, StandInGenerator
from trellis_mv.worker import run_job

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "builder"))
import licences as table  # noqa: E402  (builder/ is scripts, not a package)

DATA = table.load()
PINS = table.variant_pins()
LOCKS = {variant: table.locked(variant) for variant in PINS}
MANIFEST = json.loads((ROOT / "builder" / "weights_manifest.json").read_text(encoding="utf-8"))
# Every file that builds or runs the image: what the Dockerfile copies in (builder/ with the locks,
# trellis_mv/, handler.py, pyproject.toml), the Dockerfile and its ignore list, and the image workflow.
IMAGE_FILES = {
    "build": ["Dockerfile", ".dockerignore", "handler.py", "test_input.json", "pyproject.toml",
              ".github/workflows/image.yml", "builder"],
    "run": ["trellis_mv"],
}
RMBG = "briaai/RMBG-2.0"
CUTOUT = png_b64(colour=(200, 40, 40, 128))  # a view with a real alpha channel


# Building names it in any form (a pin, a fetch, an install); running would need an import. The
# rasterizer's docstrings may still cite nvdiffrast as the source of its conventions.
NAMED = {"build": re.compile(r"nvdiffrast", re.IGNORECASE),
         "run": re.compile(r"^\s*(?:import nvdiffrast|from nvdiffrast\b)|import_module\([\"']nvdiffrast", re.MULTILINE)}


def named_files(area: str) -> list[str]:
    """The files of ``area`` (folders walked) that name (build) or import (run) nvdiffrast."""
    files = [path for name in IMAGE_FILES[area] for path in ([ROOT / name] if (ROOT / name).is_file()
                                                             else sorted((ROOT / name).rglob("*")))]
    return [str(path.relative_to(ROOT)) for path in files if path.is_file() and "__pycache__" not in path.parts
            and NAMED[area].search(path.read_text(encoding="utf-8", errors="replace"))]


@pytest.mark.parametrize("area", ["build", "run"])
def test_nothing_that_builds_or_runs_the_image_names_nvdiffrast(area: str) -> None:
    """Its licence allows research and evaluation only (issue 20): the image neither installs nor imports it.
    tests/gpu/ may still build it, for comparisons only (tests/gpu/device_run.sh, HARNESS_ONLY)."""
    assert named_files(area) == []


def test_readme_holds_the_table_builder_licences_writes() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert table.rewrite(readme, table.section(DATA, PINS, LOCKS)) == readme


def test_the_data_covers_every_pin_locked_package_and_weights_repository() -> None:
    assert table.problems(DATA, PINS, LOCKS, MANIFEST) == []


def without(kind: str, match: str) -> dict:
    data = copy.deepcopy(DATA)
    if kind == "packages":
        del data["packages"][match]
    else:
        data[kind] = [entry for entry in data[kind] if not entry["name"].startswith(match)]
    return data


@pytest.mark.parametrize(("data", "problems"), [
    (without("components", "cubvh"), ["pin CUBVH_COMMIT has no row in builder/licences.json"]),
    (without("components", "PyTorch"), ["pin TORCH_VERSION has no row in builder/licences.json",
                                        "torch (builder/locks/runtime-cu124.txt) has no licence in builder/licences.json",
                                        "torch (builder/locks/runtime-cu128.txt) has no licence in builder/licences.json"]),
    (without("packages", "easydict"), ["easydict (builder/locks/runtime-cu124.txt) has no licence in builder/licences.json",
                                       "easydict (builder/locks/runtime-cu128.txt) has no licence in builder/licences.json"]),
    (without("weights", "RMBG-2.0"), ["weights pin RMBG_REVISION has no row in builder/licences.json",
                                      f"weights {RMBG} (builder/weights_manifest.json) has no row"]),
])
def test_a_component_missing_from_the_data_is_named(data: dict, problems: list[str]) -> None:
    assert table.problems(data, PINS, LOCKS, MANIFEST) == problems


def test_nothing_non_commercial_is_loaded_by_default() -> None:
    """The issue's goal. CuMesh's cuBVH (its BVH derives from NVIDIA's instant-ngp) was the last such
    component; the export finds closest points itself now (trellis_mv/export/closest.py)."""
    default = [entry["name"] for entry in [*DATA["components"], *DATA["weights"]]
               if entry["commercial"] == "no" and "optional" not in entry]
    assert default == []


def test_the_worker_recognises_every_non_commercial_row() -> None:
    rows = {entry["runtime"]: entry["name"] for entry in [*DATA["components"], *DATA["weights"]]
            if entry["commercial"] == "no"}
    assert set(licences.NON_COMMERCIAL) == set(rows)
    for name, label in licences.NON_COMMERCIAL.items():
        assert label.startswith(rows[name].split(" ")[0]), (name, label)


@pytest.mark.parametrize(("components", "line"), [
    ((), "licences: no non-commercial component loaded (README.md, Licences)"),
    (("microsoft/TRELLIS.2-4B", "ZhengPeng7/BiRefNet"), "licences: no non-commercial component loaded (README.md, Licences)"),
    (("microsoft/TRELLIS.2-4B", RMBG),
     f"licences: non-commercial components loaded: {licences.NON_COMMERCIAL[RMBG]}: what this worker makes with "
     "them may not be used commercially (README.md, Licences)"),
    (("my-remover",), "licences: no non-commercial component loaded; licence unknown to this image: my-remover "
                      "(README.md, Licences)"),
])
def test_the_startup_line(components: tuple, line: str) -> None:
    assert licences.startup_line(components) == line


@pytest.mark.parametrize(("generator", "background", "named"), [
    (STANDIN, "/models/BiRefNet", []),
    ("cpu_generator:create_with_remover", RMBG, [licences.NON_COMMERCIAL[RMBG]]),
])
def test_the_worker_logs_the_line_once_at_start(generator: str, background: str, named: list, caplog) -> None:
    caplog.set_level(logging.INFO, logger="trellis_mv")
    build_generator(Settings(generator=generator, background_model=background))
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("licences: ")]
    assert len(lines) == 1 and all(label in lines[0] for label in named)
    assert ("no non-commercial component loaded" in lines[0]) == (not named)


@pytest.mark.parametrize(("generator", "image", "remove_background", "warnings"), [
    (StandInGenerator(), png_b64(), None, []),
    (WithRemover("ZhengPeng7/BiRefNet"), png_b64(), None, []),
    (WithRemover(RMBG), png_b64(), None, [f"licence: this job used {licences.NON_COMMERCIAL[RMBG]}: its output may "
                                          "not be used commercially"]),
    (WithRemover(RMBG), CUTOUT, None, []),  # a real alpha channel: the remover does not run
    (WithRemover(RMBG), CUTOUT, True, [f"licence: this job used {licences.NON_COMMERCIAL[RMBG]}: its "
                                                     "output may not be used commercially"]),
])
def test_a_job_that_ran_a_non_commercial_component_says_so(generator, image, remove_background, warnings, caplog) -> None:
    preprocess = {"preprocess": {"remove_background": "auto" if remove_background is None else remove_background}}
    answer = run_job({"id": "lic", "input": {"images": [image], "seed": 1, "pipeline_type": "512", **preprocess}},
                     settings=Settings(), generator=generator, store=None)
    assert [warning for warning in answer["warnings"] if not warning.startswith(NOT_DONE)] == warnings
    assert [r.getMessage() for r in caplog.records if "licence: " in r.getMessage()] == [f"job lic: {w}" for w in warnings]


def test_a_custom_generator_must_say_what_it_loaded() -> None:
    from trellis_mv.errors import StartupError

    with pytest.raises(StartupError, match="TRELLIS_MV_GENERATOR: builtins:str returned a generator without a "
                                           "'components' tuple"):
        build_generator(Settings(generator="builtins:str"))
