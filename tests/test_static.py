"""Pyflakes' checks (through ruff) over all of our Python, the GPU half included.

CI has no GPU, so the trellis2 adapter, the export's CUDA phases, tests/gpu and benchmarks/ never
run here: a name left undefined by a refactor or a merge would first fail on the device. ruff's
``F`` rules (undefined names, unused imports and variables, redefinitions) see them statically.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_undefined_names_or_unused_imports_anywhere():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--select", "F,E9", "--output-format",
         "concise", "handler.py", "trellis_mv", "tests", "benchmarks", "builder", "examples"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
