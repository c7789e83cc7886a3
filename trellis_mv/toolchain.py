"""Can this machine build what Triton builds the first time it launches a kernel?

FlexGEMM's sparse convolutions run on Triton, and Triton compiles a small C launcher module per
kernel signature on first use (``triton/runtime/build.py``, ``_build``): the compiler is ``$CC``,
else ``gcc``, else ``clang`` from ``PATH``; it runs ``cc launcher.c -O3 -shared -fPIC -o
launcher<EXT_SUFFIX> -I<Python include dir>`` and imports the result. Without a compiler or the
Python headers the worker starts and its first job fails with "Failed to find C compiler".
:func:`check_toolchain` does the same on a one-function module and imports it, so the image build
(``builder/check_image.py --toolchain``) and the worker's start-up name what is missing instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Mapping

from .errors import StartupError

__all__ = ["check_toolchain", "python_include_dir"]

_PROBE = """
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "trellis_mv_cc_probe", NULL, -1, methods};
PyMODINIT_FUNC PyInit_trellis_mv_cc_probe(void) { return PyModule_Create(&module); }
"""
_REMEDY = "install gcc, libc6-dev and python3.11-dev (builder/install_system.sh runtime)"


def python_include_dir() -> Path:
    """The include folder Triton passes to the compiler (Debian's posix_local scheme mapped as Triton maps it)."""
    scheme = sysconfig.get_default_scheme()
    return Path(sysconfig.get_paths(scheme="posix_prefix" if scheme == "posix_local" else scheme)["include"])


def check_toolchain(env: Mapping[str, str] = os.environ, include_dir: Path | None = None) -> str:
    """Compile and import a C extension the way Triton does; returns the compiler used.

    ``env`` is where ``CC`` and ``PATH`` are read (the process environment, which Triton reads too).
    Raises ``StartupError`` naming the missing compiler, header or the compiler's first error line.
    """
    include_dir = python_include_dir() if include_dir is None else include_dir
    path = env.get("PATH", "")
    cc = env.get("CC") or shutil.which("gcc", path=path) or shutil.which("clang", path=path)
    if not cc:
        raise StartupError(f"toolchain: no C compiler (CC unset, no gcc or clang on PATH); Triton compiles a "
                           f"launcher at its first kernel launch: {_REMEDY}")
    if not (include_dir / "Python.h").is_file():
        raise StartupError(f"toolchain: {include_dir / 'Python.h'} is missing (the Python headers Triton "
                           f"compiles against): {_REMEDY}")
    with tempfile.TemporaryDirectory(prefix="trellis_mv_cc_") as folder:
        source = Path(folder) / "probe.c"
        source.write_text(_PROBE, encoding="utf-8")
        library = Path(folder) / f"trellis_mv_cc_probe{sysconfig.get_config_var('EXT_SUFFIX')}"
        command = [cc, str(source), "-O3", "-shared", "-fPIC", "-o", str(library), f"-I{include_dir}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                                  env={**env, "PATH": path})
        except OSError as error:
            raise StartupError(f"toolchain: cannot run {cc} ({error.strerror}): {_REMEDY}") from None
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip()[:200])
            raise StartupError(f"toolchain: {cc} cannot build a Python extension ({first}): {_REMEDY}")
        spec = importlib.util.spec_from_file_location("trellis_mv_cc_probe", library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if module.add(2, 3) != 5:
            raise StartupError(f"toolchain: an extension built by {cc} computed {module.add(2, 3)}, expected 5")
    return f"{cc} builds and loads Python extensions against {include_dir}"
