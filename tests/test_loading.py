"""The loader's threads on the CPU: the image encoder's transformers load beside modules built on another thread.

transformers 4 (the image's) builds a model in ``from_pretrained`` inside context managers that patch
``nn.Module.register_parameter`` and ``torch.nn.init`` for the whole process; the worker builds the
flows on its main thread while the encoders load on another (``trellis_mv.pipeline.loading``). The
GPU path is tests/gpu/test_handler_e2e.py; here the real DINOv3 loader runs on a small random
checkpoint while this thread builds modules as the loader's loop does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from trellis_mv.pipeline.loading import BUILDING, _encoders
from trellis_mv.weights import Found, Source, Weights

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def dinov3(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dinov3")
    config = transformers.DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, patch_size=16, image_size=64, num_register_tokens=0)
    transformers.DINOv3ViTModel(config).save_pretrained(folder)
    return folder


def test_modules_built_while_the_encoder_loads_keep_real_initialised_parameters(dinov3, tmp_path):
    source = Source("TRELLIS_MV_MODEL_DIR", tmp_path)
    found = {name: Found(name, dinov3, source, None) for name in ("facebook/dinov3", "briaai/remover")}
    weights = Weights(model=Found("microsoft/TRELLIS.2-4B", tmp_path, source, None),
                      named={"facebook/dinov3": found["facebook/dinov3"]}, background=found["briaai/remover"])
    args = {"image_cond_model": {"args": {"model_name": "facebook/dinov3"}}}
    loads = 0
    built: list[torch.nn.Linear] = []

    def load_encoders() -> None:
        nonlocal loads
        for _ in range(15):
            encoder, remover = _encoders(weights, args, "a stand-in remover", False, {})
            assert remover == "a stand-in remover" and encoder.model.device.type == "cpu"
            loads += 1

    loader = threading.Thread(target=load_encoders)
    loader.start()
    while loader.is_alive():
        with BUILDING:  # as load_pipeline builds each flow
            built.append(torch.nn.Linear(64, 64))
    loader.join()

    assert loads == 15
    assert len(built) > 15
    assert all(module.weight.device.type == "cpu" for module in built)
    assert all(module.weight.abs().sum() > 0 for module in built)  # initialised, not left empty


def test_random_initialisation_is_skipped_on_this_thread_and_nothing_else_is():
    from trellis_mv.pipeline.loading import RandomInitSkipped

    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    with RandomInitSkipped():
        linear = torch.nn.Linear(8, 8)  # kaiming_uniform_ and uniform_
        conv = torch.nn.Conv3d(2, 2, 3)
        torch.nn.init.xavier_uniform_(linear.weight)  # through Tensor.uniform_
        torch.nn.init.normal_(conv.weight)
        torch.nn.init.constant_(linear.bias, 0.5)  # not random: done
        phases = torch.outer(torch.arange(4.0), torch.ones(3))  # what the flows compute in __init__: done
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(linear.bias, torch.full((8,), 0.5))
    assert torch.equal(phases[:, 0], torch.arange(4.0))
    torch.nn.Linear(8, 8)
    assert not torch.equal(torch.random.get_rng_state(), before)


def test_a_fill_names_the_parameters_its_checkpoint_lacks(tmp_path):
    from safetensors.torch import save_file

    from trellis_mv.pipeline.loading import _fill

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    saved = {key: torch.full_like(value, 2.0) for key, value in model.state_dict().items() if key != "1.bias"}
    save_file(saved, str(tmp_path / "model.safetensors"))

    filled, unfilled, (began, ended) = _fill(model, tmp_path / "model", low_vram=False)

    assert filled is model and unfilled == ["1.bias"] and ended >= began
    assert torch.equal(model[0].weight, torch.full((4, 4), 2.0))


def test_the_encoders_warm_up_runs_the_remover_once_and_dinov3_at_both_conditioning_sizes(dinov3):
    from trellis_mv.dinov3 import DinoV3Conditioner
    from trellis_mv.pipeline.warm import CONDITIONING_SIZES, warm_encoders, warmup_view

    encoder = DinoV3Conditioner(str(dinov3))
    tokens = []
    encoder._last_layer.register_forward_hook(lambda _module, _args, output: tokens.append(output.shape[-2]))
    removed = []
    photo = warmup_view(96)

    seconds = warm_encoders(encoder, lambda image: removed.append((image.mode, image.size)), photo)

    assert removed == [("RGB", (96, 96))]
    assert tokens == [1 + (size // 16) ** 2 for size in CONDITIONING_SIZES]  # the class token and the patches
    assert set(seconds) == {"background", "dinov3"}
