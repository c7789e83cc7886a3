"""TRELLIS.2 behind the ``Generator`` seam: the only module that imports trellis2 (inside functions).

Loading (:func:`load_generator`): trellis2's ``Trellis2ImageTo3DPipeline`` is built from its public
pieces, never from ``from_pretrained`` with hub ids: each model with ``trellis2.models.from_pretrained``
on a local path, the samplers from ``pipeline.json``, the image encoder and background remover
from local folders. Hub ids in ``pipeline.json`` (``microsoft/TRELLIS-image-large/ckpts/...``,
``facebook/dinov3-vitl16-pretrain-lvd1689m``) resolve to ``<parent of model_dir>/<repo name>/...``,
the image's weights layout; RMBG-2.0 is replaced by ``Settings.background_model``.

Generating (:class:`TrellisGenerator`): the steps of ``Trellis2ImageTo3DPipeline.run`` at
5565d240c4a4, in its order and with its random draws, so one view reproduces ``run`` for the same
seed; what differs is that every view is encoded in one DINOv3 batch, and each stage is sampled by
``trellis_mv.sampling`` (``guided`` + ``sample_flow_euler``) with the views combined per step.
Sparse latents are batched per view through :class:`SparseBatcher`. trellis2's sampler objects
are read (``sigma_min``, default parameters), never called or patched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import Settings
from .errors import StartupError, UserError
from .generator import GenerationRequest, GenerationResult, ProgressFn
from .dinov3 import DinoV3Conditioner
from .sampling import DenseBatcher, guided, sample_flow_euler, time_grid
from .startup import local_model_path

__all__ = ["Latents", "SparseBatcher", "TrellisGenerator", "load_generator", "load_pipeline"]

# Resident mode keeps every model on the GPU. Measured on an H100 (BENCHMARKS.md): weights about
# 15.5 GiB resident (five 1.3 B bf16 flows, two fp16 decoders, DINOv3), 1024_cascade with 4 views in
# multidiffusion peaks at 19.5 GiB, and o_voxel's export of a cascade mesh takes up to 7.6 GiB (GPU.md)
# while the weights stay put; BiRefNet adds about 1 GiB and 8 views a few more. Below this much free
# memory, models wait on the CPU and visit the GPU per stage (1024_cascade, 4 views: 6.6 GiB peak).
RESIDENT_MIN_FREE_GIB = 36.0
MAX_NUM_TOKENS = 49152  # trellis2's cascade token limit (``run``'s default)
_SS_RESOLUTION = {"512": 32, "1024": 64, "1024_cascade": 32, "1536_cascade": 32}
_SHAPE_MODELS = {"512": ("shape_slat_flow_model_512",), "1024": ("shape_slat_flow_model_1024",),
                 "1024_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"),
                 "1536_cascade": ("shape_slat_flow_model_512", "shape_slat_flow_model_1024")}
_TEX_MODEL = {"512": "tex_slat_flow_model_512", "1024": "tex_slat_flow_model_1024",
              "1024_cascade": "tex_slat_flow_model_1024", "1536_cascade": "tex_slat_flow_model_1024"}


def load_generator(settings: Settings) -> TrellisGenerator:
    """The worker's generator: the pipeline from ``settings.model_dir`` on the GPU, ready for jobs."""
    return TrellisGenerator(load_pipeline(settings), max_batch=settings.max_batch)


def load_pipeline(settings: Settings, *, background: Any = None) -> Any:
    """Build ``Trellis2ImageTo3DPipeline`` from local folders, on CUDA, resident or low-VRAM.

    ``background`` replaces the remover loaded from ``settings.background_model`` (tests pass a
    stand-in). Raises ``StartupError`` for missing files.
    """
    from trellis2 import models
    from trellis2.pipelines import Trellis2ImageTo3DPipeline, samplers

    from .background import load_background_remover

    model_dir = Path(settings.model_dir)
    config_file = model_dir / "pipeline.json"
    if not config_file.is_file():
        raise StartupError(f"TRELLIS_MV_MODEL_DIR: {config_file} does not exist")
    args = json.loads(config_file.read_text())["args"]
    low_vram = _choose_low_vram(settings.low_vram)
    loaded = {}
    for name, reference in args["models"].items():
        if name in Trellis2ImageTo3DPipeline.model_names_to_load:
            # Built on the GPU (seconds, not minutes of CPU init); parked on the CPU in low-VRAM mode.
            with torch.device("cuda"):
                loaded[name] = models.from_pretrained(str(local_model_path(reference, model_dir)))
            if low_vram:
                loaded[name].cpu()
    stage_sampler = {stage: getattr(samplers, args[stage]["name"])(**args[stage]["args"])
                     for stage in ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")}
    pipeline = Trellis2ImageTo3DPipeline(
        models=loaded,
        **stage_sampler,
        sparse_structure_sampler_params=args["sparse_structure_sampler"]["params"],
        shape_slat_sampler_params=args["shape_slat_sampler"]["params"],
        tex_slat_sampler_params=args["tex_slat_sampler"]["params"],
        shape_slat_normalization=args["shape_slat_normalization"],
        tex_slat_normalization=args["tex_slat_normalization"],
        image_cond_model=DinoV3Conditioner(str(local_model_path(args["image_cond_model"]["args"]["model_name"], model_dir))),
        rembg_model=background if background is not None else load_background_remover(settings.background_model),
        low_vram=low_vram,
        default_pipeline_type=args.get("default_pipeline_type", "1024_cascade"),
    )
    pipeline.cuda()
    return pipeline


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
        return GenerationResult(mesh=mesh, timings=timings, stats=stats)

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
        return Latents(shape_slat, tex_slat, resolution, run.timings, run.stats)


@dataclass
class Latents:
    """The sampled latents of one job (trellis2's ``return_latent``), with per-stage seconds and counts."""

    shape_slat: Any
    tex_slat: Any
    resolution: int
    timings: dict[str, float]
    stats: dict[str, Any]


class _Run:
    """One job's pass through the pipeline: its timings and token counts live here, not on the generator."""

    def __init__(self, generator: TrellisGenerator, request: GenerationRequest, progress: ProgressFn | None):
        self.gen, self.pipe, self.request, self.progress = generator, generator.pipeline, request, progress
        self.batcher = SparseBatcher()  # per job: its memo of batched coordinates dies with the job
        self.timings: dict[str, float] = {}
        self.stats: dict[str, Any] = {"tokens": {}, "model_calls": {}}

    def latents(self) -> tuple[Any, Any, int]:
        request, pipe, kind = self.request, self.pipe, self.request.pipeline_type
        with self._timed("preprocess"):
            images = self._preprocess(request.images)
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

    def _preprocess(self, images: tuple[Image.Image, ...]) -> list[Image.Image]:
        """trellis2's ``preprocess_image`` per view, with the request's ``remove_background`` choice.

        Views are shrunk to at most 1024 px (LANCZOS); those without a real alpha channel (or all, when
        the request says so) go through the background remover, which low-VRAM mode holds on the GPU
        once for all of them; then the square crop around the foreground.
        """
        choice = self.request.remove_background
        shrunk, remove = [], []
        for image in images:
            has_alpha = image.mode == "RGBA" and not np.all(np.asarray(image)[:, :, 3] == 255)
            scale = min(1, 1024 / max(image.size))
            if scale < 1:
                image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
            shrunk.append(image)
            remove.append(choice if choice is not None else not has_alpha)
        remover = self.pipe.rembg_model
        with _on_gpu(self.pipe, remover) if any(remove) else nullcontext():
            cut = [remover(image.convert("RGB")) if r else image.convert("RGBA") for image, r in zip(shrunk, remove)]
        return [_crop_to_foreground(image, index) for index, image in enumerate(cut)]

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
            max_batch=self.gen.max_batch, model_kwargs=model_kwargs,
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
        with _on_gpu(pipe, decoder):
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
        with _on_gpu(pipe, decoder, low_vram_attr=True):
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


@contextmanager
def _on_gpu(pipe: Any, module: Any, *, low_vram_attr: bool = False) -> Iterator[None]:
    """In low-VRAM mode, hold ``module`` on the GPU for the block (as trellis2 does around each decoder)."""
    if not pipe.low_vram:
        yield
        return
    module.to(pipe.device)
    if low_vram_attr:
        module.low_vram = True
    try:
        yield
    finally:
        module.cpu()
        if low_vram_attr:
            module.low_vram = False


class SparseBatcher:
    """``sampling.Batcher`` for trellis2's ``SparseTensor``: one copy of the latent per pass, batch indices 0..k-1.

    The latent keeps the same coordinates tensor through a sampling call (trellis2's arithmetic uses
    ``replace``), so the batched coordinates are built once per ``k`` and reused: their spatial cache
    (layout, RoPE phases) survives across steps, as it does for trellis2's single latent.
    """

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._templates: dict[int, Any] = {}
        self._first: Any = None

    def cat(self, items: list[Any]) -> Any:
        """Stack batch-1 sparse tensors with batch indices 0..k-1 (offsetting larger batches)."""
        from trellis2.modules.sparse import sparse_cat

        first = items[0]
        if first.shape[0] != 1 or any(item.coords is not first.coords for item in items):
            return sparse_cat(items)
        if self._source is not first.coords:
            self._source, self._templates = first.coords, {}
        self._first = first
        k = len(items)
        feats = torch.cat([item.feats for item in items], dim=0)
        if k not in self._templates:
            self._templates[k] = sparse_cat(items)
            return self._templates[k]
        return self._templates[k].replace(feats)

    def split(self, batched: Any, n: int) -> list[Any]:
        """Inverse of :meth:`cat`: ``n`` parts of equal batch size, batch indices from 0 again."""
        from trellis2.modules.sparse import SparseTensor

        size = batched.shape[0]
        if n < 1 or size % n:
            raise ValueError(f"n: cannot split a batch of {size} into {n} equal parts")
        template = self._templates.get(n)
        if template is not None and size == n and batched.coords is template.coords:
            return [self._first.replace(part) for part in batched.feats.chunk(n)]
        per, layout, parts = size // n, batched.layout, []
        for j in range(n):
            rows = slice(layout[j * per].start, layout[(j + 1) * per - 1].stop)
            coords = batched.coords[rows].clone()
            coords[:, 0] -= j * per
            parts.append(SparseTensor(feats=batched.feats[rows], coords=coords))
        return parts


def _choose_low_vram(setting: str) -> bool:
    if setting != "auto":
        return setting == "on"
    free, _total = torch.cuda.mem_get_info()
    return free / 2**30 < RESIDENT_MIN_FREE_GIB


def _crop_to_foreground(image: Image.Image, index: int) -> Image.Image:
    """trellis2's square crop around the alpha > 0.8 bounding box, colours premultiplied by alpha."""
    array = np.array(image)
    found = np.argwhere(array[:, :, 3] > 0.8 * 255)
    if found.size == 0:
        raise UserError(f"images[{index}]", "no foreground found (the alpha channel, or the background removal, "
                        "left nothing opaque); send a photo of an object or an RGBA image with the object opaque")
    bbox = np.min(found[:, 1]), np.min(found[:, 0]), np.max(found[:, 1]), np.max(found[:, 0])
    center = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    size = int(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
    bbox = center[0] - size // 2, center[1] - size // 2, center[0] + size // 2, center[1] + size // 2
    output = np.array(image.crop(bbox)).astype(np.float32) / 255
    output = output[:, :, :3] * output[:, :, 3:4]
    return Image.fromarray((output * 255).astype(np.uint8))
