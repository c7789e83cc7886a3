"""Who may import whom (DESIGN.md, "Layout"): every module imports on a CPU machine, only the two
adapters touch trellis2 (pipeline/) and CuMesh and FlexGEMM (export/), only the rasterizer's CUDA
kernels touch Triton (raster/), nothing imports o_voxel or nvdiffrast (non-commercial licence,
issue 20), and sampling/ is torch alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trellis_mv"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for path in PACKAGE.rglob("*.py")
)


def imported(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, anywhere in it (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_every_module_imports_without_trellis2_o_voxel_nvdiffrast_or_transformers():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "heavy = sorted({'trellis2', 'o_voxel', 'transformers', 'cumesh', 'flex_gemm', 'nvdiffrast'} & set(sys.modules))\n"
        "sys.exit(f'imported at module level: {heavy}' if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


ADAPTERS = [("trellis2", "pipeline/"), ("cumesh", "export/"), ("flex_gemm", "export/"), ("triton", ("raster/", "export/closest_kernel.py"))]


def users_of(package: str) -> set[str]:
    return {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if package in imported(path)}


@pytest.mark.parametrize(("package", "allowed"), ADAPTERS)
def test_only_the_adapters_import_trellis2_and_the_mesh_extensions(package, allowed):
    users = users_of(package)
    assert users and all(user.startswith(allowed) for user in users), users


@pytest.mark.parametrize("package", ["o_voxel", "nvdiffrast"])
def test_nothing_imports_o_voxel_or_nvdiffrast(package):
    # the export composes o_voxel's pieces itself; rasterization is our own (raster/)
    assert users_of(package) == set()


def test_sampling_needs_torch_and_nothing_of_ours_outside_it():
    for path in (PACKAGE / "sampling").glob("*.py"):
        third_party = imported(path) - set(sys.stdlib_module_names) - {"trellis_mv"}
        assert third_party <= {"torch", "numpy", "tqdm"}, path.name
        ours = {
            node.module for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.startswith("trellis_mv")
        }
        assert all(module.startswith("trellis_mv.sampling") for module in ours), path.name
