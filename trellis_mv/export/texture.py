"""Baked attributes -> the two glTF textures: UV padding (push-pull, in torch), packing, encoding.

o_voxel's ``to_glb`` fills every texel outside the UV charts with ``cv2.inpaint`` (Telea), four times
per GLB, on the CPU: 13.2 s of a 37 s export at 2048² (docs/gpu.md). Only texels near the charts are ever
read (bilinear filtering, mipmaps), and they need a smooth continuation of the chart, not an
inpainting of the whole atlas. ``push_pull`` gives that in log2(size) pooling steps on the
attributes' own device: the classic pull-push of texture baking tools.

Textures follow o_voxel's bake: base colour from ``layout["base_color"]``; metallic in blue and
roughness in green (glTF's packing), red zero; values scaled by 255 and truncated. The base colour is
written as RGB: o_voxel's material is ``OPAQUE``, so the alpha channel it also wrote was never shown,
and losslessly encoded noise-like alpha cost about 4 MB of WebP per GLB (measured on 2048² textures).

Both textures are encoded at once: Pillow releases the GIL while encoding (two 2048² WebP images:
0.70 s in two threads against 1.25 s one after the other, measured), on the export's threads, next
to the geometry's Draco encoding (``run``).
"""

from __future__ import annotations

import io
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["WEBP_METHOD", "WEBP_QUALITY", "encode_images", "push_pull", "texture_images"]

# Pillow's default quality. Method 0 (libwebp's fastest search) instead of Pillow's 4: the same
# quality, at most 8% larger, a third of the time. Measured with benchmarks/export_cpu.py on one 2048²
# texture (CPU seconds, MB, PSNR), methods 0 / 1 / 4: noise-like, what random weights bake: 0.39 /
# 0.48 / 1.05 s, 2.82 / 2.82 / 2.88 MB, 12.7 dB each; smooth charts padded by push-pull: 0.15 / 0.18 /
# 0.53 s, 0.336 / 0.331 / 0.312 MB, 32.45 / 32.46 / 32.51 dB.
WEBP_QUALITY = 80
WEBP_METHOD = 0


def push_pull(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the texels where ``mask`` is true; fill the others from the covered texels around them.

    ``values`` is (H, W, C) float, ``mask`` (H, W) bool. Pull: halve the resolution up to 1×1, each
    texel the mean of the covered texels under it. Push: from the top down, every uncovered texel
    takes the bilinearly upsampled value of the level above. An uncovered texel thus gets the mean of
    the nearest covered texels at the finest scale where there are any. No covered texel: unchanged.
    """
    if not bool(mask.any()):
        return values.clone()
    level = (values.permute(2, 0, 1)[None] * mask[None, None], mask[None, None].to(values.dtype))
    pyramid = [level]
    while max(level[0].shape[-2:]) > 1:
        colour, covered = level
        total = F.avg_pool2d(colour * covered, 2, ceil_mode=True, divisor_override=1)
        count = F.avg_pool2d(covered, 2, ceil_mode=True, divisor_override=1)
        level = (total / count.clamp_min(1), (count > 0).to(values.dtype))
        pyramid.append(level)
    filled = pyramid[-1][0]
    for colour, covered in reversed(pyramid[:-1]):
        above = F.interpolate(filled, size=colour.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(covered > 0, colour, above)
    return filled[0].permute(1, 2, 0)


def texture_images(attrs: torch.Tensor, mask: torch.Tensor, layout: Mapping[str, slice]) -> tuple[np.ndarray, np.ndarray]:
    """Padded (H, W, C) attributes -> (base colour RGB, metallic-roughness) as uint8 arrays."""
    texels = (push_pull(attrs.float(), mask) * 255).clamp(0, 255).to(torch.uint8)
    base_color = texels[..., layout["base_color"]]
    roughness, metallic = texels[..., layout["roughness"]], texels[..., layout["metallic"]]
    metallic_roughness = torch.cat([torch.zeros_like(roughness), roughness, metallic], dim=-1)
    return base_color.cpu().numpy(), metallic_roughness.cpu().numpy()


def encode_images(images: Sequence[np.ndarray], image_format: Literal["webp", "png"], pool: Executor | None = None) -> list[bytes]:
    """Encode uint8 (H, W, 3) arrays as WebP or PNG, all at once on ``pool``'s threads (one per image if none)."""
    if pool is None:
        with ThreadPoolExecutor(max_workers=max(len(images), 1)) as own:
            return encode_images(images, image_format, own)
    return list(pool.map(lambda pixels: _encode(pixels, image_format), images))


def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if image_format == "webp":
        image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()
