"""The preview sheet's pictures: square tiles with captions, four to a row, and a view under its fitted silhouette.

The silhouette's agreement with the view is drawn on the view: the outline in green, what only the
view covers tinted red, what only the result covers tinted blue.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .views_fit import ViewFit

__all__ = ["LEGEND", "caption", "composite", "overlay", "sheet"]

LEGEND = "views: green = fitted outline, red = only the view, blue = only the result"
_BACKGROUND = np.array([0.94, 0.94, 0.94], dtype=np.float32)
_PHOTO_ONLY = np.array([0.9, 0.15, 0.15], dtype=np.float32)
_RESULT_ONLY = np.array([0.15, 0.35, 0.95], dtype=np.float32)
_OUTLINE = np.array([0.1, 0.8, 0.2], dtype=np.float32)
_COLUMNS, _GAP = 4, 4


def overlay(view: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """A view (RGBA floats) over the background with a silhouette's agreement drawn on it: RGB floats."""
    rgb = composite(view)
    foreground = view[..., 3] > 0.5
    rgb[foreground & ~silhouette] = 0.45 * rgb[foreground & ~silhouette] + 0.55 * _PHOTO_ONLY
    rgb[silhouette & ~foreground] = 0.45 * rgb[silhouette & ~foreground] + 0.55 * _RESULT_ONLY
    rgb[_outline(silhouette)] = _OUTLINE
    return rgb


def sheet(tiles: Sequence[np.ndarray], captions: Sequence[str], *, legend: str | None = None) -> bytes:
    """Square RGB tiles (floats), four to a row, each with its caption, as PNG bytes."""
    size = tiles[0].shape[0]
    rows = -(-len(tiles) // _COLUMNS)
    legend_height = 20 if legend else 0
    canvas = Image.new("RGB", (_COLUMNS * (size + _GAP) + _GAP, rows * (size + _GAP) + _GAP + legend_height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (tile, caption) in enumerate(zip(tiles, captions)):
        left = _GAP + (index % _COLUMNS) * (size + _GAP)
        top = _GAP + (index // _COLUMNS) * (size + _GAP)
        canvas.paste(Image.fromarray((np.clip(tile, 0, 1) * 255).round().astype(np.uint8)), (left, top))
        draw.text((left + 4, top + 2), caption, fill=(40, 40, 40), font=font)
    if legend:
        draw.text((_GAP + 4, canvas.height - legend_height + 2), legend, fill=(40, 40, 40), font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA floats over the sheet's light grey background: RGB floats."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + _BACKGROUND * (1 - alpha)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def caption(number: int, fit: ViewFit) -> str:
    """A view tile's caption: its number, IoU and fitted camera."""
    answer = fit.answer()
    return f"view {number}: IoU {answer['iou']:.2f}\naz {answer['azimuth']:.0f}° el {answer['elevation']:.0f}°"
