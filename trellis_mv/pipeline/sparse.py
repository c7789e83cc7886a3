"""Batching trellis2's ``SparseTensor`` latents: one copy per model pass, batch indices 0..k-1."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["SparseBatcher"]


class SparseBatcher:
    """``sampling.Batcher`` for trellis2's ``SparseTensor``: one copy of the latent per pass, batch indices 0..k-1.

    The latent keeps the same coordinates tensor through a sampling call (trellis2's arithmetic uses
    ``replace``), so the batched coordinates are built once per ``k`` and reused: their spatial cache
    (layout, RoPE phases) survives across steps, as it does for trellis2's single latent.

    It is also ``sampling.RaggedConds``: trellis2's structured-latent flows (``SLatFlowModel.forward``)
    take a list of per-sample ``[L_i, C]`` conds, make it a ``VarLenTensor`` and attend each sample to
    its own tokens (flash-attn's varlen call), so conds of different lengths share one call.
    """

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._templates: dict[int, Any] = {}
        self._first: Any = None

    def cat(self, items: list[Any]) -> Any:
        """Stack batch-1 sparse tensors with batch indices 0..k-1 (offsetting larger batches)."""
        from trellis2.modules.sparse import sparse_cat

        first = items[0]
        if first.shape[0] != 1 or any(item.coords is not first.coords for item in items):
            return sparse_cat(items)
        if self._source is not first.coords:
            self._source, self._templates = first.coords, {}
        self._first = first
        k = len(items)
        feats = torch.cat([item.feats for item in items], dim=0)
        if k not in self._templates:
            self._templates[k] = sparse_cat(items)
            return self._templates[k]
        return self._templates[k].replace(feats)

    def cat_conds(self, conds: list[torch.Tensor]) -> list[torch.Tensor]:
        """Batch-1 conds of different lengths as the list of ``[L_i, C]`` tensors trellis2's flows take."""
        return [cond[0] for cond in conds]

    def split(self, batched: Any, n: int) -> list[Any]:
        """Inverse of :meth:`cat`: ``n`` parts of equal batch size, batch indices from 0 again."""
        from trellis2.modules.sparse import SparseTensor

        size = batched.shape[0]
        if n < 1 or size % n:
            raise ValueError(f"n: cannot split a batch of {size} into {n} equal parts")
        template = self._templates.get(n)
        if template is not None and size == n and batched.coords is template.coords:
            return [self._first.replace(part) for part in batched.feats.chunk(n)]
        per, layout, parts = size // n, batched.layout, []
        for j in range(n):
            rows = slice(layout[j * per].start, layout[(j + 1) * per - 1].stop)
            coords = batched.coords[rows].clone()
            coords[:, 0] -= j * per
            parts.append(SparseTensor(feats=batched.feats[rows], coords=coords))
        return parts
