"""The preview of a finished job: one PNG contact sheet and the per-view self-check (``views_fit``).

The sheet holds a turntable of the GLB's mesh (8 azimuths at 20° elevation, base colour under a key
light) and, for each input view as the model saw it, the fitted silhouette drawn over it: the
outline in green, what only the view covers tinted red, what only the result covers tinted blue.
``make_preview`` reads like ``worker.run_job``: numbered phases, one timing each.

On a CUDA machine it renders with nvdiffrast; elsewhere with the torch references of
:mod:`trellis_mv.raster`, at a smaller size and a coarser search (``PreviewOptions.for_device``),
which suits the small meshes of CPU stand-in generators, not TRELLIS.2's.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image, ImageDraw, ImageFont

from .export.glb import TexturedMesh
from .raster import rasterizers_for
from .render import RenderMesh, shaded, silhouettes
from .timing import timed
from .views_fit import FitSearch, ViewFit, fit_views, square_view

__all__ = ["Preview", "PreviewOptions", "make_preview", "overlay", "sheet"]

_BACKGROUND = np.array([0.94, 0.94, 0.94], dtype=np.float32)
_PHOTO_ONLY = np.array([0.9, 0.15, 0.15], dtype=np.float32)
_RESULT_ONLY = np.array([0.15, 0.35, 0.95], dtype=np.float32)
_OUTLINE = np.array([0.1, 0.8, 0.2], dtype=np.float32)
_COLUMNS, _GAP = 4, 4
_LEGEND = "views: green = fitted outline, red = only the view, blue = only the result"


@dataclass(frozen=True)
class PreviewOptions:
    """Tile size, supersampling, the turntable's cameras and the fit's search."""

    tile: int = 256
    supersample: int = 2
    turntable: int = 8
    elevation: float = 20.0
    fov: float = 40.0
    margin: float = 0.1
    search: FitSearch = field(default_factory=FitSearch)

    @classmethod
    def for_device(cls, device: torch.device) -> PreviewOptions:
        """Full size on CUDA; on a CPU, small tiles and a coarse search the torch references can afford."""
        if device.type == "cuda":
            return cls()
        coarse = FitSearch(resolution=48, azimuth_step=30.0, elevations=(-30.0, 0.0, 30.0, 60.0), starts=2, rounds=3)
        return cls(tile=128, supersample=1, search=coarse)


@dataclass(frozen=True)
class Preview:
    """The sheet as PNG bytes, the answer's ``views_fit`` and the seconds each phase took."""

    png: bytes
    views_fit: list[dict[str, float]]
    timings: dict[str, float]


def make_preview(
    mesh: TexturedMesh | trimesh.Trimesh, views: Sequence[Image.Image], *, device: torch.device | str | None = None,
    options: PreviewOptions | None = None,
) -> Preview:
    """Render ``mesh`` (what the GLB holds, or any textured trimesh), fit each of ``views`` and draw the sheet."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = options or PreviewOptions.for_device(device)
    timings: dict[str, float] = {}
    with torch.no_grad():
        # 1. upload: geometry and base-colour texture as tensors on the device
        with timed(timings, "preview_upload"):
            render_mesh, rasterizers = RenderMesh.of(mesh, device), rasterizers_for(device)
        # 2. views_fit: each view's camera and silhouette IoU
        with timed(timings, "views_fit"):
            fits = fit_views(render_mesh, views, rasterizers, options.search)
        # 3. turntable: evenly spaced azimuths, one framing for all
        with timed(timings, "turntable"):
            count = options.turntable
            turntable = shaded(
                render_mesh, rasterizers, torch.arange(count) * 360.0 / count, torch.full((count,), options.elevation),
                torch.full((count,), options.fov), options.tile, margin=options.margin, supersample=options.supersample,
            ).cpu().numpy()
        # 4. sheet: the turntable, then every view under its fitted silhouette, as one PNG
        with timed(timings, "preview_sheet"):
            outlines = _fitted_silhouettes(render_mesh, rasterizers, fits, options)
            tiles = [_composite(tile) for tile in turntable]
            tiles += [overlay(square_view(view, options.tile, margin=options.margin), outline) for view, outline in zip(views, outlines)]
            captions = [f"{index * 360 // count}°" for index in range(count)]
            captions += [_caption(number, fit) for number, fit in enumerate(fits, 1)]
            png = sheet(tiles, captions, legend=_LEGEND if fits else None)
    return Preview(png=png, views_fit=[fit.answer() for fit in fits], timings=timings)


def overlay(view: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """A view (RGBA floats) over the background with a silhouette's agreement drawn on it: RGB floats."""
    rgb = _composite(view)
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


def _fitted_silhouettes(mesh: RenderMesh, rasterizers: Any, fits: Sequence[ViewFit], options: PreviewOptions) -> np.ndarray:
    if not fits:
        return np.zeros((0, options.tile, options.tile), dtype=bool)
    cameras = torch.tensor([[fit.azimuth, fit.elevation, fit.fov] for fit in fits])
    return silhouettes(
        mesh, rasterizers, cameras[:, 0], cameras[:, 1], cameras[:, 2], options.tile, margin=options.margin
    ).cpu().numpy()


def _composite(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + _BACKGROUND * (1 - alpha)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _caption(number: int, fit: ViewFit) -> str:
    answer = fit.answer()
    return f"view {number}: IoU {answer['iou']:.2f}\naz {answer['azimuth']:.0f}° el {answer['elevation']:.0f}°"
