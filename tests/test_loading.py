"""The loader's threads on the CPU: the image encoder's transformers load beside modules built on another
thread, and the flows warmed as their fills end.

transformers 4 (the image's) builds a model in ``from_pretrained`` inside context managers that patch
``nn.Module.register_parameter`` and ``torch.nn.init`` for the whole process; the worker builds the
flows on its main thread while the encoders load on another (``trellis_mv.pipeline.loading``). The
GPU path is tests/gpu/test_handler_e2e.py; here the real DINOv3 loader runs on a small random
checkpoint while this thread builds modules as the loader's loop does. The flows' warm-up during the
load is scheduled by the fills' futures, which this thread completes one by one; the stages' GPU
work is replaced by a record of what ran, in what order.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

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
    waited: list[Path | str] = []

    def load_encoders() -> None:
        nonlocal loads
        for _ in range(15):
            encoder, remover = _encoders(weights, args, "a stand-in remover", False, False, waited.append, {},
                                         wait_imported=lambda: waited.append("imports"))
            assert remover == "a stand-in remover" and encoder.model.device.type == "cpu"
            loads += 1

    loader = threading.Thread(target=load_encoders)
    loader.start()
    while loader.is_alive():
        with BUILDING:  # as load_pipeline builds each flow
            built.append(torch.nn.Linear(64, 64))
    loader.join()

    assert loads == 15
    # the imports begun ahead first, then its files' read-ahead (a remover given is not read)
    assert waited == ["imports", dinov3] * 15
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


def test_a_checkpoint_is_filled_from_once_its_read_ahead_is_done(tmp_path):
    from safetensors.torch import save_file

    from trellis_mv.pipeline.loading import _fill_or_rebuild

    model = torch.nn.Linear(4, 4)
    save_file({key: torch.full_like(value, 3.0) for key, value in model.state_dict().items()},
              str(tmp_path / "flow.safetensors"))
    waited = []

    def wait_read(path: Path) -> None:
        waited.append((path, torch.equal(model.weight, torch.full((4, 4), 3.0))))

    filled, (began, ended) = _fill_or_rebuild(None, "flow", model, tmp_path / "flow", False, wait_read)

    assert waited == [(tmp_path / "flow.safetensors", False)]  # waited for, before the fill read it
    assert filled is model and torch.equal(model.weight, torch.full((4, 4), 3.0)) and ended >= began


def test_a_checkpoint_that_lacks_parameters_is_read_once_into_a_model_built_again_with_its_random_init(
        tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from trellis_mv.pipeline import loading

    def network() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))

    saved = {key: torch.full_like(value, 2.0) for key, value in network().state_dict().items() if key != "1.bias"}
    save_file(saved, str(tmp_path / "flow.safetensors"))
    unset = network()
    with torch.no_grad():
        unset[1].bias.fill_(7.0)  # as built without its random initialisation: whatever the memory held
    built, fills, waited = [], [], []

    def build(models, path, *, random_init):  # on the CPU: _build puts models on the GPU
        built.append((models, path, random_init))
        torch.manual_seed(0)
        return network()

    fill = loading._fill
    monkeypatch.setattr(loading, "_build", build)
    monkeypatch.setattr(loading, "_fill", lambda model, path, low_vram: fills.append(path) or fill(model, path, low_vram))

    filled, (began, ended) = loading._fill_or_rebuild("trellis2.models", "flow", unset, tmp_path / "flow", False,
                                                      waited.append)

    torch.manual_seed(0)
    initialised = network()
    assert loading._lacking(unset, tmp_path / "flow.safetensors") == ["1.bias"]  # from the header
    assert built == [("trellis2.models", tmp_path / "flow", True)] and filled is not unset
    assert fills == [tmp_path / "flow"] and waited == [tmp_path / "flow.safetensors"]  # read once
    assert torch.equal(filled[1].bias, initialised[1].bias)  # trellis2's: the random initialisation
    assert torch.equal(filled[0].weight, torch.full((4, 4), 2.0)) and ended >= began


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


# TRELLIS.2's pipeline.json order, which the loader fills them in
LOAD_ORDER = ("sparse_structure_decoder", "sparse_structure_flow_model", "shape_slat_decoder", "shape_slat_flow_model_512",
              "shape_slat_flow_model_1024", "tex_slat_decoder", "tex_slat_flow_model_512", "tex_slat_flow_model_1024")


def test_a_filled_model_is_looked_up_once_its_fill_ends():
    from trellis_mv.pipeline.loading import Filled

    fills = {"flow": Future(), "decoder": Future()}
    models = Filled(fills)
    with ThreadPoolExecutor(max_workers=1) as pool:
        looked_up = pool.submit(lambda: models["flow"])
        fills["flow"].set_result(("the flow", (0.0, 1.0)))
        assert looked_up.result(timeout=10) == "the flow"

    assert "flow" in models and "other" not in models  # a model pipeline.json does not name
    assert list(models) == ["flow", "decoder"] and len(models) == 2


def test_the_flows_warm_in_load_order_each_as_soon_as_its_fill_ends(monkeypatch):
    from trellis_mv.gpu_random import RANDOM_OR_CAPTURE
    from trellis_mv.pipeline import stages
    from trellis_mv.pipeline.loading import Filled
    from trellis_mv.pipeline.warm import warm_flows, warmup_view

    ran: queue.Queue = queue.Queue()
    monkeypatch.setattr(stages, "conditions", lambda pipe, images, sizes: {size: f"cond {size}" for size in sizes})
    monkeypatch.setattr(stages, "sparse_structure", lambda sampler, conds, resolution: ran.put(("structure", conds)))
    monkeypatch.setattr(stages, "shape", lambda sampler, conds, flow, coords, part: ran.put(("shape", flow, conds))
                        or f"shape of {flow}")
    monkeypatch.setattr(stages, "texture", lambda sampler, conds, flow, shape: ran.put(("texture", flow, shape))
                        or f"texture of {flow}")
    fills = {name: Awaited() for name in LOAD_ORDER}
    pipe = SimpleNamespace(models=Filled(fills), device="cpu", low_vram=False)

    def fill(*names: str) -> None:
        for name in names:
            fills[name].set_result((name, (0.0, 1.0)))

    with ThreadPoolExecutor(max_workers=1) as pool:
        warming = pool.submit(warm_flows, pipe, warmup_view(64))
        fill("sparse_structure_decoder", "sparse_structure_flow_model")
        assert ran.get(timeout=10) == ("structure", "cond 512")
        assert ran.empty()  # the next step waits for the 512 shape flow's fill...
        assert fills["shape_slat_flow_model_512"].awaited.wait(timeout=10)
        assert RANDOM_OR_CAPTURE.acquire(timeout=10)  # ...without the lock: a fill may need it to build again
        RANDOM_OR_CAPTURE.release()
        fill("shape_slat_decoder", "shape_slat_flow_model_512")
        assert ran.get(timeout=10) == ("shape", "shape_slat_flow_model_512", "cond 512")
        fill("shape_slat_flow_model_1024")
        assert ran.get(timeout=10) == ("shape", "shape_slat_flow_model_1024", "cond 1024")
        fill("tex_slat_decoder", "tex_slat_flow_model_512")
        assert ran.get(timeout=10) == ("texture", "tex_slat_flow_model_512", "shape of shape_slat_flow_model_512")
        fill("tex_slat_flow_model_1024")
        assert ran.get(timeout=10) == ("texture", "tex_slat_flow_model_1024", "shape of shape_slat_flow_model_1024")
        seconds, latents = warming.result(timeout=10)

    assert ran.empty()
    assert set(seconds) == {"conditioning", "sparse_structure", "shape_512", "shape_1024", "texture_512", "texture_1024"}
    assert latents[512] == ("shape of shape_slat_flow_model_512", "texture of tex_slat_flow_model_512")


class Awaited(Future):
    """A fill that tells when something began waiting for its result."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def result(self, timeout: float | None = None):
        self.awaited.set()
        return super().result(timeout)


def test_the_warm_up_after_the_load_runs_no_flow_the_load_ran():
    from trellis_mv.pipeline import TrellisGenerator
    from trellis_mv.pipeline.warm import warm_stages, warmup_view

    generator = TrellisGenerator("a pipeline never used", warmed_latents=("shape 512", "texture 512"))

    assert warm_stages(generator, warmup_view(64)) == ({}, ("shape 512", "texture 512"))
