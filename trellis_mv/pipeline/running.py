"""Running one job on a loaded TRELLIS.2 pipeline: the second half of the trellis2 adapter.

:class:`TrellisGenerator` runs the steps of ``Trellis2ImageTo3DPipeline.run`` at 5565d240c4a4, in
its order and with its random draws, so one view reproduces ``run`` for the same seed; what differs
is that every view is encoded in one DINOv3 batch, and each stage is sampled by
``trellis_mv.sampling`` (``guided`` + ``sample_flow_euler``) with the views combined per step.
Sparse latents are batched per view through :class:`~trellis_mv.pipeline.sparse.SparseBatcher`.
trellis2's sampler objects are read (``sigma_min``, default parameters), never called or patched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError
from ..generator import GenerationRequest, GenerationResult, ProgressFn
from ..sampling import DenseBatcher, guided, sample_flow_euler, time_grid
from .offload import on_gpu
from .preprocess import preprocess_views
from .sparse import SparseBatcher

__all__ = ["Latents", "TrellisGenerator"]

MAX_NUM_TOKENS = 49152  # trellis2's cascade token limit (``run``'s default)
_SS_RESOLUTION = {"512": 32, "1024": 64, "1024_cascade": 32, "1536_cascade": 32}
_SHAPE_MODELS = {"512": ("shape_slat_flow_model_512",), "1024": ("shape_slat_flow_model_1024",),
                 "1024_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"),
                 "1536_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024")}
_TEX_MODEL = {"512": "tex_slat_flow_model_512", "1024": "tex_slat_flow_model_1024",
              "1024_cascade": "tex_slat_flow_model_1024", "1536_cascade": "tex_slat_flow_model_1024"}


class TrellisGenerator:
    """``Generator`` on a loaded ``Trellis2ImageTo3DPipeline``; the pipeline is never changed per job."""

    def __init__(self, pipeline: Any, *, max_batch: int | None = None):
        self.pipeline = pipeline
        self.max_batch = max_batch

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Run ``run``'s steps for all views of ``request``; CUDA OOM propagates as ``torch.cuda.OutOfMemoryError``."""
        latents = self.sample_latents(request, progress)
        torch.cuda.empty_cache()
        start = time.perf_counter()
        mesh = self.pipeline.decode_latent(latents.shape_slat, latents.tex_slat, latents.resolution)[0]
        torch.cuda.synchronize()
        timings = {**latents.timings, "decode_mesh": round(time.perf_counter() - start, 4)}
        stats = {**latents.stats, "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
        return GenerationResult(mesh=mesh, timings=timings, stats=stats, views=latents.views)

    def sample_latents(self, request: GenerationRequest, progress: ProgressFn | None = None) -> Latents:
        """Everything before decoding: preprocess, condition, and the three sampled latents (``run(..., return_latent=True)``)."""
        kind = request.pipeline_type
        missing = [n for n in (*_SHAPE_MODELS[kind], _TEX_MODEL[kind]) if n not in self.pipeline.models]
        if missing:
            raise UserError("pipeline_type", f"{kind!r} needs {', '.join(missing)}, which this worker has not loaded")
        torch.cuda.reset_peak_memory_stats()
        run = _Run(self, request, progress)
        with torch.no_grad():
            shape_slat, tex_slat, resolution = run.latents()
        run.stats["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        run.stats["low_vram"] = bool(self.pipeline.low_vram)
        return Latents(shape_slat, tex_slat, resolution, run.timings, run.stats, run.views)


@dataclass
class Latents:
    """The sampled latents of one job (trellis2's ``return_latent``), with per-stage seconds and counts."""

    shape_slat: Any
    tex_slat: Any
    resolution: int
    timings: dict[str, float]
    stats: dict[str, Any]
    views: tuple[Image.Image, ...] = ()  # preprocessed, RGBA (``GenerationResult.views``)


class _Run:
    """One job's pass through the pipeline: its timings and token counts live here, not on the generator."""

    def __init__(self, generator: TrellisGenerator, request: GenerationRequest, progress: ProgressFn | None):
        self.gen, self.pipe, self.request, self.progress = generator, generator.pipeline, request, progress
        self.batcher = SparseBatcher()  # per job: its memo of batched coordinates dies with the job
        self.timings: dict[str, float] = {}
        self.stats: dict[str, Any] = {"tokens": {}, "model_calls": {}}
        self.views: tuple[Image.Image, ...] = ()

    def latents(self) -> tuple[Any, Any, int]:
        request, pipe, kind = self.request, self.pipe, self.request.pipeline_type
        with self._timed("preprocess"):
            self.views = tuple(preprocess_views(pipe, request.images, request.remove_background))
        images = [view.convert("RGB") for view in self.views]  # trellis2's preprocess_image output
        torch.manual_seed(request.seed)  # where run() seeds: after preprocessing, before conditioning
        with self._timed("conditioning"):
            cond_512 = self._conditions(images, 512)
            cond_1024 = self._conditions(images, 1024) if kind != "512" else None
        with self._timed("sparse_structure"):
            coords = self._sparse_structure(cond_512, _SS_RESOLUTION[kind])
        self.stats["voxels"] = int(coords.shape[0])
        with self._timed("shape_slat"):
            if kind in ("512", "1024"):
                cond = cond_512 if kind == "512" else cond_1024
                shape_slat = self._shape(cond, pipe.models[_SHAPE_MODELS[kind][0]], coords, (0, 1))
                resolution = int(kind)
            else:
                shape_slat, resolution = self._shape_cascade(cond_512, cond_1024, coords, 1536 if kind == "1536_cascade" else 1024)
        self.stats["resolution"], self.stats["shape_tokens"] = resolution, int(shape_slat.feats.shape[0])
        with self._timed("tex_slat"):
            tex_slat = self._texture(cond_512 if kind == "512" else cond_1024, pipe.models[_TEX_MODEL[kind]], shape_slat)
        return shape_slat, tex_slat, resolution

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        torch.cuda.synchronize()
        start = time.perf_counter()
        yield
        torch.cuda.synchronize()
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)

    def _conditions(self, images: list[Image.Image], resolution: int) -> _Conds:
        cond = self.pipe.get_cond(images, resolution, include_neg_cond=False)["cond"]
        views = list(cond.split(1))
        return _Conds(views, torch.zeros_like(views[0]))

    def _sample(self, stage: str, model: Any, noise: Any, conds: _Conds, part: tuple[int, int],
                model_kwargs: dict[str, Any] | None = None) -> Any:
        """Sample one latent with ``stage``'s parameters (pipeline.json merged with the request's)."""
        pipe = self.pipe
        sampler = getattr(pipe, f"{stage}_sampler")
        params = {**getattr(pipe, f"{stage}_sampler_params"), **getattr(self.request, stage).sampler_overrides()}
        counter = _Counted(model)
        denoiser = guided(
            counter, conds.views, conds.neg, mode=self.request.stage_mode(stage),
            strength=params["guidance_strength"], rescale=params.get("guidance_rescale", 0.0),
            interval=tuple(params["guidance_interval"]), sigma_min=sampler.sigma_min,
            batcher=DenseBatcher() if isinstance(noise, torch.Tensor) else self.batcher,
            max_batch=self.gen.max_batch, weights=self.request.view_weights, model_kwargs=model_kwargs,
        )
        steps = params["steps"]
        done, parts = part

        def on_step(info: Any) -> None:
            if self.progress is not None:
                self.progress(stage, done * steps + info.step + 1, parts * steps)

        if pipe.low_vram:
            model.to(pipe.device)
        try:
            out = sample_flow_euler(denoiser, noise, time_grid(steps, params.get("rescale_t", 1.0)),
                                    sigma_min=sampler.sigma_min, callback=on_step, desc=stage)
        finally:
            if pipe.low_vram:
                model.cpu()
        self.stats["tokens"][stage] = self.stats["tokens"].get(stage, 0) + counter.tokens
        self.stats["model_calls"][stage] = self.stats["model_calls"].get(stage, 0) + counter.calls
        return out

    def _sparse_structure(self, conds: _Conds, resolution: int) -> torch.Tensor:
        """``sample_sparse_structure``: dense latent, decoded to occupied voxel coordinates."""
        pipe = self.pipe
        flow = pipe.models["sparse_structure_flow_model"]
        reso = flow.resolution
        noise = torch.randn(1, flow.in_channels, reso, reso, reso).to(pipe.device)
        z_s = self._sample("sparse_structure", flow, noise, conds, (0, 1))
        decoder = pipe.models["sparse_structure_decoder"]
        with on_gpu(pipe, decoder):
            decoded = decoder(z_s) > 0
        if resolution != decoded.shape[2]:
            ratio = decoded.shape[2] // resolution
            decoded = F.max_pool3d(decoded.float(), ratio, ratio, 0) > 0.5
        return torch.argwhere(decoded)[:, [0, 2, 3, 4]].int()

    def _normalization(self, name: str, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``pipeline.json``'s per-channel mean and std of one latent, as ``[1, C]`` tensors."""
        norm = getattr(self.pipe, f"{name}_normalization")
        return torch.tensor(norm["mean"])[None].to(device), torch.tensor(norm["std"])[None].to(device)

    def _denormalised(self, slat: Any, name: str) -> Any:
        mean, std = self._normalization(name, slat.device)
        return slat * std + mean

    def _shape(self, conds: _Conds, flow: Any, coords: torch.Tensor, part: tuple[int, int]) -> Any:
        """``sample_shape_slat``: noise on ``coords``, sampled and de-normalised."""
        from trellis2.modules.sparse import SparseTensor

        noise = SparseTensor(feats=torch.randn(coords.shape[0], flow.in_channels).to(self.pipe.device), coords=coords)
        return self._denormalised(self._sample("shape_slat", flow, noise, conds, part), "shape_slat")

    def _shape_cascade(self, lr_cond: _Conds, cond: _Conds, coords: torch.Tensor, resolution: int) -> tuple[Any, int]:
        """``sample_shape_slat_cascade``: 512 pass, 4x upsample, then the high pass within the token limit."""
        pipe, models = self.pipe, self.pipe.models
        slat = self._shape(lr_cond, models["shape_slat_flow_model_512"], coords, (0, 2))
        decoder = models["shape_slat_decoder"]
        with on_gpu(pipe, decoder, low_vram_attr=True):
            hr_coords = decoder.upsample(slat, upsample_times=4)
        hr_resolution = resolution
        while True:
            quant = torch.cat([hr_coords[:, :1], ((hr_coords[:, 1:] + 0.5) / 512 * (hr_resolution // 16)).int()], dim=1)
            coords = quant.unique(dim=0)
            if coords.shape[0] < MAX_NUM_TOKENS or hr_resolution == 1024:
                break
            hr_resolution -= 128
        return self._shape(cond, models["shape_slat_flow_model_1024"], coords, (1, 2)), hr_resolution

    def _texture(self, conds: _Conds, flow: Any, shape_slat: Any) -> Any:
        """``sample_tex_slat``: conditioned on the normalised shape latent through ``concat_cond``."""
        mean, std = self._normalization("shape_slat", shape_slat.device)
        shape_norm = (shape_slat - mean) / std
        channels = flow.in_channels - shape_norm.feats.shape[1]
        noise = shape_norm.replace(feats=torch.randn(shape_norm.coords.shape[0], channels).to(self.pipe.device))
        slat = self._sample("tex_slat", flow, noise, conds, (0, 1), model_kwargs={"concat_cond": shape_norm})
        return self._denormalised(slat, "tex_slat")


class _Conds:
    """Per-view conditions ``[1, L, C]`` and the one negative condition (zeros, as trellis2's ``get_cond``)."""

    def __init__(self, views: list[torch.Tensor], neg: torch.Tensor):
        self.views, self.neg = views, neg


class _Counted:
    """The flow model, counting calls and latent tokens (voxels, or 16³ cells per dense sample) it processed."""

    def __init__(self, model: Any):
        self.model, self.calls, self.tokens = model, 0, 0

    def __call__(self, x: Any, t: torch.Tensor, cond: torch.Tensor, **kwargs: Any) -> Any:
        self.calls += 1
        self.tokens += int(x.shape[0] * np.prod(x.shape[2:])) if isinstance(x, torch.Tensor) else int(x.feats.shape[0])
        return self.model(x, t, cond, **kwargs)


