"""The export warm-up's child process (``python -m trellis_mv.warmup --compile``), on an empty and on a filled Triton cache.

At start the worker's export warm-up waits for this child, which fills Triton's cache, then exports
the same sphere itself. On a fast disk the two ended 2.3 s after the load (H200, 2026-12-05: the
child 15.2 s from the launch, the worker's own export 5.7 s beside the load). The child run twice,
the second time finding every kernel compiled, says which phases are compilation and which are
the export's own work, the part the worker's export repeats.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _child(triton_cache: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "trellis_mv.warmup", "--compile"], capture_output=True, text=True,
                          env={**os.environ, "TRITON_CACHE_DIR": str(triton_cache)}, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_export_warm_up_child_compiles_once(tmp_path: Path, record) -> None:
    empty = _child(tmp_path / "triton")
    filled = _child(tmp_path / "triton")
    record("warmup_child_empty_cache", empty)
    record("warmup_child_filled_cache", filled)
    assert set(empty["phases"]) == set(filled["phases"])
    assert filled["export_s"] < empty["export_s"]
