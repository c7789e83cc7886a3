"""What every GPU script sets up first: import paths, attention backends, and the project's commit.

The same choices as tests/gpu/conftest.py: dense attention through torch SDPA, and where flash-attn
is missing, the per-segment SDPA ``flash_attn`` stand-in of ``tests/gpu/shims`` for sparse
attention. ``PYTHONPATH`` is set too, so processes the scripts start (a fresh worker, the real
``handler.py``) import the same way.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Mapping

ROOT = Path(__file__).resolve().parent.parent
SHIMS = ROOT / "tests" / "gpu" / "shims"


def setup() -> str:
    """Put the repository, ``tests/gpu`` and (without flash-attn) the shim first; returns what attention runs."""
    paths = [str(ROOT), str(ROOT / "tests" / "gpu")]
    os.environ.setdefault("ATTN_BACKEND", "sdpa")
    label = "flash_attn (sparse); dense: " + os.environ["ATTN_BACKEND"]
    if importlib.util.find_spec("flash_attn") is None:
        paths.insert(0, str(SHIMS))
        os.environ.setdefault("SPARSE_ATTN_BACKEND", "flash_attn")
        label = "per-segment torch SDPA shim (tests/gpu/shims/flash_attn); dense: torch SDPA"
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    return label


def commit(root: Path = ROOT, env: Mapping[str, str] = os.environ) -> str:
    """This project's commit (``-dirty`` with uncommitted changes), never that of an enclosing repository.

    ``TRELLIS_MV_COMMIT`` wins when set: tests/gpu/device_run.sh sets it from ``.cache/commit``, since
    the device's copy of the tree may carry a ``.git`` of an older checkout. Else git, where the
    project root has ``.git``; else ``unknown``.
    """
    if env.get("TRELLIS_MV_COMMIT"):
        return env["TRELLIS_MV_COMMIT"]
    if (root / ".git").exists():
        try:
            head = _git(root, "rev-parse", "--short=12", "HEAD")
            return head + ("-dirty" if _git(root, "status", "--porcelain", "--untracked-files=no") else "")
        except (OSError, subprocess.CalledProcessError):
            pass
    return "unknown"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()
