"""The "concat" mode with trellis2's real flows: its invariants in fp32 (512), and the handler end to end.

"concat" feeds one conditional pass every view's DINOv3 tokens concatenated on the sequence axis, and
the negative pass one view's length of zeros (``trellis_mv/sampling/multiview.py``): beside the
positive in one call for the sparse flows, which take a list of conds of different lengths, in a
call of its own for the dense sparse-structure flow. Softmax cross-attention over N copies of the
same tokens equals attention over one copy, and over tokens in any order the same, so N identical
views must give one view's latents and the order of the views must not matter: fp32 max abs
differences of at most 1e-4; a list cond in one call must give what two calls give. Trap 1
(docs/gpu.md) is checked on the flows themselves: their velocities are nonzero and depend on the
views, so the invariants are not vacuous.
The handler then answers a GLB in "concat" mode for 1, 4 and 8 views at every pipeline type (and once
with a multidiffusion texture stage), and ``view_weights`` are shown to reach the pipeline's sampler.
"""

from __future__ import annotations

import base64
import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from harness import register, rgba_view

from trellis_mv.generator import GenerationRequest, StageOptions

SEED = 1234
FEW = StageOptions(steps=6)  # invariance runs: fewer steps, same code path
BOUND = 1e-4
STAGES = ("sparse_structure", "shape_slat", "tex_slat")
# DINOv3 ViT-L/16 tokens per view: 1 class + 4 registers + (S/16)² patches, at the two cond resolutions
TOKENS_512, TOKENS_1024 = 1 + 4 + 32 ** 2, 1 + 4 + 64 ** 2
COND_TOKENS = {"sparse_structure_flow_model": TOKENS_512, "shape_slat_flow_model_512": TOKENS_512,
               "tex_slat_flow_model_512": TOKENS_512, "shape_slat_flow_model_1024": TOKENS_1024,
               "tex_slat_flow_model_1024": TOKENS_1024}


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _sample(pipeline: Any, views: list, mode: str = "concat") -> dict[str, torch.Tensor]:
    """The three latents of a 512 job (the sparse structure's as the shell decoder received it)."""
    from trellis_mv.pipeline import TrellisGenerator

    request = GenerationRequest(images=tuple(views), seed=SEED, mode=mode, pipeline_type="512",
                                sparse_structure=FEW, shape_slat=FEW, tex_slat=FEW)
    out = TrellisGenerator(pipeline).sample_latents(request)
    shell = pipeline.models["sparse_structure_decoder"]
    return {"sparse_structure": shell.last_latent, "shape_slat": out.shape_slat.feats, "tex_slat": out.tex_slat.feats,
            "coords": out.shape_slat.coords}


def _diffs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    assert torch.equal(a["coords"], b["coords"])
    return {stage: _max_abs(a[stage], b[stage]) for stage in STAGES}


def _shell_latent(flow: Any) -> Any:
    """Noise on a 32³ spherical shell (|r - 12.8| < 1, docs/gpu.md: 4,184 voxels): a sparse latent for the shape flow."""
    from trellis2.modules.sparse import SparseTensor

    axis = torch.arange(32, device="cuda", dtype=torch.float32) - 15.5
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    cells = torch.argwhere((r - 12.8).abs() < 1).int()
    coords = torch.cat([torch.zeros_like(cells[:, :1]), cells], dim=1)
    return SparseTensor(feats=torch.randn(coords.shape[0], flow.in_channels, device="cuda"), coords=coords)


@pytest.mark.parametrize("name", ["sparse_structure_flow_model", "shape_slat_flow_model_512"])
def test_flow_treats_concatenated_tokens_as_a_set(pipeline_fp32, record, name):
    """One model call, dense and sparse cross-attention: duplicated, reordered or tiled-zero tokens change nothing;
    the sparse flow given the all-views cond and the one-view negative as a list in one call gives what two calls give."""
    flow = pipeline_fp32.models[name]
    torch.manual_seed(0)
    if name == "sparse_structure_flow_model":
        x = torch.randn(1, flow.in_channels, *[flow.resolution] * 3, device="cuda")
    else:
        x = _shell_latent(flow)
    conds = [torch.randn(1, TOKENS_512, 1024, device="cuda") for _ in range(3)]
    zeros = torch.zeros_like(conds[0])
    t = torch.tensor([500.0], device="cuda")

    def v(cond: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = flow(x, t, cond)
        return out if isinstance(out, torch.Tensor) else out.feats

    one, fused = v(conds[0]), v(torch.cat(conds, dim=1))
    values = {
        "duplicated_x4": _max_abs(v(torch.cat([conds[0]] * 4, dim=1)), one),
        "reordered": _max_abs(v(torch.cat(conds[::-1], dim=1)), fused),
        "negative_tiled_x4": _max_abs(v(torch.cat([zeros] * 4, dim=1)), v(zeros)),
        "velocity_abs_mean": one.abs().mean().item(),
        "three_views_vs_one": _max_abs(fused, one),
    }
    if name != "sparse_structure_flow_model":
        from trellis_mv.pipeline import SparseBatcher

        batcher = SparseBatcher()
        with torch.no_grad():
            both = flow(batcher.cat([x, x]), t.repeat(2), [torch.cat(conds, dim=1)[0], zeros[0]])
        pos, neg = (part.feats for part in batcher.split(both, 2))
        values["list_cond_vs_two_calls"] = max(_max_abs(pos, fused), _max_abs(neg, v(zeros)))
    record(f"concat_flow_{name}_max_abs", values)
    assert values["velocity_abs_mean"] > 1e-3  # Trap 1: not the zero-initialised flow
    assert values["three_views_vs_one"] > 1e-3  # the views reach the velocity
    invariants = [values[key] for key in ("duplicated_x4", "reordered", "negative_tiled_x4", "list_cond_vs_two_calls")
                  if key in values]
    assert max(invariants) <= BOUND, values


def test_identical_views_reproduce_one_view(pipeline_fp32, record):
    view = rgba_view(1)
    one, four = _sample(pipeline_fp32, [view]), _sample(pipeline_fp32, [view] * 4)
    diffs = _diffs(one, four)
    record("identical_views_concat_max_abs", max(diffs.values()))
    record("identical_views_concat_max_abs_by_stage", diffs)
    assert one["tex_slat"].std().item() > 1e-2  # Trap 1, end to end: the latent is not its noise-free mean
    assert max(diffs.values()) <= BOUND, diffs


def test_view_order_does_not_matter(pipeline_fp32, record):
    views = [rgba_view(2), rgba_view(3), rgba_view(4)]
    base, permuted = _sample(pipeline_fp32, views), _sample(pipeline_fp32, [views[2], views[0], views[1]])
    diffs = _diffs(base, permuted)
    versus_one = _diffs(base, _sample(pipeline_fp32, views[:1]))
    record("concat_order_max_abs", max(diffs.values()))
    record("concat_order_max_abs_by_stage", diffs)
    record("concat_three_views_vs_one_max_abs", versus_one)
    assert versus_one["shape_slat"] > 1e-3  # not vacuous: the other views change the sample
    assert max(diffs.values()) <= BOUND, diffs


# --- the handler end to end ----------------------------------------------------------------------------

FEW_STEPS = {"steps": 2}  # both steps inside the guidance interval of the structure and shape stages
RESOLUTION = {"512": 512, "1024": 1024, "1024_cascade": 1024, "1536_cascade": 1536}
# (pipeline_type, views, the texture stage's mode): concat everywhere, and once mixed per stage
E2E = [*[(kind, views, "concat") for kind in RESOLUTION for views in (1, 4, 8)], ("1024_cascade", 4, "multidiffusion")]


class _Kept:
    """The generator the handler calls, keeping the stats of its last result (the resolution actually used)."""

    def __init__(self, inner: Any):
        self.inner, self.stats, self.components = inner, {}, inner.components

    def generate(self, request: GenerationRequest, progress: Any = None) -> Any:
        result = self.inner.generate(request, progress)
        self.stats = result.stats
        return result


def _lengths(cond: Any) -> list[int]:
    """A flow's cond lengths: ``[B, L, C]``, or a list of ``[L_i, C]`` of different lengths."""
    return [row.shape[0] for row in cond] if isinstance(cond, list) else [cond.shape[1]]


@contextmanager
def _cond_lengths(pipeline: Any) -> Iterator[dict[str, set[int]]]:
    """Every flow's cond lengths while inside, through forward pre-hooks (removed on the way out)."""
    seen: dict[str, set[int]] = {}
    handles = [
        model.register_forward_pre_hook(lambda _m, args, name=name: seen.setdefault(name, set()).update(_lengths(args[2])))
        for name, model in pipeline.models.items() if name in COND_TOKENS
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _small_structure(pipeline: Any, kind: str) -> Iterator[None]:
    """For 1536_cascade, a smaller shell (radius 0.25), so the high pass stays under the 49,152-token limit."""
    if kind != "1536_cascade":
        yield
        return
    from random_weights import ShellOccupancy

    shell = pipeline.models["sparse_structure_decoder"]
    pipeline.models["sparse_structure_decoder"] = ShellOccupancy(shell.decoder, radius=0.25)
    try:
        yield
    finally:
        pipeline.models["sparse_structure_decoder"] = shell


@pytest.mark.parametrize(("pipeline_type", "views", "tex_mode"), E2E)
def test_handler_answers_a_glb_in_concat_mode(pipeline_bf16, out_dir, record, pipeline_type, views, tex_mode):
    import handler

    from trellis_mv.config import Settings
    from trellis_mv.pipeline import TrellisGenerator

    kept = _Kept(TrellisGenerator(pipeline_bf16))
    register(kept)
    run = handler.build_handler(Settings(generator="harness:registered_generator", max_base64_glb_bytes=60_000_000),
                                send_progress=False)
    images = []
    for i in range(views):
        buffer = io.BytesIO()
        rgba_view(30 + i).save(buffer, "PNG")
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    job = {"id": f"concat-{pipeline_type}-{views}-{tex_mode}", "input": {
        "images": images, "seed": 7, "mode": "concat", "pipeline_type": pipeline_type,
        "sparse_structure": FEW_STEPS, "shape_slat": FEW_STEPS, "tex_slat": {**FEW_STEPS, "mode": tex_mode},
        "glb": {"decimation_target": 20000, "texture_size": 512, "remesh": False},
        "output": {"type": "base64"},
    }}
    with _small_structure(pipeline_bf16, pipeline_type), _cond_lengths(pipeline_bf16) as lengths:
        answer = run(job)
    assert "error" not in answer, answer
    data = base64.b64decode(answer["glb"]["base64"])
    name = f"{pipeline_type}_n{views}_concat{'' if tex_mode == 'concat' else '_tex_' + tex_mode}.glb"
    (out_dir / name).write_bytes(data)
    record(f"e2e_{name}", {"seconds": answer["timings"]["total"], "bytes": len(data), "mesh": answer["mesh"],
                           "timings": answer["timings"], "cond_tokens": {k: sorted(v) for k, v in lengths.items()},
                           "resolution": kept.stats.get("resolution"), "shape_tokens": kept.stats.get("shape_tokens")})
    assert answer["mode"] == "concat" and answer["views"] == views
    assert struct.unpack("<4sII", data[:12]) == (b"glTF", 2, len(data))
    assert kept.stats["resolution"] == RESOLUTION[pipeline_type], kept.stats
    # a concat stage's positive pass saw all views' tokens at its resolution, a multidiffusion stage's one
    # view's; the negative pass (structure and shape: guidance 7.5, texture: 1.0, none) one view's zeros
    expected = {flow: {(1 if flow.startswith("tex") and tex_mode == "multidiffusion" else views) * tokens}
                | (set() if flow.startswith("tex") else {tokens}) for flow, tokens in COND_TOKENS.items()}
    assert lengths and all(seen == expected[flow] for flow, seen in lengths.items()), lengths


def test_view_weights_reach_the_sampler(pipeline_bf16, record):
    """GenerationRequest.view_weights reach guided() in the pipeline: normalised, and they change the sample."""
    from trellis_mv.pipeline import TrellisGenerator

    views, stage = tuple(rgba_view(40 + i) for i in range(3)), StageOptions(steps=2)

    def tex(weights: tuple[float, ...] | None) -> torch.Tensor:
        request = GenerationRequest(images=views, seed=SEED, mode="multidiffusion", pipeline_type="512",
                                    sparse_structure=stage, shape_slat=stage, tex_slat=stage, view_weights=weights)
        return TrellisGenerator(pipeline_bf16).sample_latents(request).tex_slat.feats

    equal, doubled, skewed = tex(None), tex((2.0, 2.0, 2.0)), tex((1.0, 1.0, 6.0))
    values = {"doubled_vs_equal": _max_abs(doubled, equal), "skewed_vs_equal": _max_abs(skewed, equal)}
    record("view_weights_bf16_512_max_abs", values)
    assert values["doubled_vs_equal"] <= 1e-6 < 1e-3 < values["skewed_vs_equal"], values
