"""Guidance and multi-view aggregation as one wrapper around the flow model.

``guided(model, views, neg_cond, ...)`` returns a denoiser ``(x_t, t, step) -> velocity`` for
:func:`trellis_mv.sampling.euler.sample_flow_euler`; build one per sampling call (per stage).

How this maps to TRELLIS.2 (``trellis2/pipelines/samplers/``, at 5565d240c4a4)
    ``FlowEulerGuidanceIntervalSampler`` is ``GuidanceIntervalSamplerMixin`` +
    ``ClassifierFreeGuidanceSamplerMixin`` + ``FlowEulerSampler``, assembled by MRO: each class
    overrides ``_inference_model`` and calls ``super()``. The interval mixin sets the strength to 1
    outside ``guidance_interval`` (both ends inclusive); the CFG mixin runs the conditional pass alone
    at strength 1, the negative pass alone at strength 0, otherwise both (two model calls), combines
    them as ``s * pos + (1 - s) * neg`` and applies ``guidance_rescale`` in x0 space;
    ``FlowEulerSampler`` calls ``model(x_t, 1000 * t, cond)`` and takes the Euler step. Here the same
    numbers come from ``in_interval``, ``cfg``, ``rescale_cfg`` (guidance.py), ``predict_many``
    (batching.py) and ``sample_flow_euler`` (euler.py), composed in the one function below. With one
    view every mode is that sampler: bit for bit with ``max_batch=1``, to float tolerance when the
    positive and negative passes share a batch.

How this maps to TRELLIS v1 (``trellis/pipelines/trellis_image_to_3d.py``)
    ``run_multi_image`` wraps each stage in ``inject_sampler_multi_image``, which replaces the
    sampler's ``_inference_model`` for the duration. The two modes are v1's; the rest differs:

    - v1's multidiffusion hard-codes v1's CFG parametrisation ``(1 + s) * pos - s * neg``. With
      TRELLIS.2's strengths (7.5) that is 8.5 pos - 7.5 neg instead of 7.5 pos - 6.5 neg: it
      over-guides. It also knows no ``guidance_rescale``, which TRELLIS.2's stages rely on. Here the
      aggregated positive goes through TRELLIS.2's own ``cfg`` and ``rescale_cfg``, and the
      rescale's std reference is the aggregated positive prediction.
    - v1 loops over the views, one model call each, plus a separate negative pass. Here the views in
      play and the negative pass, computed once since ``neg_cond`` is the same for every view, go
      through the model as one batch (chunked under ``max_batch``).
    - v1's stochastic mode pops step indices from a list built once per injection, so a sampler
      called twice within it (TRELLIS.2's cascade samples the shape latent twice) runs out of
      indices or starts mid-schedule. Here step ``i`` uses ``views[i % N]`` with ``i`` from the
      sampler, so every sampling call starts at view 0 and nothing is remembered.
    - v1 patches methods with ``setattr`` and ``__get__`` inside a generator context manager with
      no ``try/finally``: an exception leaves the sampler patched. Here nothing is patched.

Modes are dispatched through ``_PLANS``: a plan says, for a step, which conditions are in play and
how their predictions combine; the negative condition is the same for every mode.

The "concat" mode (not in v1) gives every step every view for the cost of about one: its one
condition is all views' tokens concatenated on the sequence axis (``[1, N*L, C]``), so each of
trellis2's cross-attention layers (``MultiHeadAttention`` / ``SparseMultiHeadAttention`` with
``type="cross"`` in ``trellis2/modules``) attends over every view's tokens at once. Those layers
project the cond token by token (``to_kv``, the per-head ``k_rms_norm``), apply no positional
encoding to the keys (RoPE is applied in self-attention only) and take no mask or bias,
so softmax attention sees the tokens as a set: the order of the views does not matter, and N copies
of the same tokens weigh as one copy (each copy's softmax weight divides by N). Hence N identical
views are exactly one view. The negative pass is the one-view negative itself, ``neg_cond`` of one
view's length: trellis2's sparse flows take the two conds of different lengths in one call (a list,
attended per sample, ``RaggedConds``), and for the dense sparse-structure flow, which takes one cond
tensor per call, ``predict_many`` runs the two in separate calls. (Tiling the negative N times to
the positive's length would give the same velocity, but costs the negative pass N-fold keys: by
the cross-attention's token arithmetic, about a quarter of concat's extra time at 1024_cascade
with 4 views.) The flows hand the cond
to every block unchanged but for a dtype cast. The views cannot be weighed in this mode: that needs
a per-key bias on the attention logits, and the keys are made and normalised inside trellis2's
layers, which we do not patch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from typing import Any

import torch

from trellis_mv.sampling.batching import Batcher, predict_many
from trellis_mv.sampling.euler import Denoiser
from trellis_mv.sampling.guidance import cfg, in_interval, rescale_cfg

Combine = Callable[[list[Any]], Any]
Plan = Callable[[int], tuple[list[torch.Tensor], Combine]]
# (views, normalised weights) -> the plan
PlanFactory = Callable[[list[torch.Tensor], tuple[float, ...]], Plan]


def _first(preds: list[Any]) -> Any:
    return preds[0]


def _stochastic(views: list[torch.Tensor], weights: tuple[float, ...]) -> Plan:
    def plan(step: int) -> tuple[list[torch.Tensor], Combine]:
        return [views[step % len(views)]], _first

    return plan


def _multidiffusion(views: list[torch.Tensor], weights: tuple[float, ...]) -> Plan:
    def mean(preds: list[Any]) -> Any:
        return reduce(operator.add, (w * p for w, p in zip(weights, preds, strict=True)))

    def plan(step: int) -> tuple[list[torch.Tensor], Combine]:
        return views, mean

    return plan


def _concat(views: list[torch.Tensor], weights: tuple[float, ...]) -> Plan:
    fused = [torch.cat(views, dim=1)]  # once per sampling call, not per step

    def plan(step: int) -> tuple[list[torch.Tensor], Combine]:
        return fused, _first

    return plan


_PLANS: dict[str, PlanFactory] = {
    "stochastic": _stochastic,
    "multidiffusion": _multidiffusion,
    "concat": _concat,
}
MODES: tuple[str, ...] = tuple(_PLANS)
"""Names accepted by :func:`guided` as ``mode``."""


def _normalised(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / n,) * n
    if len(weights) != n:
        raise ValueError(f"weights: expected {n} values (one per view), got {len(weights)}")
    values = []
    for i, w in enumerate(weights):
        try:
            value = float(w)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"weights[{i}]: {w!r} is not a positive finite number")
        values.append(value)
    total = math.fsum(values)
    return tuple(w / total for w in values)


def guided(
    model: Callable[..., Any],
    views: Sequence[torch.Tensor],
    neg_cond: torch.Tensor,
    *,
    mode: str,
    strength: float,
    rescale: float,
    interval: tuple[float, float],
    sigma_min: float,
    batcher: Batcher[Any],
    max_batch: int | None = None,
    weights: Sequence[float] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Denoiser:
    """Wrap ``model`` into a denoiser that steers one sample with every view and CFG.

    ``views`` holds one cond per view (``[1, L, C]``), ``neg_cond`` the negative cond (zeros like one
    view). ``mode`` is one of :data:`MODES`: "stochastic" conditions step ``i`` on
    ``views[i % N]`` (the cost of one view); "multidiffusion" averages the velocities under all
    views, weighted by ``weights`` (positive, normalised to sum 1; equal when None); "concat" runs
    one pass on every view's tokens concatenated (``[1, N*L, C]``) against the one-view ``neg_cond``
    (see the module docstring).

    Per step, as TRELLIS.2's ``FlowEulerGuidanceIntervalSampler``: outside ``interval`` or at
    ``strength == 1`` only the view passes run; at ``strength == 0`` only the negative pass;
    otherwise the view passes and one negative pass run as one :func:`predict_many` call, the view
    predictions are combined, then :func:`cfg` and :func:`rescale_cfg` (``rescale``,
    ``sigma_min``) apply to that combination. ``model_kwargs`` (e.g. ``concat_cond``) reach every
    pass; ``max_batch`` caps the passes per model call. Raises ValueError for an unknown mode, no
    views, or bad weights.
    """
    if mode not in _PLANS:
        raise ValueError(f"mode: {mode!r} is not one of {', '.join(map(repr, MODES))}")
    views = list(views)
    if not views:
        raise ValueError("views: needs at least one view condition")
    if weights is not None and mode != "multidiffusion":
        raise ValueError(f"weights: only the 'multidiffusion' mode weighs views, not {mode!r}")
    plan = _PLANS[mode](views, _normalised(weights, len(views)))
    kwargs = dict(model_kwargs or {})

    def run(x_t: Any, t: float, conds: list[torch.Tensor]) -> list[Any]:
        return predict_many(model, x_t, t, conds, batcher, max_batch=max_batch, model_kwargs=kwargs)

    def denoise(x_t: Any, t: float, step: int) -> Any:
        conds, combine = plan(step)
        if not in_interval(t, interval) or strength == 1:
            return combine(run(x_t, t, conds))
        if strength == 0:
            return run(x_t, t, [neg_cond])[0]
        *view_preds, neg = run(x_t, t, [*conds, neg_cond])
        pos = combine(view_preds)
        return rescale_cfg(x_t, t, pos, cfg(pos, neg, strength), rescale, sigma_min)

    return denoise
