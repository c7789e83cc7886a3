"""N=1 reproduces trellis2's own ``pipeline.run``; N identical views reproduce N=1 (fp32 flows, 512)."""

from __future__ import annotations

import pytest
import torch
from harness import rgba_view

from trellis_mv.generator import GenerationRequest, StageOptions

SEED = 1234
FEW = StageOptions(steps=6)  # invariance runs: fewer steps, same code path


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def test_flows_predict_nonzero_velocity(pipeline_fp32, record):
    """Trap 1: the random flows are not the zero-initialised ones."""
    flow = pipeline_fp32.models["sparse_structure_flow_model"]
    x = torch.randn(1, flow.in_channels, *[flow.resolution] * 3, device="cuda")
    cond = torch.randn(1, 1029, 1024, device="cuda")
    with torch.no_grad():
        v = flow(x, torch.tensor([500.0], device="cuda"), cond)
    record("ss_flow_velocity_abs_mean", v.abs().mean().item())
    assert v.abs().mean().item() > 1e-3


def test_one_view_reproduces_trellis2_run(pipeline_fp32, record):
    from trellis_mv.pipeline import TrellisGenerator

    pipe, view = pipeline_fp32, rgba_view(0)
    shell = pipe.models["sparse_structure_decoder"]
    _meshes, (shape_ref, tex_ref, res_ref) = pipe.run(view, seed=SEED, pipeline_type="512", return_latent=True)
    z_ref = shell.last_latent
    request = GenerationRequest(images=(view,), seed=SEED, pipeline_type="512")
    diffs = {}
    for max_batch in (1, None):
        ours = TrellisGenerator(pipe, max_batch=max_batch).sample_latents(request)
        assert ours.resolution == res_ref
        assert torch.equal(ours.shape_slat.coords, shape_ref.coords)
        diffs[str(max_batch)] = {
            "sparse_structure": _max_abs(shell.last_latent, z_ref),
            "shape_slat": _max_abs(ours.shape_slat.feats, shape_ref.feats),
            "tex_slat": _max_abs(ours.tex_slat.feats, tex_ref.feats),
        }
        record("parity_fp32_512_max_abs", diffs)
        record("stats_fp32_512_n1", {"timings": ours.timings, **ours.stats})
    # Trap 1 again, end to end: the texture latent is not its noise-free mean.
    assert tex_ref.feats.std().item() > 1e-2
    assert max(diffs["1"].values()) <= 1e-4, diffs  # nothing batched: trellis2's exact sequence of calls
    assert max(diffs["None"].values()) <= 1e-3, diffs  # positive and negative passes share a batch


@pytest.mark.parametrize("mode", ["stochastic", "multidiffusion"])
def test_identical_views_reproduce_one_view(pipeline_fp32, record, mode):
    from trellis_mv.pipeline import TrellisGenerator

    generator, view = TrellisGenerator(pipeline_fp32), rgba_view(1)

    def sample(n: int):
        request = GenerationRequest(images=(view,) * n, seed=SEED, mode=mode, pipeline_type="512",
                                    sparse_structure=FEW, shape_slat=FEW, tex_slat=FEW)
        return generator.sample_latents(request)

    one, three = sample(1), sample(3)
    assert torch.equal(one.shape_slat.coords, three.shape_slat.coords)
    diffs = {"shape_slat": _max_abs(one.shape_slat.feats, three.shape_slat.feats),
             "tex_slat": _max_abs(one.tex_slat.feats, three.tex_slat.feats)}
    record(f"identical_views_fp32_512_{mode}_max_abs", diffs)
    record(f"tokens_fp32_512_{mode}_n3_vs_n1", {"n1": one.stats["tokens"], "n3": three.stats["tokens"]})
    assert max(diffs.values()) <= 1e-3, diffs
