"""The per-view self-check: from where does the result look like each photo's silhouette?

For each view, a coarse-to-fine search finds the orbit camera (azimuth, elevation, and distance with
its field of view, see :mod:`trellis_mv.preview.cameras`) whose silhouette of the mesh best overlaps the
view's foreground mask, and answers that camera with the overlap as intersection over union.

- **Framing.** TRELLIS.2 conditions on each view cropped to the square around its foreground, so a
  view says nothing about where the object stood in the frame or how large it was. Both sides are
  therefore normalised: the mask is cut to the square around its foreground (alpha > 0.5) and
  resampled to S×S; each silhouette is rendered with the mesh's bounding square filling the frame
  (``cameras.frame_to_square``). What is left to search is the direction and the perspective.
- **Search.** (1) One coarse grid of directions at 40° field of view, rendered once and scored against
  every view at once (IoU of all pairs as one matrix product). (2) Per view, the best few grid cells
  that are not neighbours start a pattern search over azimuth, elevation and field of view: each round
  renders the 3×3×3 neighbours of every start for every view as one batch, keeps the best and halves
  the steps. Distance follows from the field of view (TRELLIS.2's conditioning renders, 10°..70°).
- **Masks** are the views as the generator saw them (``GenerationResult.views``: TRELLIS.2's
  preprocessed crops, alpha from the image or the background remover).

It cannot see texture (only outlines are compared), the sides no view shows, or hollows an outline
hides; a symmetric object fits several cameras equally well. No in-plane roll is searched: TRELLIS.2
was trained on upright cameras.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .cameras import FOV_RANGE, distance_for_fov, orbit_eyes
from .render import RenderMesh, silhouettes

__all__ = ["FitSearch", "ViewFit", "fit_views", "iou", "square_view", "view_masks"]

_COARSE_FOV = 40.0
_ELEVATION_LIMIT = 85.0


@dataclass(frozen=True)
class FitSearch:
    """How hard to look: silhouette size, the coarse grid, how many starts and refining rounds."""

    resolution: int = 128
    azimuth_step: float = 15.0
    elevations: tuple[float, ...] = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
    fov_step: float = 20.0
    starts: int = 3
    rounds: int = 4


@dataclass(frozen=True)
class ViewFit:
    """One view's best camera (degrees; distance in the GLB's units) and its silhouette IoU."""

    azimuth: float
    elevation: float
    fov: float
    iou: float

    @property
    def distance(self) -> float:
        """Where a camera of this field of view stands (``cameras.distance_for_fov``)."""
        return float(distance_for_fov(self.fov))

    def answer(self) -> dict[str, float]:
        """The view's entry of the answer's ``views_fit``."""
        return {
            "azimuth": round(self.azimuth % 360, 1),
            "elevation": round(self.elevation, 1),
            "distance": round(self.distance, 3),
            "fov": round(self.fov, 1),
            "iou": round(self.iou, 3),
        }


def fit_views(mesh: RenderMesh, views: Sequence[Image.Image], search: FitSearch = FitSearch()) -> list[ViewFit]:
    """The best camera and IoU for each view (see the module docstring); one entry per view, in order."""
    if not views:
        return []
    size, device = search.resolution, mesh.vertices.device
    masks = view_masks(views, size).to(device)  # [N, S, S]
    # 1. coarse: one grid, shared by all views
    azimuth, elevation = torch.meshgrid(
        torch.arange(0.0, 360.0, search.azimuth_step), torch.tensor(search.elevations, dtype=torch.float32), indexing="ij"
    )
    grid = torch.stack([azimuth.flatten(), elevation.flatten(), torch.full((azimuth.numel(),), _COARSE_FOV)], dim=1)
    coarse = _iou_matrix(_render(mesh, grid, size), masks)  # [G, N]
    # 2. refine: pattern search from distinct starts, all views and starts in one batch per round
    spacing = float(np.diff(search.elevations).min()) if len(search.elevations) > 1 else search.azimuth_step
    best = torch.stack([grid[_distinct_best(grid, coarse[:, view], search.starts, search.azimuth_step)] for view in range(len(views))])
    score = torch.zeros(best.shape[:2])  # [N, K]; the coarse score is at a fixed fov, so re-score the centre
    step = torch.tensor([search.azimuth_step / 2, spacing / 2, search.fov_step])
    offsets = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0])] * 3)  # [27, 3]
    for _ in range(search.rounds):
        candidates = _clamped(best[:, :, None, :] + offsets * step)  # [N, K, 27, 3]
        scores = _iou_rows(_render(mesh, candidates.reshape(-1, 3), size), masks, repeats=candidates.shape[1] * 27)
        scores = scores.reshape(candidates.shape[:3]).cpu()
        choice = scores.argmax(dim=2)
        best = torch.gather(candidates, 2, choice[..., None, None].expand(-1, -1, 1, 3))[:, :, 0]
        score = torch.gather(scores, 2, choice[..., None])[..., 0]
        step = step / 2
    winner = score.argmax(dim=1)
    return [
        ViewFit(azimuth=float(best[view, k, 0]), elevation=float(best[view, k, 1]), fov=float(best[view, k, 2]), iou=float(score[view, k]))
        for view, k in enumerate(winner.tolist())
    ]


def view_masks(views: Sequence[Image.Image], size: int) -> torch.Tensor:
    """Each view's foreground ``[N, S, S]`` (bool), cut to the square around it like TRELLIS.2's crop."""
    return torch.stack([torch.from_numpy(square_view(view, size)[..., 3] > 0.5) for view in views])


def square_view(image: Image.Image, size: int, *, margin: float = 0.0) -> np.ndarray:
    """``image`` as RGBA floats ``[S, S, 4]``, cut to the square around its foreground (alpha > 0.5).

    The square is centred on the foreground's bounding box and as wide as its longer side (times
    ``1 + margin``), the crop of trellis2's ``preprocess_image``; parts outside the image are
    transparent. An image without foreground is taken whole.
    """
    rgba = image.convert("RGBA")
    found = np.argwhere(np.asarray(rgba)[..., 3] > 127)
    if found.size:
        (top, left), (bottom, right) = found.min(axis=0), found.max(axis=0) + 1
    else:
        top, left, bottom, right = 0, 0, rgba.height, rgba.width
    centre = ((left + right) / 2, (top + bottom) / 2)
    half = max(right - left, bottom - top) / 2 * (1 + margin)
    pad = int(np.ceil(max(0.0, half - centre[0], half - centre[1], centre[0] + half - rgba.width, centre[1] + half - rgba.height)))
    canvas = Image.new("RGBA", (rgba.width + 2 * pad, rgba.height + 2 * pad), (0, 0, 0, 0))
    canvas.paste(rgba, (pad, pad))
    box = (centre[0] - half + pad, centre[1] - half + pad, centre[0] + half + pad, centre[1] + half + pad)
    return np.asarray(canvas.resize((size, size), Image.Resampling.BOX, box=box), dtype=np.float32) / 255


def iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boolean masks, pairwise along the first axis; 0 when both are empty."""
    first, second = first.flatten(1), second.flatten(1)
    union = (first | second).sum(dim=1)
    return (first & second).sum(dim=1) / union.clamp(min=1)


def _iou_matrix(silhouettes_: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """IoU of every silhouette ``[G, S, S]`` with every mask ``[N, S, S]``: ``[G, N]``."""
    a, b = silhouettes_.flatten(1).float(), masks.flatten(1).float()
    inter = a @ b.T
    union = a.sum(dim=1)[:, None] + b.sum(dim=1)[None, :] - inter
    return (inter / union.clamp(min=1)).cpu()


def _iou_rows(silhouettes_: torch.Tensor, masks: torch.Tensor, *, repeats: int) -> torch.Tensor:
    """IoU of each silhouette with its own view's mask (silhouettes grouped by view, ``repeats`` each)."""
    return iou(silhouettes_, masks.repeat_interleave(repeats, dim=0))


def _render(mesh: RenderMesh, cameras: torch.Tensor, size: int) -> torch.Tensor:
    return silhouettes(mesh, cameras[:, 0], cameras[:, 1], cameras[:, 2], size)


def _clamped(cameras: torch.Tensor) -> torch.Tensor:
    low = torch.tensor([-torch.inf, -_ELEVATION_LIMIT, FOV_RANGE[0]])
    high = torch.tensor([torch.inf, _ELEVATION_LIMIT, FOV_RANGE[1]])
    return torch.maximum(torch.minimum(cameras, high), low)


def _distinct_best(grid: torch.Tensor, scores: torch.Tensor, count: int, step: float) -> torch.Tensor:
    """Indices of the ``count`` best grid cameras, skipping any within 1.5 grid steps of one already taken."""
    directions = orbit_eyes(grid[:, 0], grid[:, 1], torch.ones(grid.shape[0]))
    near = torch.cos(torch.deg2rad(torch.tensor(1.5 * step)))
    taken: list[int] = []
    for index in torch.argsort(scores, descending=True).tolist():
        if all(float(directions[index] @ directions[other]) < near for other in taken):
            taken.append(index)
        if len(taken) == count:
            break
    while len(taken) < count:  # a tiny grid: repeat the best
        taken.append(taken[0])
    return torch.tensor(taken)

