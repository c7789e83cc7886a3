"""Nothing the worker imports needs nvdiffrast, and the start-up line recognises what it loads.

In a fresh process where nvdiffrast cannot be imported (as in the image, which does not install it;
the harness has it for comparisons), the image's extensions, trellis2's pipeline and shape decoder
(which imports ``o_voxel.convert``, hence o_voxel's ``__init__``) and every trellis_mv module import,
and the start-up line names CuMesh's cuBVH by the module ``trellis_mv.licences`` expects.
Record key: ``licence_startup_without_nvdiffrast``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trellis_mv import licences

ROOT = Path(__file__).resolve().parents[2]
CODE = """
import importlib, sys
sys.modules["nvdiffrast"] = None  # any import of it fails, as in the image
import o_voxel, cumesh, flex_gemm
from trellis2.models.sc_vaes import fdg_vae
from trellis2.pipelines import Trellis2ImageTo3DPipeline
for path in sorted(__import__("pathlib").Path("trellis_mv").rglob("*.py")):
    importlib.import_module(".".join(path.with_suffix("").parts).removesuffix(".__init__"))
from trellis_mv.licences import startup_line
from trellis_mv.startup import check_extensions
print("attention:", check_extensions())
print(startup_line(()))
"""


def test_the_worker_imports_without_nvdiffrast_and_names_cubvh_at_start(record) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    done = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    record("licence_startup_without_nvdiffrast", {"returncode": done.returncode, "stdout": done.stdout.strip().splitlines(),
                                                  "stderr": done.stderr.strip().splitlines()[-5:]})
    assert done.returncode == 0, done.stderr
    assert licences.NON_COMMERCIAL["cumesh._cubvh"] in done.stdout.splitlines()[-1]
