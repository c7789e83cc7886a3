"""The image encoder and background-remover loaders on the CPU, with tiny random models.

``tests/gpu/test_encoders.py`` runs the same loaders at real size on the GPU machine's transformers
5; here transformers is the image's 4.57, where DINOv3 still has ``model.layer``, so the conditioner
can be compared with trellis2's own ``extract_features`` walk, step for step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from birefnet_standin import write_standin
from PIL import Image
from safetensors.torch import load_file, save_file

from trellis_mv.background import load_background_remover
from trellis_mv.dinov3 import DinoV3Conditioner
from trellis_mv.errors import StartupError

pytestmark = pytest.mark.timeout(60)


def views() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.fixture(scope="module")
def dinov3_folder(tmp_path_factory) -> str:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    folder = tmp_path_factory.mktemp("dinov3")
    config = DINOv3ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_register_tokens=4, patch_size=16)
    torch.manual_seed(0)
    DINOv3ViTModel(config).save_pretrained(folder)
    return str(folder)


def trellis2_extract_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """trellis2's ``DinoV3FeatureExtractor.extract_features`` at 5565d240c4a4, which needs ``model.layer``."""
    hidden = model.embeddings(pixels, bool_masked_pos=None)
    position_embeddings = model.rope_embeddings(pixels)
    for layer in model.layer:
        hidden = layer(hidden, position_embeddings=position_embeddings)
    return F.layer_norm(hidden, hidden.shape[-1:])


def test_dinov3_tokens_equal_trellis2s_walk(dinov3_folder):
    conditioner = DinoV3Conditioner(dinov3_folder, image_size=64)
    features = conditioner(views())
    assert features.shape == (2, 1 + 4 + 4 * 4, 64)

    arrays = [np.asarray(v.resize((64, 64), Image.Resampling.LANCZOS), dtype=np.float32) / 255 for v in views()]
    pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        expected = trellis2_extract_features(conditioner.model, (pixels - mean) / std)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-6)


def test_dinov3_views_do_not_change_each_other(dinov3_folder):
    conditioner = DinoV3Conditioner(dinov3_folder, image_size=64)
    both, first = conditioner(views()), conditioner(views()[:1])
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-5)


def test_dinov3_from_a_folder_without_a_model(tmp_path):
    with pytest.raises(OSError):
        DinoV3Conditioner(str(tmp_path))


@pytest.fixture
def birefnet_folder(tmp_path):
    folder = tmp_path / "BiRefNet"
    write_standin(folder)
    return folder


def test_the_remover_builds_remote_code_for_real_and_cuts_the_background(birefnet_folder):
    remover = load_background_remover(str(birefnet_folder))
    assert all(not parameter.is_meta for parameter in remover.model.parameters())
    photo = Image.fromarray(np.full((90, 120, 3), 180, dtype=np.uint8))
    cut = remover(photo)
    assert (cut.mode, cut.size) == ("RGBA", photo.size)
    alpha = np.asarray(cut.getchannel("A"))
    # the stand-in answers a centred disk: opaque in the middle, transparent in the corners
    assert alpha[45, 60] > 200 and alpha[0, 0] < 50
    assert np.array_equal(np.asarray(cut.convert("RGB")), np.asarray(photo))


def test_a_stand_in_with_ballast_loads_it_and_still_cuts_the_background(tmp_path, birefnet_folder):
    folder = tmp_path / "BiRefNet-sized"
    write_standin(folder, ballast=1000)
    remover = load_background_remover(str(folder))
    assert remover.model.ballast.numel() == 1000
    grown = (folder / "model.safetensors").stat().st_size - (birefnet_folder / "model.safetensors").stat().st_size
    assert 4000 <= grown < 4100  # the float32 values and their header entry
    alpha = np.asarray(remover(Image.fromarray(np.full((90, 120, 3), 180, dtype=np.uint8))).getchannel("A"))
    assert alpha[45, 60] > 200 and alpha[0, 0] < 50


def test_the_remover_refuses_weights_that_lack_a_parameter(birefnet_folder):
    weights = load_file(str(birefnet_folder / "model.safetensors"))
    del weights["conv.weight"]
    save_file(weights, str(birefnet_folder / "model.safetensors"))
    with pytest.raises(StartupError, match=r"do not fit birefnet_standin\.StandInBiRefNet: missing \['conv\.weight'\]"):
        load_background_remover(str(birefnet_folder))


def test_the_remover_refuses_weights_of_the_wrong_shape(birefnet_folder):
    save_file({"conv.weight": torch.zeros(1, 3, 5, 5), "conv.bias": torch.zeros(1)}, str(birefnet_folder / "model.safetensors"))
    with pytest.raises(StartupError) as caught:
        load_background_remover(str(birefnet_folder))
    assert str(caught.value).endswith(
        "do not fit birefnet_standin.StandInBiRefNet: size mismatch for conv.weight: copying a param with shape "
        "torch.Size([1, 3, 5, 5]) from checkpoint, the shape in current model is torch.Size([1, 3, 3, 3])."
    )


def test_the_remover_names_a_folder_without_a_model(tmp_path):
    with pytest.raises(StartupError) as caught:
        load_background_remover(str(tmp_path))
    assert str(caught.value) == f"TRELLIS_MV_BACKGROUND_MODEL: {tmp_path} has no config.json (expected a BiRefNet snapshot)"
