"""The conditioning of a job's views, on the CPU with a tiny random DINOv3: every resolution at once, trellis2's numbers."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from trellis_mv.dinov3 import pixels
from trellis_mv.pipeline.stages import conditions


@pytest.fixture(scope="module")
def conditioner(tmp_path_factory):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from trellis_mv.dinov3 import DinoV3Conditioner

    folder = tmp_path_factory.mktemp("dinov3")
    config = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             num_register_tokens=4, patch_size=16)
    torch.manual_seed(0)
    DINOv3ViTModel(config).save_pretrained(folder)
    return DinoV3Conditioner(str(folder))


def test_the_conditioner_attends_through_its_reduced_precision_sdpa(conditioner):
    """On CUDA it attends in fp16 (trellis_mv.dinov3._reduced_sdpa); on the CPU the same function keeps fp32."""
    assert conditioner.model.config._attn_implementation == "trellis_mv_reduced_sdpa"


def test_all_resolutions_at_once_give_get_conds_numbers(conditioner):
    """``stages.conditions`` (resized on threads, one batch per resolution) equals trellis2's ``get_cond`` per resolution."""
    rng = np.random.default_rng(1)
    views = [Image.fromarray(rng.integers(0, 256, (50 + 7 * i, 40, 3), dtype=np.uint8)) for i in range(3)]
    pipe = SimpleNamespace(image_cond_model=conditioner, low_vram=False)
    start = time.perf_counter()
    conds = conditions(pipe, views, (32, 64))
    assert time.perf_counter() - start < 30
    for size, tokens in ((32, 1 + 4 + 2 * 2), (64, 1 + 4 + 4 * 4)):
        conditioner.image_size = size  # what get_cond sets before it calls the encoder on the images
        expected = conditioner(views)
        assert [view.shape for view in conds[size].views] == [(1, tokens, 32)] * 3
        assert torch.equal(torch.cat(conds[size].views), expected)
        assert torch.equal(conds[size].neg, torch.zeros(1, tokens, 32))


def test_pixels_are_trellis2s_resized_rgb_in_unit_range():
    image = Image.fromarray(np.full((30, 20, 4), 255, dtype=np.uint8), "RGBA")
    batch = pixels(image, 16)
    assert batch.shape == (3, 16, 16) and batch.dtype == torch.float32 and batch.min() == batch.max() == 1.0
