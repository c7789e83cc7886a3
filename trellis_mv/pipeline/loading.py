"""Loading TRELLIS.2 from local folders: the first half of the trellis2 adapter.

trellis2's ``Trellis2ImageTo3DPipeline`` is built from its public pieces, never from
``from_pretrained`` with hub ids: each model with ``trellis2.models.from_pretrained`` on a local
path, the samplers from ``pipeline.json``, the image encoder and background remover from local
folders. ``trellis_mv.weights.find_weights`` says where each repository is (baked into the image, a
RunPod cached model or TRELLIS_MV_MODEL_DIR) and maps the hub ids in ``pipeline.json``
(``microsoft/TRELLIS-image-large/ckpts/...``, ``facebook/dinov3-vitl16-pretrain-lvd1689m``) to those
folders; RMBG-2.0 is replaced by ``Settings.background_model``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..config import Settings
from ..dinov3 import DinoV3Conditioner
from ..errors import StartupError
from ..weights import find_weights
from .offload import choose_low_vram
from .prefetch import read_ahead, weight_files
from .running import TrellisGenerator

__all__ = ["load_generator", "load_pipeline"]


def load_generator(settings: Settings) -> TrellisGenerator:
    """The worker's generator: the pipeline from ``settings.model_dir`` on the GPU, ready for jobs."""
    weights = find_weights(settings)
    components = (weights.model.repo, *weights.named, weights.background.repo)
    return TrellisGenerator(load_pipeline(settings), max_batch=settings.max_batch, components=components,
                            background=weights.background.repo)


def load_pipeline(settings: Settings, *, background: Any = None) -> Any:
    """Build ``Trellis2ImageTo3DPipeline`` from local folders, on CUDA, resident or low-VRAM.

    ``background`` replaces the remover loaded from ``settings.background_model`` (tests pass a
    stand-in). Raises ``StartupError`` for missing files.
    """
    from trellis2 import models
    from trellis2.pipelines import Trellis2ImageTo3DPipeline, samplers

    from ..background import load_background_remover

    weights = find_weights(settings)
    config_file = weights.model_dir / "pipeline.json"
    if not config_file.is_file():
        raise StartupError(f"TRELLIS_MV_MODEL_DIR: {config_file} does not exist")
    args = json.loads(config_file.read_text())["args"]
    low_vram = choose_low_vram(settings.low_vram)
    read_ahead(weight_files(args, weights))
    loaded = {}
    for name, reference in args["models"].items():
        if name in Trellis2ImageTo3DPipeline.model_names_to_load:
            # Built on the GPU (seconds, not minutes of CPU init); parked on the CPU in low-VRAM mode.
            with torch.device("cuda"):
                loaded[name] = models.from_pretrained(str(weights.path(reference)))
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
        image_cond_model=DinoV3Conditioner(str(weights.path(args["image_cond_model"]["args"]["model_name"]))),
        rembg_model=background if background is not None else load_background_remover(str(weights.background.path)),
        low_vram=low_vram,
        default_pipeline_type=args.get("default_pipeline_type", "1024_cascade"),
    )
    pipeline.cuda()
    return pipeline
