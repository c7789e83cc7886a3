"""The cascade's resolution rule, shared by the TRELLIS.2 adapter and the stand-in generator.

trellis2's ``sample_shape_slat_cascade`` (5565d240c4a4) upsamples the 512 pass's structure and
quantizes it at the requested resolution; while that gives ``max_num_tokens`` (49152) tokens or
more, it tries 128 less, and it never goes under 1024. So ``1536_cascade`` may run at 1408, 1280,
1152 or 1024, and trellis2 only prints it. Here the fit is returned with every resolution tried, so
the answer can carry the resolution used and a warning a user can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sized

__all__ = ["LOWEST_RESOLUTION", "MAX_NUM_TOKENS", "CascadeFit", "fit_resolution"]

MAX_NUM_TOKENS = 49152  # trellis2's cascade token limit (``run``'s default)
LOWEST_RESOLUTION = 1024
_STEP = 128


@dataclass(frozen=True)
class CascadeFit:
    """The high-resolution pass's resolution, its structure there, and ``(resolution, tokens)`` per try."""

    resolution: int
    structure: Any
    tried: tuple[tuple[int, int], ...]
    limit: int

    def warnings(self, pipeline_type: str) -> list[str]:
        """One readable line when the resolution was lowered, else none."""
        (requested, tokens), (used, used_tokens) = self.tried[0], self.tried[-1]
        if used == requested:
            return []
        text = (
            f"pipeline_type {pipeline_type} ran at resolution {used}, not {requested}: the shape has {tokens} "
            f"tokens at {requested}, over the {self.limit} one pass of the cascade allows"
        )
        if used_tokens >= self.limit:
            text += f" (still {used_tokens} at {used}, the lowest resolution the cascade goes to)"
        return [text]


def fit_resolution(requested: int, quantize: Callable[[int], Sized], *, limit: int = MAX_NUM_TOKENS) -> CascadeFit:
    """trellis2's loop: ``quantize(resolution)`` at ``requested``, then 128 less while it has ``limit`` tokens or more."""
    tried = []
    resolution = requested
    while True:
        structure = quantize(resolution)
        tried.append((resolution, len(structure)))
        if len(structure) < limit or resolution == LOWEST_RESOLUTION:
            return CascadeFit(resolution, structure, tuple(tried), limit)
        resolution -= _STEP
