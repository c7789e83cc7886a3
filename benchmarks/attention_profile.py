"""Where a flow's time goes: timers around trellis2's attention modules, attached with forward hooks.

    with attention_profile(pipeline.models) as profile:
        generator.sample_latents(request)
    profile.summary()   # per flow model: its seconds, and its cross- and self-attention seconds and tokens

"concat" grows only the cross-attention keys N-fold (every view's DINOv3 tokens), so when it costs
more than one view this says how much of the difference is cross-attention. The modules are found by
what they are, not patched: trellis2's ``MultiHeadAttention`` (dense) and ``SparseMultiHeadAttention``
carry ``_type`` "self" or "cross" and are called as ``forward(x, context)``. On CUDA each call is
bracketed by CUDA events (no synchronisation until :meth:`AttentionProfile.summary`); without CUDA by
``time.perf_counter``. The hooks are removed when the ``with`` block ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["AttentionProfile", "attention_profile"]


def _tokens(value: Any) -> int:
    """Tokens in a dense ``[B, L, C]`` tensor or a trellis2 sparse / var-length tensor (its ``feats`` rows)."""
    feats = getattr(value, "feats", None)
    if feats is not None:
        return int(feats.shape[0])
    return int(value.shape[0] * value.shape[1])


@dataclass
class _Span:
    flow: str
    part: str  # "flow", "self" or "cross"
    queries: int
    keys: int
    start: Any
    end: Any = None


@dataclass
class AttentionProfile:
    """The spans recorded while hooked; :meth:`summary` turns them into seconds per flow model and part."""

    cuda: bool
    spans: list[_Span] = field(default_factory=list)
    _open: dict[int, _Span] = field(default_factory=dict)

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self, flow: str, part: str, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """Forward pre-hook: open a span for this call of ``module``."""
        queries = 0 if part == "flow" else _tokens(args[0])
        keys = _tokens(args[1]) if part == "cross" else queries
        self._open[id(module)] = _Span(flow, part, queries, keys, self._mark())

    def stop(self, module: torch.nn.Module) -> None:
        """Forward hook: close the span that :meth:`start` opened for ``module``."""
        span = self._open.pop(id(module))
        span.end = self._mark()
        self.spans.append(span)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """Per flow model: ``flow_s`` (whole forward calls), ``cross_s`` / ``self_s`` (attention modules),
        their call counts, ``cross_key_tokens`` and ``cross_query_tokens`` summed over calls, and
        ``cross_share`` = ``cross_s / flow_s``."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, dict[str, float | int]] = {}
        for span in self.spans:
            seconds = span.start.elapsed_time(span.end) / 1000 if self.cuda else span.end - span.start
            entry = out.setdefault(span.flow, {"flow_s": 0.0, "flow_calls": 0, "cross_s": 0.0, "cross_calls": 0,
                                               "self_s": 0.0, "self_calls": 0, "cross_key_tokens": 0,
                                               "cross_query_tokens": 0})
            entry[f"{span.part}_s"] += seconds
            entry[f"{span.part}_calls"] += 1
            if span.part == "cross":
                entry["cross_key_tokens"] += span.keys
                entry["cross_query_tokens"] += span.queries
        for entry in out.values():
            for key in ("flow_s", "cross_s", "self_s"):
                entry[key] = round(entry[key], 4)
            entry["cross_share"] = round(entry["cross_s"] / entry["flow_s"], 4) if entry["flow_s"] else 0.0
        return out



def _attention_part(module: torch.nn.Module) -> str | None:
    """ "self" or "cross" for trellis2's attention modules, None for anything else."""
    part = getattr(module, "_type", None)
    return part if type(module).__name__.endswith("MultiHeadAttention") and part in ("self", "cross") else None


@contextmanager
def attention_profile(models: Mapping[str, torch.nn.Module], *, cuda: bool | None = None) -> Iterator[AttentionProfile]:
    """Time every call of each model in ``models`` and of its attention modules while inside.

    ``models`` maps names to flow models (e.g. ``{n: m for n, m in pipeline.models.items() if "flow" in n}``);
    ``cuda`` defaults to whether CUDA is available.
    """
    profile = AttentionProfile(cuda=torch.cuda.is_available() if cuda is None else cuda)
    handles = []
    for name, model in models.items():
        parts = [(model, "flow")] + [(m, p) for m in model.modules() if (p := _attention_part(m)) is not None]
        for module, part in parts:
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name, part=part: profile.start(name, part, m, args)))
            handles.append(module.register_forward_hook(lambda m, args, out: profile.stop(m)))
    try:
        yield profile
    finally:
        for handle in handles:
            handle.remove()
