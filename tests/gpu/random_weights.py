"""Random-weight checkpoints at real size, in the layout the worker loads (GPU test machines only).

``write_weights(root, dtype=...)`` writes the image's weights layout under ``root``:

    TRELLIS.2-4B/pipeline.json, TRELLIS.2-4B/ckpts/<model>.json + .safetensors
    TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.json + .safetensors
    dinov3-vitl16-pretrain-lvd1689m/   (random DINOv3ViTModel: hidden 1024, 24 layers, 16 heads, 4 registers, patch 16)
    BiRefNet/                          (remote-code stand-in with BiRefNet's output shape, ``full=True`` also its
                                        checkpoint's size; see birefnet_standin.py)

Model args come from trellis2's own ``configs/`` (denoisers: ``configs/gen``, decoders:
``configs/scvae/*_ft_512.json``), the sparse-structure decoder's from TRELLIS v1 (docs/gpu.md). Every
model is built at full size; ``full=False`` (the default) saves only the tensors that matter,
because ``models.from_pretrained`` loads with ``strict=False`` and keeps the random init of the
rest: writing 15 GB of random numbers measures the disk, not our code.

Trap 1 (docs/gpu.md): trellis2's flows zero their adaLN and output layers at init, so a fresh flow
predicts zero velocity and any two samplers "agree". Every all-zero parameter of a flow gets
random values here and is saved, so the loaded flows predict nonzero velocities; the tests also
assert the sampled latents moved away from the noise.

Trap 2 (docs/gpu.md): a random sparse-structure decoder fills nearly all 32³ cells, so later stages see
tens of thousands of tokens no object has. :class:`ShellOccupancy` wraps the decoder (it still runs,
so its cost is real) and answers a spherical shell instead: radius 0.4 of the grid, 1.5 cells thick
at 64³, which pools to about 4-5 k voxels at 32³ (docs/gpu.md: |r - 12.8| < 1 gives 4,184).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SS_DECODER_ARGS = {"out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
                   "channels": [512, 128, 32], "use_fp16": True}
# checkpoint name -> (config file under trellis2's configs/, model key in that file)
FLOWS = {
    "ss_flow_img_dit_1_3B_64_bf16": ("gen/ss_flow_img_dit_1_3B_64_bf16.json", "denoiser"),
    "slat_flow_img2shape_dit_1_3B_512_bf16": ("gen/slat_flow_img2shape_dit_1_3B_512_bf16.json", "denoiser"),
    "slat_flow_img2shape_dit_1_3B_1024_bf16": ("gen/slat_flow_img2shape_dit_1_3B_512_bf16_ft1024.json", "denoiser"),
    "slat_flow_imgshape2tex_dit_1_3B_512_bf16": ("gen/slat_flow_imgshape2tex_dit_1_3B_512_bf16.json", "denoiser"),
    "slat_flow_imgshape2tex_dit_1_3B_1024_bf16": ("gen/slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024.json", "denoiser"),
}
DECODERS = {
    "shape_dec_next_dc_f16c32_fp16": ("scvae/shape_vae_next_dc_f16c32_fp16_ft_512.json", "decoder"),
    "tex_dec_next_dc_f16c32_fp16": ("scvae/tex_vae_next_dc_f16c32_fp16_ft_512.json", "decoder"),
}
PIPELINE_MODELS = {
    "sparse_structure_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
}
MODELS_512 = ("sparse_structure_decoder", "sparse_structure_flow_model", "shape_slat_decoder",
              "shape_slat_flow_model_512", "tex_slat_decoder", "tex_slat_flow_model_512")


def _sampler(steps: int, strength: float, rescale: float, interval: list[float], rescale_t: float) -> dict:
    return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
            "params": {"steps": steps, "guidance_strength": strength, "guidance_rescale": rescale,
                       "guidance_interval": interval, "rescale_t": rescale_t}}


def pipeline_json(models: tuple[str, ...] | None = None) -> dict:
    """TRELLIS.2-4B's ``pipeline.json`` (docs/gpu.md's sampler numbers), optionally with fewer models."""
    names = models or tuple(PIPELINE_MODELS)
    gen = torch.Generator().manual_seed(7)
    # Not the real statistics (unpublished here): values away from 0/1 so the (de)normalisation is exercised.
    norm = lambda: {"mean": (torch.randn(32, generator=gen) * 0.1).tolist(),  # noqa: E731
                    "std": (0.8 + 0.4 * torch.rand(32, generator=gen)).tolist()}
    return {"name": "Trellis2ImageTo3DPipeline", "args": {
        "models": {name: PIPELINE_MODELS[name] for name in names},
        "sparse_structure_sampler": _sampler(12, 7.5, 0.7, [0.6, 1.0], 5.0),
        "shape_slat_sampler": _sampler(12, 7.5, 0.5, [0.6, 1.0], 3.0),
        "tex_slat_sampler": _sampler(12, 1.0, 0.0, [0.6, 0.9], 3.0),
        "shape_slat_normalization": norm(),
        "tex_slat_normalization": norm(),
        "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": "facebook/dinov3-vitl16-pretrain-lvd1689m"}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
        "default_pipeline_type": "1024_cascade",
    }}


def configs_dir() -> Path:
    """trellis2's ``configs/`` folder, next to the ``trellis2`` package in a source checkout."""
    import trellis2

    folder = Path(trellis2.__file__).resolve().parent.parent / "configs"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: trellis2's configs/ must sit next to the trellis2 package (a source checkout)")
    return folder


def _randomize_zero_init(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Give every all-zero parameter random values (Trap 1); return them by state-dict name."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    changed = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() and not param.any():
                fan_in = param.shape[-1] if param.ndim > 1 else 1
                std = 0.02 if param.ndim == 1 else fan_in ** -0.5
                param.copy_(torch.randn(param.shape, generator=gen, device="cuda") * std)
                changed[name] = param
    return changed


def _save(model: torch.nn.Module, name: str, args: dict, prefix: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.json").write_text(json.dumps({"name": name, "args": args}, indent=1))
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, f"{prefix}.safetensors")


def write_weights(root: Path, *, dtype: str = "bfloat16", models: tuple[str, ...] | None = None,
                  full: bool = False) -> Path:
    """Write the layout above under ``root``; returns the TRELLIS.2-4B folder (``Settings.model_dir``).

    ``dtype`` is the flows' compute dtype ("bfloat16" as released, "float32" for parity tests).
    """
    from trellis2 import models as t2models

    from birefnet_standin import BIREFNET_FLOATS, write_standin

    model_dir = root / "TRELLIS.2-4B"
    wanted = models or tuple(PIPELINE_MODELS)
    configs = configs_dir()
    for seed, (ckpt, (config_file, key)) in enumerate({**FLOWS, **DECODERS}.items()):
        if not any(PIPELINE_MODELS[m].endswith(ckpt) for m in wanted):
            continue
        spec = json.loads((configs / config_file).read_text())["models"][key]
        args = {**spec["args"], **({"dtype": dtype} if ckpt in FLOWS else {})}
        torch.manual_seed(seed)
        with torch.device("cuda"):
            model = getattr(t2models, spec["name"])(**args)
        changed = _randomize_zero_init(model, seed) if ckpt in FLOWS else {}
        _save(model, spec["name"], args, model_dir / "ckpts" / ckpt, model.state_dict() if full else changed)
        del model
    with torch.device("cuda"):
        decoder = t2models.SparseStructureDecoder(**SS_DECODER_ARGS)
    _save(decoder, "SparseStructureDecoder", SS_DECODER_ARGS,
          root / "TRELLIS-image-large" / "ckpts" / "ss_dec_conv3d_16l8_fp16", decoder.state_dict() if full else {})
    (model_dir / "pipeline.json").write_text(json.dumps(pipeline_json(wanted), indent=1))
    write_dinov3(root / "dinov3-vitl16-pretrain-lvd1689m")
    write_standin(root / "BiRefNet", ballast=BIREFNET_FLOATS if full else 0)
    torch.cuda.empty_cache()
    return model_dir


def write_dinov3(folder: Path) -> None:
    """A random DINOv3 ViT-L/16 (the real shapes: 1 + 4 + (S/16)² tokens of 1024) saved with ``save_pretrained``."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    if folder.exists():
        shutil.rmtree(folder)
    config = DINOv3ViTConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             num_register_tokens=4, patch_size=16)
    torch.manual_seed(0)
    DINOv3ViTModel(config).save_pretrained(folder)


class ShellOccupancy(torch.nn.Module):
    """Trap 2: the sparse-structure decoder, run for its cost, answering a spherical shell.

    ``last_latent`` keeps the latent it was given, so tests compare the sparse-structure sampler's
    output too (the coordinates alone depend only on the shell).
    """

    def __init__(self, decoder: torch.nn.Module, radius: float = 0.4, half_thickness: float = 1.5):
        super().__init__()
        self.decoder, self.radius, self.half_thickness = decoder, radius, half_thickness
        self.last_latent: torch.Tensor | None = None

    @contextmanager
    def with_radius(self, radius: float) -> Iterator[None]:
        """Another shell radius (fraction of the grid) for the block.

        The cascade's high pass quantizes each 32³ voxel into at most (resolution / 512)³ cells, so
        a shell of n voxels has at most 27 n tokens at 1536: radius 0.2 (about 1.2 k voxels, at most
        31 k tokens) keeps ``1536_cascade`` under its 49,152-token limit, the default 0.4 (about 4.6 k)
        does not.
        """
        default, self.radius = self.radius, radius
        try:
            yield
        finally:
            self.radius = default

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.last_latent = z.detach().clone()
        logits = self.decoder(z)
        size = logits.shape[-1]
        axis = torch.arange(size, device=logits.device, dtype=torch.float32) - (size - 1) / 2
        r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
        shell = (r - self.radius * size).abs() < self.half_thickness
        return torch.where(shell, 1.0, -1.0).to(logits.dtype).expand_as(logits).contiguous()
