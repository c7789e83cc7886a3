"""README stays true to the code: what a test can check about it is checked here.

Its variables are the ones read, its field tables the request's and the answer's fields, its numbers
the code's limits, its stand-in command a generator that loads, its install story the one ``.ci/run``
follows, and its links (and docs/gpu.md's) point at files of this repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import png_b64

from trellis_mv.config import Settings, env_var_names
from trellis_mv.factory import STANDIN
from trellis_mv.limits import MAX_EXPIRES_IN, MIN_EXPIRES_IN
from trellis_mv.schema import JobInput
from trellis_mv.standin import StandInGenerator
from trellis_mv.worker import run_job

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(title, 1)[1].split("\n#", 1)[0]


def first_column(text: str) -> list[str]:
    """The backquoted names in the first column of the markdown table rows of ``text``."""
    names = []
    for cell in re.findall(r"^\| ([^|]+) \|", text, re.M):
        names += re.findall(r"`([^`]+)`", cell)
    return names


def test_every_environment_variable_is_documented_once_and_nothing_else():
    documented = re.findall(r"^\| `([A-Z0-9_]+)` \|", section("## Environment variables"), re.M)
    assert sorted(documented) == sorted(env_var_names())


def test_the_input_table_lists_every_request_field():
    table = section("`input` fields").split("**Errors.**")[0]
    assert first_column(table) == [*JobInput.model_fields]


def test_the_answer_table_lists_every_field_of_an_answer():
    answer = run_job({"id": "r", "input": {"images": [png_b64()], "seed": 1, "pipeline_type": "512",
                                           "output": {"preview": True}}},
                     settings=Settings(), generator=StandInGenerator(), store=None)
    table = section("The answer's fields:").split("`input` fields")[0]
    assert sorted(first_column(table)) == sorted(answer)


def test_the_numbers_are_the_codes():
    settings = Settings()
    assert f"{settings.max_image_pixels:,} pixels" in README
    assert f"`{settings.max_image_pixels}`" in section("## Environment variables")
    assert f"up to {settings.max_base64_glb_bytes // 1_000_000} MB" in README
    assert f'"expires_in": {MIN_EXPIRES_IN}–{MAX_EXPIRES_IN}' in README
    assert f"seconds: {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}" in README


def test_the_stand_in_commands_name_a_generator_that_loads():
    named = set(re.findall(r"TRELLIS_MV_GENERATOR=(\S+)", README))
    assert named == {STANDIN}
    module, _, name = STANDIN.partition(":")
    assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_the_readme_test_command_is_what_ci_runs():
    assert "```sh\n.ci/run\n```" in README
    assert "\npython -m pytest || status=$?\n" in CI and '\n"$image" -m pytest || status=$?\n' in CI
    assert "`python -m pytest`" in README and "`.venv-image`" in README
    default_spec = re.search(r"torch_spec=\$\{TORCH_SPEC:-([^}]+)\}", CI).group(1)
    cpu_index = re.search(r"^cpu_index=(\S+)$", CI, re.M).group(1)
    assert f"(default\n`{default_spec}`)" in README or f"(default `{default_spec}`)" in README
    assert f"`{cpu_index}`" in README and cpu_index in section("## Try it without a GPU")


@pytest.mark.parametrize("document", ["README.md", "docs/gpu.md"])
def test_links_point_into_the_repository(document):
    text = (ROOT / document).read_text(encoding="utf-8")
    assert "GPU.md" not in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("https://"):
            assert (ROOT / document).parent.joinpath(target).resolve().exists(), target
