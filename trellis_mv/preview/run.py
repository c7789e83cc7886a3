"""The preview of a finished job: one PNG contact sheet and the per-view self-check (``views_fit``).

The sheet holds a turntable of the GLB's mesh (8 azimuths at 20° elevation, base colour under a key
light) and, for each input view as the model saw it, the fitted silhouette drawn over it (``sheet``).
``make_preview`` reads like ``worker.run_job``: numbered phases, one timing each.

Every device renders with the same torch rasterizer (:mod:`trellis_mv.raster`); a CPU gets a smaller
size and a coarser search (``PreviewOptions.for_device``), which suits the small meshes of CPU
stand-in generators, not TRELLIS.2's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh
from PIL import Image

from ..export.glb import TexturedMesh
from ..timing import timed
from .render import RenderMesh, shaded, silhouettes
from .sheet import LEGEND, caption, composite, overlay, sheet
from .views_fit import FitSearch, ViewFit, fit_views, square_view

__all__ = ["Preview", "PreviewOptions", "make_preview"]


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
        """Full size on CUDA; on a CPU, small tiles and a coarse search that a CPU can afford."""
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
            render_mesh = RenderMesh.of(mesh, device)
        # 2. views_fit: each view's camera and silhouette IoU
        with timed(timings, "views_fit"):
            fits = fit_views(render_mesh, views, options.search)
        # 3. turntable: evenly spaced azimuths, one framing for all
        with timed(timings, "turntable"):
            count = options.turntable
            turntable = shaded(
                render_mesh, torch.arange(count) * 360.0 / count, torch.full((count,), options.elevation),
                torch.full((count,), options.fov), options.tile, margin=options.margin, supersample=options.supersample,
            ).cpu().numpy()
        # 4. sheet: the turntable, then every view under its fitted silhouette, as one PNG
        with timed(timings, "preview_sheet"):
            outlines = _fitted_silhouettes(render_mesh, fits, options)
            tiles = [composite(tile) for tile in turntable]
            tiles += [overlay(square_view(view, options.tile, margin=options.margin), outline) for view, outline in zip(views, outlines)]
            captions = [f"{index * 360 // count}°" for index in range(count)]
            captions += [caption(number, fit) for number, fit in enumerate(fits, 1)]
            png = sheet(tiles, captions, legend=LEGEND if fits else None)
    return Preview(png=png, views_fit=[fit.answer() for fit in fits], timings=timings)


def _fitted_silhouettes(mesh: RenderMesh, fits: Sequence[ViewFit], options: PreviewOptions) -> np.ndarray:
    if not fits:
        return np.zeros((0, options.tile, options.tile), dtype=bool)
    cameras = torch.tensor([[fit.azimuth, fit.elevation, fit.fov] for fit in fits])
    return silhouettes(mesh, cameras[:, 0], cameras[:, 1], cameras[:, 2], options.tile, margin=options.margin).cpu().numpy()
