"""The trellis2 adapter: the only package that imports trellis2 (inside functions).

``loading`` builds TRELLIS.2's pipeline from local folders; ``running`` runs one job on it
(``TrellisGenerator``, the worker's GPU ``Generator``) through the three sampling stages of
``stages``; ``preprocess``, ``sparse`` and ``offload`` are their parts.
"""

from .loading import load_generator, load_pipeline
from .running import Latents, TrellisGenerator
from .sparse import SparseBatcher

__all__ = ["Latents", "SparseBatcher", "TrellisGenerator", "load_generator", "load_pipeline"]
