"""UV padding, texture packing and encoding (trellis_mv.export.texture) with exact expected values."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from trellis_mv.export.texture import WEBP_QUALITY, encode_images, push_pull, texture_images


def grid(rows):
    """A (H, W, 1) tensor and its mask from rows of numbers, None for an uncovered texel."""
    values = torch.tensor([[0.0 if v is None else v for v in row] for row in rows])[..., None]
    mask = torch.tensor([[v is not None for v in row] for row in rows])
    return values, mask


PADDING = [  # (rows, expected)
    # one row: the pyramid is [a _ _ b] -> [a b] -> [(a+b)/2]; bilinear upsampling fills the gap linearly
    ([[0.0, None, None, 4.0]], [[0.0, 1.0, 3.0, 4.0]]),
    # one covered texel: everything takes its value, odd sizes included
    ([[0.25, None, None, None, None], [None] * 5, [None] * 5], [[0.25] * 5] * 3),
    # two corners: the 2x2 level is [[1, 2], [2, 3]] (2 = the 1x1 mean), then bilinear to 3x3
    ([[1.0, None, None], [None] * 3, [None, None, 3.0]], [[1.0, 1.5, 2.0], [1.5, 2.0, 2.5], [2.0, 2.5, 3.0]]),
    # all covered: nothing changes
    ([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]]),
    # nothing covered: nothing to extend, nothing changes
    ([[None, None], [None, None]], [[0.0, 0.0], [0.0, 0.0]]),
]


@pytest.mark.parametrize(("rows", "expected"), PADDING)
def test_push_pull(rows, expected):
    values, mask = grid(rows)
    assert push_pull(values, mask)[..., 0].tolist() == expected


def test_push_pull_keeps_covered_texels_bit_for_bit_and_fills_every_other():
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(37, 53, 6, generator=generator)
    mask = torch.rand(37, 53, generator=generator) > 0.7
    filled = push_pull(values, mask)
    assert filled.shape == values.shape
    assert torch.equal(filled[mask], values[mask])
    assert torch.all((filled >= values[mask].min()) & (filled <= values[mask].max()))  # means of covered texels


def test_push_pull_fills_next_to_a_chart_with_the_chart_edge():
    values, mask = grid([[None, None, None, None], [None, 0.5, 0.5, None], [None, 0.5, 0.5, None], [None] * 4])
    assert push_pull(values, mask)[..., 0].tolist() == [[0.5] * 4] * 4


LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5), "alpha": slice(5, 6)}


def test_texture_images_pack_like_o_voxel():
    attrs = torch.tensor([[[0.0, 0.5, 1.0, 0.2, 0.9, 0.3], [1.5, -0.5, 0.999, 0.0, 1.0, 1.0]]])  # 1x2 texels
    base, metallic_roughness = texture_images(attrs, torch.ones(1, 2, dtype=torch.bool), LAYOUT)
    # x255, clamped to 0..255, truncated (o_voxel's np.clip(x * 255, 0, 255).astype(np.uint8)); alpha dropped
    assert base.dtype == np.uint8 and base.tolist() == [[[0, 127, 255], [255, 0, 254]]]
    assert metallic_roughness.tolist() == [[[0, 229, 51], [0, 255, 0]]]  # R 0, G roughness, B metallic


def test_texture_images_pad_before_packing():
    attrs = torch.zeros(1, 2, 6)
    attrs[0, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    base, metallic_roughness = texture_images(attrs, torch.tensor([[True, False]]), LAYOUT)
    assert base.tolist() == [[[255, 0, 0], [255, 0, 0]]]
    assert metallic_roughness.tolist() == [[[0, 255, 0], [0, 255, 0]]]


def noise(seed, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(("image_format", "pil_format"), [("webp", "WEBP"), ("png", "PNG")])
def test_encode_images_keeps_order_and_format(image_format, pil_format):
    images = [noise(1), noise(2, 32), noise(3, 16)]
    encoded = encode_images(images, image_format)
    decoded = [Image.open(io.BytesIO(data)) for data in encoded]
    assert [(image.format, image.mode, image.size) for image in decoded] == [
        (pil_format, "RGB", (64, 64)), (pil_format, "RGB", (32, 32)), (pil_format, "RGB", (16, 16))
    ]
    if image_format == "png":  # lossless
        assert all(np.array_equal(np.asarray(image), original) for image, original in zip(decoded, images))


def smooth_texture(size=256):
    """Smooth colour in square charts, the rest padded by push-pull: what a real bake gives, not noise."""
    y, x = np.mgrid[0:size, 0:size] / size
    field = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.4 * np.sin(7 * y - 2 * x + 1), 0.5 + 0.3 * np.cos(30 * x * y)], -1)
    mask = torch.from_numpy((np.random.default_rng(0).random((size // 16, size // 16)) < 0.65).repeat(16, 0).repeat(16, 1))
    return (push_pull(torch.from_numpy(field).float(), mask).clamp(0, 1) * 255).to(torch.uint8).numpy()


def psnr(encoded: bytes, pixels: np.ndarray) -> float:
    back = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((back - pixels) ** 2)))


def test_the_webp_settings_keep_a_smooth_texture_as_pillows_default_does():
    """Our fast method against Pillow's default (method 4) at the same quality setting: no lower PSNR
    (to 0.1 dB), at most 15% more bytes (benchmarks/export_cpu.py measures both at 2048², with the time)."""
    pixels = smooth_texture()
    ours = encode_images([pixels], "webp")[0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
    default = buffer.getvalue()
    assert psnr(ours, pixels) >= psnr(default, pixels) - 0.1 and psnr(ours, pixels) > 38
    assert len(ours) <= 1.15 * len(default)


def test_encoding_on_a_shared_pool_gives_the_same_bytes():
    from concurrent.futures import ThreadPoolExecutor

    images = [noise(4), smooth_texture(64)]
    with ThreadPoolExecutor(1) as pool:
        assert encode_images(images, "webp", pool) == encode_images(images, "webp")
