"""Run every model pass a denoising step needs as one batch, under an optional cap.

In the style of ComfyUI's ``calc_cond_batch``: the caller lists the conditions in play (the views,
and inside the guidance interval the one negative condition), ``predict_many`` replicates the
latent once per condition, runs the model on chunks of at most ``max_batch`` passes and hands back
one prediction per condition. Latent types differ (dense tensors for the sparse-structure flow,
trellis2's ``SparseTensor`` for the structured-latent flows), so concatenation goes through a
:class:`Batcher`; this module knows only the dense one, the pipeline adapter supplies the sparse one.

Conditions of different lengths (``concat``'s all-views cond beside the one-view negative) share a
call only where the batcher can pass them unpadded (:class:`RaggedConds`: trellis2's sparse flows
take a list of per-sample conds and attend within each); for any other batcher the chunk is cut
where the length changes, so no pass ever attends to keys that are not its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

X = TypeVar("X")


@runtime_checkable
class Batcher(Protocol[X]):
    """How to stack latents of one type along the batch axis and take them apart again."""

    def cat(self, items: list[X]) -> X:
        """Concatenate along the batch axis (for sparse tensors, offsetting batch indices)."""
        ...

    def split(self, batched: X, n: int) -> list[X]:
        """Inverse of :meth:`cat` for ``n`` parts of equal batch size."""
        ...


@runtime_checkable
class RaggedConds(Protocol):
    """A :class:`Batcher` whose model also takes conditions of different lengths in one call."""

    def cat_conds(self, conds: list[torch.Tensor]) -> Any:
        """One call's conditions, ``[1, L_i, C]`` each with lengths that differ, as the model takes them."""
        ...


class DenseBatcher:
    """:class:`Batcher` for dense ``torch.Tensor`` latents, batch on dim 0."""

    def cat(self, items: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate along dim 0."""
        return torch.cat(items, dim=0)

    def split(self, batched: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Split dim 0 into ``n`` equal parts."""
        if n < 1 or batched.shape[0] % n:
            raise ValueError(f"n: cannot split {batched.shape[0]} rows into {n} equal parts")
        return list(batched.split(batched.shape[0] // n, dim=0))


def predict_many(
    model: Callable[..., X],
    x: X,
    t: float,
    conds: Sequence[torch.Tensor],
    batcher: Batcher[X],
    *,
    max_batch: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> list[X]:
    """Predict the velocity at ``(x, t)`` under each of ``conds``; one result per cond, in order.

    Each chunk of ``k`` conditions becomes one call ``model(x_b, t_b, cond_b, **kw_b)`` with ``x``
    and every ``model_kwargs`` value replicated ``k`` times through ``batcher.cat``, the conds
    concatenated on dim 0 (each has as many rows as ``x``; of different lengths, ``batcher.cat_conds``
    where the batcher is :class:`RaggedConds`, else the chunk is cut where the length changes), and
    ``t_b`` built as trellis2's ``FlowEulerSampler._inference_model`` does: ``1000 * t`` as float32,
    one per batch row. A chunk of one condition calls the model on ``x`` itself, exactly as trellis2
    does. ``max_batch=None`` puts every condition in one chunk.
    """
    if not conds:
        raise ValueError("conds: needs at least one condition")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch: {max_batch} is not a positive integer or None")
    kwargs = dict(model_kwargs or {})
    preds: list[X] = []
    for chunk in _chunks(list(conds), max_batch, ragged=isinstance(batcher, RaggedConds)):
        k = len(chunk)
        if k == 1:
            x_b, cond_b, kw_b = x, chunk[0], kwargs
        else:
            x_b = batcher.cat([x] * k)
            equal = len({cond.shape[1] for cond in chunk}) == 1
            cond_b = torch.cat(chunk, dim=0) if equal else batcher.cat_conds(chunk)
            kw_b = {name: batcher.cat([value] * k) for name, value in kwargs.items()}
        t_b = torch.tensor([1000 * t] * x_b.shape[0], device=x_b.device, dtype=torch.float32)
        out = model(x_b, t_b, cond_b, **kw_b)
        preds.extend([out] if k == 1 else batcher.split(out, k))
    return preds


def _chunks(conds: list[torch.Tensor], max_batch: int | None, *, ragged: bool) -> list[list[torch.Tensor]]:
    """Consecutive runs of at most ``max_batch`` conds; without ``ragged``, also cut where the length changes."""
    chunks: list[list[torch.Tensor]] = []
    for cond in conds:
        last = chunks[-1] if chunks else None
        fits = last is not None and (max_batch is None or len(last) < max_batch)
        if fits and (ragged or last[-1].shape[1] == cond.shape[1]):
            last.append(cond)
        else:
            chunks.append([cond])
    return chunks
