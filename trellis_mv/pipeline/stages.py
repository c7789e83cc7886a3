"""TRELLIS.2's three sampling stages for one job, each a function of the job's :class:`StageSampler`.

Each function is the counterpart of one ``Trellis2ImageTo3DPipeline`` method at 5565d240c4a4 and
draws its noise in that method's order (``sample_sparse_structure``, ``sample_shape_slat``,
``sample_shape_slat_cascade``, ``sample_tex_slat``); the sampling itself is ``trellis_mv.sampling``
(``guided`` + ``sample_flow_euler``) with the views combined per step. Data changes hands between
stages only through return values: conditions -> voxel coordinates -> shape latent -> texture latent.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..cascade import CascadeFit, fit_resolution
from ..dinov3 import pixels
from ..generator import GenerationRequest, ProgressFn
from ..sampling import DenseBatcher, guided, sample_flow_euler, time_grid
from .offload import on_gpu
from .sparse import SparseBatcher

__all__ = ["Conds", "StageSampler", "conditions", "shape", "shape_cascade", "sparse_structure", "texture"]


class Conds:
    """Per-view conditions ``[1, L, C]`` and the one negative condition (zeros, as trellis2's ``get_cond``)."""

    def __init__(self, views: list[torch.Tensor], neg: torch.Tensor):
        self.views, self.neg = views, neg


class StageSampler:
    """What one job's stages share: the pipeline, the request's overrides and modes, progress, and counts.

    One per job: its ``SparseBatcher`` memo of batched coordinates and its token and call counts die
    with the job; the pipeline is only read.
    """

    def __init__(self, pipe: Any, request: GenerationRequest, progress: ProgressFn | None, max_batch: int | None):
        self.pipe, self.request, self.progress, self.max_batch = pipe, request, progress, max_batch
        self.batcher = SparseBatcher()
        self.tokens: dict[str, int] = {}
        self.model_calls: dict[str, int] = {}

    def sample(self, stage: str, model: Any, noise: Any, conds: Conds, part: tuple[int, int],
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
            max_batch=self.max_batch, weights=self.request.view_weights, model_kwargs=model_kwargs,
        )
        steps = params["steps"]
        done, parts = part

        def on_step(info: Any) -> None:
            if self.progress is not None:
                self.progress(stage, done * steps + info.step + 1, parts * steps)

        with on_gpu(pipe, model):
            out = sample_flow_euler(denoiser, noise, time_grid(steps, params.get("rescale_t", 1.0)),
                                    sigma_min=sampler.sigma_min, callback=on_step, desc=stage)
        self.tokens[stage] = self.tokens.get(stage, 0) + counter.tokens
        self.model_calls[stage] = self.model_calls.get(stage, 0) + counter.calls
        return out


def conditions(pipe: Any, images: list[Image.Image], resolutions: tuple[int, ...]) -> dict[int, Conds]:
    """``get_cond`` for all views at each of ``resolutions``: one DINOv3 batch per resolution, split per view.

    The same numbers as trellis2's ``get_cond`` (the conditioner's resize and normalisation), with
    what a view adds kept off the clock: every view's resizing for every resolution runs at once on
    threads (PIL's resampling releases the GIL; the GPU encodes one resolution while the next is
    being resized), and in low-VRAM mode the encoder visits the GPU once for both resolutions.
    """
    encoder = pipe.image_cond_model
    with ThreadPoolExecutor(max_workers=min(8, len(images) * len(resolutions))) as pool:
        resized = {size: [pool.submit(pixels, image, size) for image in images] for size in resolutions}
        out = {}
        with on_gpu(pipe, encoder):
            for size, futures in resized.items():
                cond = encoder(torch.stack([future.result() for future in futures]))
                views = list(cond.split(1))
                out[size] = Conds(views, torch.zeros_like(views[0]))
    return out


def sparse_structure(sampler: StageSampler, conds: Conds, resolution: int) -> torch.Tensor:
    """``sample_sparse_structure``: dense latent, decoded to occupied voxel coordinates."""
    pipe = sampler.pipe
    flow = pipe.models["sparse_structure_flow_model"]
    reso = flow.resolution
    noise = torch.randn(1, flow.in_channels, reso, reso, reso).to(pipe.device)
    z_s = sampler.sample("sparse_structure", flow, noise, conds, (0, 1))
    decoder = pipe.models["sparse_structure_decoder"]
    with on_gpu(pipe, decoder):
        decoded = decoder(z_s) > 0
    if resolution != decoded.shape[2]:
        ratio = decoded.shape[2] // resolution
        decoded = F.max_pool3d(decoded.float(), ratio, ratio, 0) > 0.5
    return torch.argwhere(decoded)[:, [0, 2, 3, 4]].int()


def shape(sampler: StageSampler, conds: Conds, flow: Any, coords: torch.Tensor, part: tuple[int, int]) -> Any:
    """``sample_shape_slat``: noise on ``coords``, sampled and de-normalised."""
    from trellis2.modules.sparse import SparseTensor

    noise = SparseTensor(feats=torch.randn(coords.shape[0], flow.in_channels).to(sampler.pipe.device), coords=coords)
    return _denormalised(sampler.pipe, sampler.sample("shape_slat", flow, noise, conds, part), "shape_slat")


def shape_cascade(sampler: StageSampler, lr_cond: Conds, cond: Conds, coords: torch.Tensor,
                  resolution: int) -> tuple[Any, CascadeFit]:
    """``sample_shape_slat_cascade``: 512 pass, 4x upsample, then the high pass within the token limit."""
    pipe, models = sampler.pipe, sampler.pipe.models
    slat = shape(sampler, lr_cond, models["shape_slat_flow_model_512"], coords, (0, 2))
    decoder = models["shape_slat_decoder"]
    with on_gpu(pipe, decoder, low_vram_attr=True):
        hr_coords = decoder.upsample(slat, upsample_times=4)

    def quantized(hr_resolution: int) -> torch.Tensor:
        quant = torch.cat([hr_coords[:, :1], ((hr_coords[:, 1:] + 0.5) / 512 * (hr_resolution // 16)).int()], dim=1)
        return quant.unique(dim=0)

    fit = fit_resolution(resolution, quantized)
    return shape(sampler, cond, models["shape_slat_flow_model_1024"], fit.structure, (1, 2)), fit


def texture(sampler: StageSampler, conds: Conds, flow: Any, shape_slat: Any) -> Any:
    """``sample_tex_slat``: conditioned on the normalised shape latent through ``concat_cond``."""
    mean, std = _normalization(sampler.pipe, "shape_slat", shape_slat.device)
    shape_norm = (shape_slat - mean) / std
    channels = flow.in_channels - shape_norm.feats.shape[1]
    noise = shape_norm.replace(feats=torch.randn(shape_norm.coords.shape[0], channels).to(sampler.pipe.device))
    slat = sampler.sample("tex_slat", flow, noise, conds, (0, 1), model_kwargs={"concat_cond": shape_norm})
    return _denormalised(sampler.pipe, slat, "tex_slat")


def _normalization(pipe: Any, name: str, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``pipeline.json``'s per-channel mean and std of one latent, as ``[1, C]`` tensors."""
    norm = getattr(pipe, f"{name}_normalization")
    return torch.tensor(norm["mean"])[None].to(device), torch.tensor(norm["std"])[None].to(device)


def _denormalised(pipe: Any, slat: Any, name: str) -> Any:
    mean, std = _normalization(pipe, name, slat.device)
    return slat * std + mean


class _Counted:
    """The flow model, counting calls and latent tokens (voxels, or 16³ cells per dense sample) it processed."""

    def __init__(self, model: Any):
        self.model, self.calls, self.tokens = model, 0, 0

    def __call__(self, x: Any, t: torch.Tensor, cond: torch.Tensor, **kwargs: Any) -> Any:
        self.calls += 1
        self.tokens += int(x.shape[0] * np.prod(x.shape[2:])) if isinstance(x, torch.Tensor) else int(x.feats.shape[0])
        return self.model(x, t, cond, **kwargs)
