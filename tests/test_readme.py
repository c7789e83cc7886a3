"""The README stays true to the code: its variables are the ones read, its test command is the one CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from trellis_mv.config import env_var_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_environment_variable_is_documented_once_and_nothing_else():
    section = README.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M)
    assert sorted(documented) == sorted(env_var_names())


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "```sh\n.ci/run\n```" in README
    assert ci.rstrip().endswith("python -m pytest")
    assert "`python -m pytest`" in README
