"""trellis2's ``preprocess_image`` for several views, with the request's background-removal choice."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from PIL import Image

from ..errors import UserError
from .offload import on_gpu

__all__ = ["crop_to_foreground", "preprocess_views", "removes_background"]


def preprocess_views(pipe: Any, images: Sequence[Image.Image], remove_background: bool | None) -> list[Image.Image]:
    """trellis2's ``preprocess_image`` per view, with the request's ``remove_background`` choice.

    Views are shrunk to at most 1024 px (LANCZOS); those without a real alpha channel (or all, when
    the request says so) go through the background remover, which low-VRAM mode holds on the GPU
    once for all of them; then the square crop around the foreground (RGBA, see ``crop_to_foreground``).
    """
    shrunk, remove = [], []
    for image in images:
        remove.append(removes_background(image, remove_background))
        scale = min(1, 1024 / max(image.size))
        if scale < 1:
            image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
        shrunk.append(image)
    remover = pipe.rembg_model
    with on_gpu(pipe, remover) if any(remove) else nullcontext():
        cut = [remover(image.convert("RGB")) if r else image.convert("RGBA") for image, r in zip(shrunk, remove)]
    return [crop_to_foreground(image, index) for index, image in enumerate(cut)]


def removes_background(image: Image.Image, remove_background: bool | None) -> bool:
    """Whether a view goes through the background remover: as the request says, else when it has no real alpha."""
    if remove_background is not None:
        return remove_background
    has_alpha = image.mode == "RGBA" and not np.all(np.asarray(image)[:, :, 3] == 255)
    return not has_alpha


def crop_to_foreground(image: Image.Image, index: int) -> Image.Image:
    """trellis2's square crop around the alpha > 0.8 bounding box, colours premultiplied by alpha.

    trellis2 returns the premultiplied RGB alone; the crop's alpha is kept here as a fourth channel
    for the self-check (``views_fit``). ``convert("RGB")`` gives trellis2's image back, byte for byte.
    """
    array = np.array(image)
    found = np.argwhere(array[:, :, 3] > 0.8 * 255)
    if found.size == 0:
        raise UserError(f"images[{index}]", "no foreground found (the alpha channel, or the background removal, "
                        "left nothing opaque); send a photo of an object or an RGBA image with the object opaque")
    bbox = np.min(found[:, 1]), np.min(found[:, 0]), np.max(found[:, 1]), np.max(found[:, 0])
    center = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    size = int(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    bbox = center[0] - size // 2, center[1] - size // 2, center[0] + size // 2, center[1] + size // 2
    cropped = np.array(image.crop(bbox))
    output = cropped.astype(np.float32) / 255
    output = output[:, :, :3] * output[:, :, 3:4]
    return Image.fromarray(np.dstack([(output * 255).astype(np.uint8), cropped[:, :, 3]]), "RGBA")
