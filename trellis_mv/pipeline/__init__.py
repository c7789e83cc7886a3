"""The trellis2 adapter: the only package that imports trellis2 (inside functions).

``loading`` builds TRELLIS.2's pipeline from local folders; ``running`` runs one job on it
(``TrellisGenerator``, the worker's GPU ``Generator``) through the three sampling stages of
``stages``; ``preprocess``, ``sparse`` and ``offload`` are their parts. ``prefetch`` and
``kernels`` are what a worker starts before it imports torch (``trellis_mv.headstart``), ``warm``
what it runs once each model is loaded.

Importing the package imports none of its modules: the public names below load their module on
first use (PEP 562), so ``trellis_mv.pipeline.prefetch`` can start reading the weights while torch
is still being imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Latents", "SparseBatcher", "TrellisGenerator", "load_generator", "load_pipeline"]

_HOMES = {"Latents": "running", "TrellisGenerator": "running", "SparseBatcher": "sparse",
          "load_generator": "loading", "load_pipeline": "loading"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
