"""A pure-torch stand-in for flash-attn's varlen functions, for GPU test machines without flash-attn.

trellis2's sparse attention (``trellis2/modules/sparse/attention/full_attn.py``) accepts only
xformers, flash_attn or flash_attn_3; the test machine has none that loads (docs/gpu.md). These three
functions split the packed tokens at ``cu_seqlens`` and run ``F.scaled_dot_product_attention``
once per segment: the fastest pure-torch varlen path measured there (docs/gpu.md, "Attention
backends"). Full (non-causal) attention only, which is all trellis2's flows use. Only tests and
benchmarks put this folder on ``sys.path``; the image ships the real flash-attn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__version__ = "0.0.0+sdpa-shim"
BACKEND = "per-segment torch SDPA (tests/gpu/shims/flash_attn)"


def _bounds(cu_seqlens: torch.Tensor) -> list[int]:
    return [int(v) for v in cu_seqlens.tolist()]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
            softmax_scale: float | None) -> torch.Tensor:
    """q ``[Tq, H, C]``, k/v ``[Tk, H, C]`` -> ``[Tq, H, Cv]``, attention within each segment pair."""
    out = torch.empty(q.shape[0], q.shape[1], v.shape[2], device=q.device, dtype=q.dtype)
    bq, bk = _bounds(cu_q), _bounds(cu_k)
    for i in range(len(bq) - 1):
        qs, ks = slice(bq[i], bq[i + 1]), slice(bk[i], bk[i + 1])
        seg = F.scaled_dot_product_attention(
            q[qs].transpose(0, 1)[None], k[ks].transpose(0, 1)[None], v[ks].transpose(0, 1)[None], scale=softmax_scale,
        )
        out[qs] = seg[0].transpose(0, 1)
    return out


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """qkv ``[T, 3, H, C]``."""
    q, k, v = qkv.unbind(dim=1)
    return _attend(q, k, v, cu_seqlens, cu_seqlens, softmax_scale)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """q ``[Tq, H, C]``, kv ``[Tk, 2, H, C]``."""
    k, v = kv.unbind(dim=1)
    return _attend(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, **_):
    """q ``[Tq, H, C]``, k/v ``[Tk, H, C]``."""
    return _attend(q, k, v, cu_seqlens_q, cu_seqlens_k, softmax_scale)
