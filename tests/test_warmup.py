"""The export warm-up's imports: made while the compiling child runs, none left for after it."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap

from trellis_mv import warmup


def _absolute_imports(function) -> list[str]:
    """``function``'s ``from . import`` statements, written from the package ``trellis_mv``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return [f"from trellis_mv{'.' + node.module if node.module else ''} import {', '.join(a.name for a in node.names)}"
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1]


def test_the_export_warm_up_imports_ahead_every_module_its_export_needs():
    statements = _absolute_imports(warmup._export_sphere)
    assert len(statements) == 3
    code = "\n".join([
        "import importlib, json, sys",
        "from trellis_mv import warmup",
        "for module in warmup._EXPORT_MODULES: importlib.import_module(module, 'trellis_mv')",
        "before = set(sys.modules)",
        *statements,
        "print(json.dumps(sorted(set(sys.modules) - before)))",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
