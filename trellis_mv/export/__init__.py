"""Mesh -> GLB: the only package that imports CuMesh and FlexGEMM, always inside functions.

``export_glb`` is o_voxel's ``to_glb`` taken apart into timed phases and made faster where the time
went (``bake``), with closest points on the decoded surface in torch (``closest``, in place of
CuMesh's research-only cuBVH), mesh hygiene in torch (``clean``), UV padding and texture encoding (``texture``),
Draco geometry (``compress``) and our own GLB writer (``glb``). ``run`` puts them in order.

Importing the package imports only the options (``options``: the schema and the ``remote`` client
read them without torch); ``ExportedGlb`` and ``export_glb`` load ``run`` on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import Compression, GlbOptions

__all__ = ["Compression", "ExportedGlb", "GlbOptions", "export_glb"]

_FROM_RUN = ("ExportedGlb", "export_glb")


def __getattr__(name: str) -> Any:
    if name not in _FROM_RUN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".run", __name__), name)
