"""Classifier-free guidance as small pure functions, with trellis2's numbers.

Mirrors ``ClassifierFreeGuidanceSamplerMixin._inference_model`` (the combination and the rescale)
and ``GuidanceIntervalSamplerMixin._inference_model`` (the interval test) from
``trellis2/pipelines/samplers/``; :func:`trellis_mv.sampling.multiview.guided` decides which passes
run and calls these on their results. Every function is duck-typed: trellis2's ``SparseTensor``
works as it does upstream (its ``std`` is the population std, a dense tensor's the unbiased one;
we call ``.std`` exactly as trellis2 does, so each type keeps its own upstream behaviour).
"""

from __future__ import annotations

from typing import Any

from trellis_mv.sampling.euler import velocity_from_x0, x0_from_velocity


def cfg(pos: Any, neg: Any, strength: float) -> Any:
    """TRELLIS.2's guidance ``strength * pos + (1 - strength) * neg``.

    Not TRELLIS v1's ``(1 + s) * pos - s * neg``: the same ``strength`` means one more unit of
    guidance there, so TRELLIS.2's 7.5 would over-guide under v1's formula.
    """
    return strength * pos + (1 - strength) * neg


def rescale_cfg(x_t: Any, t: float, pos: Any, guided: Any, rescale: float, sigma_min: float) -> Any:
    """Pull the guided velocity's x0 back toward the std of the positive x0, by ``rescale``.

    trellis2's CFG rescale: both predictions go to x0 space, the guided x0 is scaled to the per-sample
    std (over every dim but the batch) of the positive x0, blended with weight ``rescale`` and
    converted back to a velocity. ``rescale <= 0`` returns ``guided`` untouched, as trellis2 skips
    the step then.
    """
    if rescale <= 0:
        return guided
    x0_pos = x0_from_velocity(x_t, t, pos, sigma_min)
    x0_cfg = x0_from_velocity(x_t, t, guided, sigma_min)
    std_pos = x0_pos.std(dim=list(range(1, x0_pos.ndim)), keepdim=True)
    std_cfg = x0_cfg.std(dim=list(range(1, x0_cfg.ndim)), keepdim=True)
    x0_rescaled = x0_cfg * (std_pos / std_cfg)
    x0 = rescale * x0_rescaled + (1 - rescale) * x0_cfg
    return velocity_from_x0(x_t, t, x0, sigma_min)


def in_interval(t: float, interval: tuple[float, float]) -> bool:
    """Whether guidance applies at ``t``: ``interval[0] <= t <= interval[1]``, both ends inclusive."""
    return interval[0] <= t <= interval[1]
