"""The image encoders' loaders on the device's transformers: DINOv3's layer move, BiRefNet's meta-tensor trap."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from harness import rgba_view


def test_dinov3_conditioner_shapes(weights_root, record):
    from random_weights import write_dinov3

    from trellis_mv.dinov3 import DinoV3Conditioner

    folder = weights_root / "dinov3_only"
    write_dinov3(folder)
    conditioner = DinoV3Conditioner(str(folder))
    conditioner.cuda()
    record("dinov3_has_top_level_layer", hasattr(conditioner.model, "layer"))
    views = [rgba_view(0), rgba_view(1)]
    for size, tokens in ((512, 1 + 4 + 32 * 32), (1024, 1 + 4 + 64 * 64)):
        conditioner.image_size = size
        features = conditioner(views)
        assert features.shape == (2, tokens, 1024)
        assert torch.isfinite(features).all()
    one = conditioner(views[:1])
    assert (one[0] - features[0]).abs().max().item() < 1e-3  # batching views does not change a view's tokens


def test_dinov3_in_tf32_errs_less_than_the_flows_bf16_rounding(weights_root, record):
    """The conditioner's reduced precision (TF32 products, fp16 attention) changes its tokens by less than
    the bf16 cast every flow applies to them; and what it saves, 4 views at both resolutions, side by side."""
    from random_weights import write_dinov3

    from trellis_mv.dinov3 import DinoV3Conditioner

    folder = weights_root / "dinov3_tf32"
    write_dinov3(folder)
    conditioner = DinoV3Conditioner(str(folder), image_size=1024)
    conditioner.cuda()
    views = [rgba_view(3), rgba_view(4)]
    tf32 = conditioner(views)
    conditioner.tf32 = False
    fp32 = conditioner(views)
    error = (tf32 - fp32).abs()
    rounding = (fp32.bfloat16().float() - fp32).abs()
    values = {"tf32_mean_abs": error.mean().item(), "tf32_max_abs": error.max().item(),
              "bf16_rounding_mean_abs": rounding.mean().item(), "bf16_rounding_max_abs": rounding.max().item()}
    record("dinov3_tf32_vs_fp32", values)
    assert values["tf32_mean_abs"] < values["bf16_rounding_mean_abs"], values
    assert conditioner.model.config._attn_implementation == "trellis_mv_reduced_sdpa"
    four = [rgba_view(5 + i) for i in range(4)]
    seconds = {}
    for name, reduced in (("fp32", False), ("reduced", True), ("fp32_again", False), ("reduced_again", True)):
        conditioner.tf32 = reduced
        torch.cuda.synchronize()
        start = time.perf_counter()
        for size in (512, 1024):
            conditioner.image_size = size
            conditioner(four)
        torch.cuda.synchronize()
        seconds[name] = round(time.perf_counter() - start, 4)
    record("dinov3_4_views_both_resolutions_s", {"fp32": min(seconds["fp32"], seconds["fp32_again"]),
                                                 "reduced": min(seconds["reduced"], seconds["reduced_again"]),
                                                 "runs": seconds})


def test_background_loader_builds_remote_code_off_the_meta_device(weights_root, record):
    import transformers
    from birefnet_standin import write_standin

    from trellis_mv.background import load_background_remover

    folder = weights_root / "birefnet_only"
    write_standin(folder)
    try:
        transformers.AutoModelForImageSegmentation.from_pretrained(str(folder), trust_remote_code=True)
        record("birefnet_from_pretrained_on_transformers", f"{transformers.__version__}: loads")
    except Exception as error:  # what transformers' own loader does with such remote code, for the report
        record("birefnet_from_pretrained_on_transformers", f"{transformers.__version__}: {type(error).__name__}: {error}")
    remover = load_background_remover(str(folder))
    remover.cuda()
    photo = rgba_view(2).convert("RGB").resize((300, 200))
    cut = remover(photo)
    assert cut.mode == "RGBA" and cut.size == photo.size
    alpha = torch.from_numpy(np.asarray(cut.getchannel("A")).copy())
    record("birefnet_standin_alpha_min_max", [alpha.min().item(), alpha.max().item()])
    assert alpha.min() < 50 and alpha.max() > 200  # a centred object, a clear background


def test_background_loader_names_missing_folder(tmp_path):
    from trellis_mv.background import load_background_remover
    from trellis_mv.errors import StartupError

    with pytest.raises(StartupError, match="has no config.json"):
        load_background_remover(str(tmp_path / "nothing"))
