"""Running one job on a loaded TRELLIS.2 pipeline: the second half of the trellis2 adapter.

:class:`TrellisGenerator` runs the steps of ``Trellis2ImageTo3DPipeline.run`` at 5565d240c4a4, in
its order and with its random draws, so one view reproduces ``run`` for the same seed; what differs
is that every view is encoded in one DINOv3 batch, and each stage is sampled by
``trellis_mv.sampling`` with the views combined per step (``stages``). Sparse latents are batched per
view through :class:`~trellis_mv.pipeline.sparse.SparseBatcher`. trellis2's sampler objects are read
(``sigma_min``, default parameters), never called or patched. When the cascade lowers the resolution
(``trellis_mv.cascade``), the result says so: ``resolution`` and a readable ``warnings`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..errors import UserError
from ..generator import GenerationRequest, GenerationResult, ProgressFn
from ..timing import timed
from . import stages
from .preprocess import preprocess_views, removes_background

__all__ = ["Latents", "TrellisGenerator"]

_SS_RESOLUTION = {"512": 32, "1024": 64, "1024_cascade": 32, "1536_cascade": 32}
_SHAPE_MODELS = {"512": ("shape_slat_flow_model_512",), "1024": ("shape_slat_flow_model_1024",),
                 "1024_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"),
                 "1536_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024")}
_TEX_MODEL = {"512": "tex_slat_flow_model_512", "1024": "tex_slat_flow_model_1024",
              "1024_cascade": "tex_slat_flow_model_1024", "1536_cascade": "tex_slat_flow_model_1024"}


class TrellisGenerator:
    """``Generator`` on a loaded ``Trellis2ImageTo3DPipeline``; the pipeline is never changed per job.

    ``components`` are the repositories its weights came from and ``background`` the remover's among
    them: a job reports the remover as run only when one of its views went through it.
    ``warmed_latents`` are the 512 shape and texture latents of the flows' warm-up that the load ran
    (``load_pipeline``): the start's warm-up then runs no flow again and decodes these.
    """

    def __init__(self, pipeline: Any, *, max_batch: int | None = None, components: tuple[str, ...] = (),
                 background: str | None = None, warmed_latents: tuple[Any, Any] | None = None):
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.components = components
        self.background = background
        self.warmed_latents = warmed_latents

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Run ``run``'s steps for all views of ``request``; CUDA OOM propagates as ``torch.cuda.OutOfMemoryError``."""
        latents = self.sample_latents(request, progress)
        torch.cuda.empty_cache()
        timings = dict(latents.timings)
        with timed(timings, "decode_mesh", digits=4):
            mesh = self.pipeline.decode_latent(latents.shape_slat, latents.tex_slat, latents.resolution)[0]
        stats = {**latents.stats, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
        removed = any(removes_background(image, request.remove_background) for image in request.images)
        ran = tuple(name for name in self.components if removed or name != self.background)
        return GenerationResult(mesh=mesh, timings=timings, stats=stats, resolution=latents.resolution,
                                warnings=latents.warnings, views=latents.views, components=ran)

    def sample_latents(self, request: GenerationRequest, progress: ProgressFn | None = None) -> Latents:
        """Everything before decoding: preprocess, condition, and the three sampled latents (``run(..., return_latent=True)``)."""
        kind = request.pipeline_type
        missing = [n for n in (*_SHAPE_MODELS[kind], _TEX_MODEL[kind]) if n not in self.pipeline.models]
        if missing:
            raise UserError("pipeline_type", f"{kind!r} needs {', '.join(missing)}, which this worker has not loaded")
        torch.cuda.reset_peak_memory_stats()
        sampler = stages.StageSampler(self.pipeline, request, progress, self.max_batch)
        with torch.no_grad():
            latents = _sample_latents(sampler)
        latents.stats["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        latents.stats["low_vram"] = bool(self.pipeline.low_vram)
        return latents


@dataclass
class Latents:
    """The sampled latents of one job (trellis2's ``return_latent``), with per-stage seconds and counts."""

    shape_slat: Any
    tex_slat: Any
    resolution: int
    timings: dict[str, float]
    stats: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    views: tuple[Image.Image, ...] = ()  # preprocessed, RGBA (``GenerationResult.views``)


def _sample_latents(sampler: stages.StageSampler) -> Latents:
    """``run``'s steps in its order: preprocess, seed, condition, then the three stages, each timed."""
    request, pipe, kind = sampler.request, sampler.pipe, sampler.request.pipeline_type
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"tokens": sampler.tokens, "model_calls": sampler.model_calls}
    warnings: list[str] = []
    with timed(timings, "preprocess", digits=4):
        views = tuple(preprocess_views(pipe, request.images, request.remove_background))
    images = [view.convert("RGB") for view in views]  # trellis2's preprocess_image output
    torch.manual_seed(request.seed)  # where run() seeds: after preprocessing, before conditioning
    with timed(timings, "conditioning", digits=4):
        conds = stages.conditions(pipe, images, (512,) if kind == "512" else (512, 1024))
    cond_512, cond_1024 = conds[512], conds.get(1024)
    with timed(timings, "sparse_structure", digits=4):
        coords = stages.sparse_structure(sampler, cond_512, _SS_RESOLUTION[kind])
    stats["voxels"] = int(coords.shape[0])
    with timed(timings, "shape_slat", digits=4):
        if kind in ("512", "1024"):
            cond = cond_512 if kind == "512" else cond_1024
            shape_slat = stages.shape(sampler, cond, pipe.models[_SHAPE_MODELS[kind][0]], coords, (0, 1))
            resolution = int(kind)
        else:
            requested = 1536 if kind == "1536_cascade" else 1024
            shape_slat, fit = stages.shape_cascade(sampler, cond_512, cond_1024, coords, requested)
            resolution = fit.resolution
            stats["cascade_tokens"] = dict(fit.tried)
            warnings += fit.warnings(kind)
    stats["resolution"], stats["shape_tokens"] = resolution, int(shape_slat.feats.shape[0])
    with timed(timings, "tex_slat", digits=4):
        tex_cond = cond_512 if kind == "512" else cond_1024
        tex_slat = stages.texture(sampler, tex_cond, pipe.models[_TEX_MODEL[kind]], shape_slat)
    return Latents(shape_slat, tex_slat, resolution, timings, stats, warnings, views)
