"""Flow-matching Euler sampling as a plain function, and its time grid.

The numbers follow trellis2's ``FlowEulerSampler`` (``trellis2/pipelines/samplers/flow_euler.py``):
the same grid, the same update, the same x0 conversions. What differs is the shape: the sampler is a
function of a *denoiser* ``(x_t, t, step) -> velocity`` in the style of k-diffusion, so guidance and
view aggregation wrap the model instead of living in mixins, and nothing is kept between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

Denoiser = Callable[[Any, float, int], Any]
"""``denoiser(x_t, t, step) -> velocity``: ``t`` in [0, 1], ``step`` counts from 0 per sampling call."""


@dataclass(frozen=True)
class StepInfo:
    """What a sampling step hands to the callback: for progress, timing and previews.

    ``x`` is the sample after the step (at ``t_prev``); ``x0`` is the clean sample predicted at ``t``.
    """

    step: int
    steps: int
    t: float
    x: Any
    x0: Any


def time_grid(steps: int, rescale_t: float = 1.0) -> list[float]:
    """Return trellis2's ``steps + 1`` times from 1 to 0, warped by ``rescale_t``.

    Computed with numpy exactly as ``FlowEulerSampler.sample`` does, so the floats match bit for
    bit; ``rescale_t > 1`` spends more steps near t = 1 (high noise).
    """
    if steps < 1:
        raise ValueError(f"steps: {steps} is not a positive integer")
    if not rescale_t > 0:
        raise ValueError(f"rescale_t: {rescale_t} is not a positive number")
    t_seq = np.linspace(1, 0, steps + 1)
    t_seq = rescale_t * t_seq / (1 + (rescale_t - 1) * t_seq)
    return t_seq.tolist()


def x0_from_velocity(x_t: Any, t: float, v: Any, sigma_min: float) -> Any:
    """Clean sample predicted from velocity ``v`` at time ``t`` (trellis2's ``_pred_to_xstart``)."""
    return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v


def velocity_from_x0(x_t: Any, t: float, x0: Any, sigma_min: float) -> Any:
    """Velocity that predicts clean sample ``x0`` at time ``t`` (trellis2's ``_xstart_to_pred``)."""
    return ((1 - sigma_min) * x_t - x0) / (sigma_min + (1 - sigma_min) * t)


@torch.no_grad()
def sample_flow_euler(
    denoiser: Denoiser,
    noise: Any,
    ts: Sequence[float],
    *,
    sigma_min: float,
    callback: Callable[[StepInfo], None] | None = None,
    disable: bool | None = None,
    desc: str | None = None,
) -> Any:
    """Integrate the flow from ``noise`` at ``ts[0]`` down to ``ts[-1]`` with Euler steps.

    Step ``i`` calls ``denoiser(x, ts[i], i)`` and moves ``x`` to ``ts[i + 1]`` along the
    predicted velocity, as ``FlowEulerSampler.sample_once``. ``sigma_min`` only serves the x0
    handed to ``callback``. The tqdm bar is off when ``disable`` is True, or when it is None and
    stderr is not a terminal (worker logs).
    """
    if len(ts) < 2:
        raise ValueError(f"ts: needs at least 2 times (one step), got {len(ts)}")
    steps = len(ts) - 1
    x = noise
    for step in tqdm(range(steps), desc=desc, disable=disable):
        t, t_prev = ts[step], ts[step + 1]
        v = denoiser(x, t, step)
        x_t, x = x, x - (t - t_prev) * v
        if callback is not None:
            x0 = x0_from_velocity(x_t, t, v, sigma_min)
            callback(StepInfo(step=step, steps=steps, t=t, x=x, x0=x0))
    return x
