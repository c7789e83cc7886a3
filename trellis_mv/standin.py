"""A stand-in generator: the worker without TRELLIS.2 or a GPU, to try it and to test it.

It is **not a reconstruction**. It makes a bumpy, textured sphere: the radius is bent by the shape
latents and the texture is the views' mean colour with a pattern from the texture latent. What is
real is everything around it: the request is validated and the images decoded as for TRELLIS.2, the
multi-view sampler (``trellis_mv.sampling``: Euler steps, guidance with rescale, the view modes,
batched passes under ``max_batch``) runs its three stages on tiny random torch flows with
TRELLIS.2's call signature, the cascades sample the shape twice and pick their resolution with
TRELLIS.2's rule (``trellis_mv.cascade``), and the mesh goes through the real GLB export and
storage. Same seed + same input = same GLB bytes. It runs on a CPU in about a second.

What it does not do, every answer says in ``warnings``: it removes no background (views are used as
sent), and ``glb.decimation_target``, ``glb.remesh`` and ``glb.unwrap`` shape TRELLIS.2's decoded
meshes, not its 1280-face sphere with UVs of its own. ``glb.texture_size``, ``texture_format`` and
``compression`` apply as for TRELLIS.2 (the export resamples its 64² texture to ``texture_size``²).

    TRELLIS_MV_GENERATOR=trellis_mv.standin:create python handler.py --test_input test_input.json
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import trimesh
from PIL import Image

from .cascade import MAX_NUM_TOKENS, fit_resolution
from .config import Settings
from .generator import STAGES, GenerationRequest, GenerationResult, ProgressFn, StageOptions
from .sampling import DenseBatcher, guided, sample_flow_euler, time_grid

__all__ = ["DEFAULTS", "NOT_DONE", "StandInGenerator", "create", "shell_voxels"]

LATENT = 48
TOKENS = 8 * 8  # a view becomes 8x8 tokens of RGBA
# Small stand-ins for TRELLIS.2's per-stage sampler defaults, so a job takes milliseconds.
DEFAULTS = StageOptions(steps=4, guidance_strength=3.0, guidance_rescale=0.5, guidance_interval=(0.0, 1.0), rescale_t=1.0)
SIGMA_MIN = 1e-5
_RESOLUTION = {"512": 512, "1024": 1024, "1024_cascade": 1024, "1536_cascade": 1536}
# How the stand-in's warning begins: every answer it makes carries one (what it did other than asked).
NOT_DONE = "stand-in generator: a textured sphere, not a reconstruction of the views"


class TinyFlow(torch.nn.Module):
    """``model(x_t, 1000 t, cond) -> velocity`` with TRELLIS.2's call signature, fixed random weights."""

    def __init__(self, seed: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(LATENT + 1 + 4, 32), torch.nn.SiLU(), torch.nn.Linear(32, LATENT))
        weights = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=weights) * 0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None] / 1000, cond.mean(dim=1)], dim=1))


class StandInGenerator:
    """Implements ``trellis_mv.generator.Generator`` on the CPU; a textured sphere, not a reconstruction.

    ``max_tokens`` is the cascade's token limit for the stand-in's shell (``shell_voxels``): lower it
    to see ``1536_cascade`` run at a lower resolution with a warning, as TRELLIS.2 does for large shapes.
    """

    components: tuple[str, ...] = ()  # no weights: tiny random flows

    def __init__(self, max_batch: int | None = None, *, max_tokens: int = MAX_NUM_TOKENS):
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self.models = {stage: TinyFlow(seed=index) for index, stage in enumerate(STAGES)}

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Sample the three stages for all views of ``request`` and shape the sphere from the latents."""
        views = [_tokens(image) for image in request.images]
        noise = torch.Generator().manual_seed(request.seed)
        latents, timings, warnings = {}, {}, []
        resolution = _RESOLUTION[request.pipeline_type]
        for stage in STAGES:
            start = time.perf_counter()
            # The cascades sample the shape latent twice, as TRELLIS.2 does (low, then high resolution).
            passes = 2 if stage == "shape_slat" and request.pipeline_type.endswith("_cascade") else 1
            for _ in range(passes):
                latents[stage] = self._sample(stage, request, views, noise, progress)
            if passes == 2:
                fit = fit_resolution(resolution, shell_voxels, limit=self.max_tokens)
                resolution = fit.resolution
                warnings += fit.warnings(request.pipeline_type)
            timings[stage] = round(time.perf_counter() - start, 4)
        return GenerationResult(
            mesh=_textured_sphere(latents, _mean_colour(request.images)),
            timings=timings,
            stats={"views": len(views)},
            resolution=resolution,
            warnings=[*_not_done(request), *warnings],
            views=tuple(image.convert("RGBA") for image in request.images),  # no preprocessing: as sent
        )

    def _sample(self, stage: str, request: GenerationRequest, views: list[torch.Tensor], noise: torch.Generator,
                progress: ProgressFn | None) -> torch.Tensor:
        value = _options(getattr(request, stage))
        denoiser = guided(
            self.models[stage],
            views,
            torch.zeros_like(views[0]),
            mode=request.stage_mode(stage),
            strength=value("guidance_strength"),
            rescale=value("guidance_rescale"),
            interval=value("guidance_interval"),
            sigma_min=SIGMA_MIN,
            batcher=DenseBatcher(),
            max_batch=self.max_batch,
            weights=request.view_weights,
        )
        report = None if progress is None else (lambda info: progress(stage, info.step + 1, info.steps))
        x = torch.randn(1, LATENT, generator=noise)
        return sample_flow_euler(
            denoiser, x, time_grid(value("steps"), value("rescale_t")), sigma_min=SIGMA_MIN, callback=report, disable=True
        )[0]


def create(settings: Settings) -> StandInGenerator:
    """The factory ``TRELLIS_MV_GENERATOR=trellis_mv.standin:create`` names."""
    return StandInGenerator(max_batch=settings.max_batch)


def shell_voxels(resolution: int) -> np.ndarray:
    """The stand-in's sparse structure at ``resolution``: a one-voxel spherical shell of radius 0.4 on a
    ``resolution/16`` grid, as voxel coordinates (about 18.5 k at 1536, 8.2 k at 1024)."""
    size = resolution // 16
    axis = np.arange(size) - (size - 1) / 2
    radius = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    return np.argwhere(np.abs(radius - 0.4 * size) < 0.5)


def _not_done(request: GenerationRequest) -> list[str]:
    """What a TRELLIS.2 worker would have done with ``request`` and the stand-in did not, as one warning."""
    background = "" if request.remove_background is False else "it removes no background (views are used as sent); "
    return [f"{NOT_DONE}; {background}glb.decimation_target, glb.remesh and glb.unwrap shape TRELLIS.2's meshes "
            "and were not applied to its sphere"]


def _options(options: StageOptions) -> Callable[[str], Any]:
    """A lookup of one stage's sampler options: the request's overrides, else ``DEFAULTS``."""
    return lambda name: getattr(options, name) if getattr(options, name) is not None else getattr(DEFAULTS, name)


def _tokens(image: Image.Image) -> torch.Tensor:
    small = np.asarray(image.convert("RGBA").resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    return torch.from_numpy(small.reshape(1, TOKENS, 4).copy())


def _mean_colour(images: tuple[Image.Image, ...]) -> np.ndarray:
    """Alpha-weighted mean RGB over all views, in 0..1."""
    total, weight = np.zeros(3), 0.0
    for image in images:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255
        total += (rgba[..., :3] * rgba[..., 3:]).sum(axis=(0, 1))
        weight += rgba[..., 3].sum()
    return total / weight if weight else np.full(3, 0.5)


def _textured_sphere(latents: dict[str, torch.Tensor], colour: np.ndarray) -> trimesh.Trimesh:
    sphere = trimesh.creation.icosphere(subdivisions=3)
    normals = np.asarray(sphere.vertices)
    directions = np.random.default_rng(0).standard_normal((LATENT, 3))
    shape = (latents["sparse_structure"] + latents["shape_slat"]).double().numpy()
    bumps = np.tanh((np.maximum(normals @ directions.T, 0) ** 2) @ shape / 4)
    vertices = normals * (0.4 * (1 + 0.2 * bumps))[:, None]
    uv = np.stack(
        [0.5 + np.arctan2(normals[:, 1], normals[:, 0]) / (2 * np.pi), 0.5 + np.arcsin(np.clip(normals[:, 2], -1, 1)) / np.pi],
        axis=1,
    )
    pattern = np.tanh(latents["tex_slat"].double().numpy()).reshape(4, 4, 3)
    texels = np.clip(colour + 0.2 * pattern, 0, 1)
    texture = Image.fromarray((texels * 255).round().astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=0.7)
    return trimesh.Trimesh(
        vertices=vertices, faces=sphere.faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material), process=False
    )
