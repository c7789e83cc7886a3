"""What a loaded pipeline runs once before its first job, so that no job is a first one.

A fresh process pays on its first launch of every kernel (module loading, cuDNN and cuBLAS set-up,
Triton compiles) and on its first use of each model: on the H200, a fresh worker's first default
job took 34.4 s more than its second, and warming up by running whole jobs (1024_cascade and 512,
twelve steps per stage) took 41 s. Kernels are per shape, not per step, so one step of each flow
on a latent of a typical object's size does the same for the flows; the decoders' Triton kernels
are compiled by ``kernels`` while the weights load. What is left is here:

- :func:`warm_encoders`: the background remover and DINOv3 at both resolutions, once each, as soon
  as they are loaded (the loader's encoders thread, while the flows still load): the first launches
  of cuDNN and cuBLAS, whose libraries are read from disk then, need no other model;
- :func:`warm_flows`: one sampling step of the structure flow (and its decoder) and of each of the
  four structured-latent flows (shape and texture, 512 and 1024) on spherical shells of typical
  token counts, guidance included where the stage has it (every pipeline type runs a subset of
  these), each as soon as its model is loaded (the loader's encoders thread, while the later flows
  still load): their first launches need no other model;
- :func:`warm_stages`: after the load, where the load could not run those (low-VRAM mode: the
  models wait on the CPU): background removal and DINOv3 at both resolutions on a photo, then
  :func:`warm_flows` on the loaded pipeline, in the mode it was loaded in;
- :func:`warm_decoders`: the shape decoder's upsampling (the cascades) and ``decode_latent`` on the
  512 latents the flows' steps made, as a 512 job decodes them: the decoders' kernels besides FlexGEMM's
  (and the mesh extraction); on a GPU without FlexGEMM entries of ours, first the autotuning of
  the shape keys a typical object meets (``TYPICAL_LOG_TOKENS``);
- :func:`warmup_mesh`: a small textured sphere in the shape ``decode_latent`` returns, for the
  export's warm-up (``trellis_mv.warmup``), which needs no loaded model and runs during the load.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..dinov3 import pixels
from ..generator import GenerationRequest, StageOptions
from ..gpu_random import RANDOM_OR_CAPTURE
from ..timing import timed
from . import stages
from .offload import on_gpu
from .preprocess import preprocess_views

__all__ = ["CONDITIONING_SIZES", "PBR_LAYOUT", "SHELLS", "TYPICAL_LOG_TOKENS", "shell_coords", "warm_decoders",
           "warm_encoders", "warm_flows", "warm_stages", "warmup_mesh", "warmup_view"]

# (grid, tokens) of the latents the flows see: a typical object at 32³ (the 512 flows) and at 64³
# (the 1024 flows); tests/gpu's random-weight shell has 4.6 k and 19.5 k.
SHELLS = {512: (32, 4_600), 1024: (64, 19_500)}
# log2 of the voxels a typical object's decoded latent holds: 4.6 k at 32³ to 19.5 k at 64³, one bucket more.
TYPICAL_LOG_TOKENS = (12, 15)
_ONE_STEP = StageOptions(steps=1)
# the sides DINOv3 encodes a view at: the 512 flows' conditioning and the 1024 flows'
CONDITIONING_SIZES = (512, 1024)
# trellis2's ``pbr_attr_layout`` (``Trellis2ImageTo3DPipeline.__init__``): the decoded attribute channels.
PBR_LAYOUT = {"base_color": slice(0, 3), "metallic": slice(3, 4), "roughness": slice(4, 5), "alpha": slice(5, 6)}


def shell_coords(grid: int, tokens: int, device: Any = "cpu") -> torch.Tensor:
    """``[N, 4]`` int32 coordinates (batch 0) of a spherical shell of about ``tokens`` voxels in a ``grid``³ cube."""
    radius = 0.4 * grid
    thickness = tokens / (4 * math.pi * radius**2)
    axis = torch.arange(grid, dtype=torch.float32) - (grid - 1) / 2
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    cells = torch.argwhere((r - radius).abs() < thickness / 2).int()
    return torch.cat([torch.zeros_like(cells[:, :1]), cells], dim=1).to(device)


def warmup_view(size: int = 512) -> Image.Image:
    """A photo stand-in without alpha (so background removal runs): a shaded disc on a light background."""
    axis = np.linspace(-1.0, 1.0, size)
    xs, ys = np.meshgrid(axis, axis)
    radius = np.hypot(xs, ys)
    shade = np.clip(1.0 - 0.5 * (xs + ys + 1.0) / 2.0, 0.3, 1.0)
    disc = radius < 0.6
    rgb = np.full((size, size, 3), 235.0)
    rgb[disc] = np.array([190.0, 110.0, 50.0]) * shade[disc][:, None]
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def warm_encoders(encoder: Any, remover: Any, photo: Image.Image) -> dict[str, float]:
    """The background remover on ``photo`` and DINOv3 on it at each of ``CONDITIONING_SIZES``, once; seconds per part.

    A one-view job's shapes (the remover works at its own fixed size), so a job finds their kernels
    launched, their libraries read and their GPU memory allocated. No random numbers: it may run
    beside a CUDA graph capture on another thread.
    """
    seconds: dict[str, float] = {}
    with torch.no_grad():
        with timed(seconds, "background"):
            remover(photo.convert("RGB"))
        with timed(seconds, "dinov3"):
            for size in CONDITIONING_SIZES:
                encoder(pixels(photo, size)[None])
    return seconds


def warm_flows(pipe: Any, photo: Image.Image, max_batch: int | None = None) -> tuple[dict[str, float], dict[int, Any]]:
    """One step of each flow ``pipe.models`` has, conditioned on DINOv3's encoding of ``photo``; seconds
    per part, and the shape and texture latents sampled per resolution.

    The order is the one TRELLIS.2's ``pipeline.json`` loads them in: the structure flow and its
    decoder, the shape flows, the texture flows (each texture step takes its resolution's shape
    latent). ``pipe.models`` may be a mapping whose lookups wait for a model's weights (the loader's,
    during the load): each step then runs as soon as its model is there. Random numbers and their
    kernels only inside :data:`RANDOM_OR_CAPTURE`, never while waiting for a model.
    """
    request = GenerationRequest(images=(photo,), seed=0, sparse_structure=_ONE_STEP, shape_slat=_ONE_STEP,
                                tex_slat=_ONE_STEP)
    sampler = stages.StageSampler(pipe, request, None, max_batch)
    models, seconds = pipe.models, {}
    shapes, latents = {}, {}
    with torch.no_grad():
        with timed(seconds, "conditioning"):
            conds = stages.conditions(pipe, [photo.convert("RGB")], CONDITIONING_SIZES)
        if "sparse_structure_flow_model" in models and "sparse_structure_decoder" in models:
            with RANDOM_OR_CAPTURE, timed(seconds, "sparse_structure"):
                stages.sparse_structure(sampler, conds[512], 32)
        for resolution, (grid, tokens) in SHELLS.items():
            if (flow := f"shape_slat_flow_model_{resolution}") in models:
                coords = shell_coords(grid, tokens, pipe.device)
                with RANDOM_OR_CAPTURE, timed(seconds, f"shape_{resolution}"):
                    shapes[resolution] = stages.shape(sampler, conds[resolution], models[flow], coords, (0, 1))
        for resolution, shape in shapes.items():
            if (flow := f"tex_slat_flow_model_{resolution}") in models:
                with RANDOM_OR_CAPTURE, timed(seconds, f"texture_{resolution}"):
                    latents[resolution] = shape, stages.texture(sampler, conds[resolution], models[flow], shape)
    return seconds, latents


def warm_stages(generator: Any, photo: Image.Image) -> tuple[dict[str, float], tuple[Any, Any]]:
    """Background removal and DINOv3 on ``photo`` as a job runs them, then :func:`warm_flows`; seconds per
    part, and the shape and texture latents sampled at 512 (for :func:`warm_decoders`).

    ``generator`` is a ``TrellisGenerator``; the 1024 flows are left out where it has not loaded them.
    Where its load ran every model once already (``generator.warmed_latents``), nothing runs again:
    the steps are real computing (the 1024 shape flow's took 0.7 s of the H200's warm-ups with the
    weights in the page cache).
    """
    if generator.warmed_latents is not None:
        return {}, generator.warmed_latents
    pipe = generator.pipeline
    seconds: dict[str, float] = {}
    with torch.no_grad(), timed(seconds, "preprocess"):
        view = preprocess_views(pipe, (photo,), None)[0]
    flows, latents = warm_flows(pipe, view, generator.max_batch)
    return {**seconds, **flows}, latents[512]


def warm_decoders(generator: Any, latents: tuple[Any, Any], *, tune: bool = False) -> dict[str, float]:
    """The cascade's upsampling of the shape latent and ``decode_latent`` of ``latents`` at 512; seconds per part.

    ``latents`` are :func:`warm_stages`' 512 shape and texture latents. With ``tune``, first every
    convolution shape of the decoders at the buckets of ``TYPICAL_LOG_TOKENS``
    (``kernels.tuning_probes``): FlexGEMM tunes each key on its first run.
    """
    from .kernels import run_probes, tuning_probes

    pipe, decoder = generator.pipeline, generator.pipeline.models["shape_slat_decoder"]
    shape, texture = latents
    seconds: dict[str, float] = {}
    if tune:
        with timed(seconds, "tune"):
            run_probes(tuning_probes(decoder, TYPICAL_LOG_TOKENS))
    with torch.no_grad():
        with timed(seconds, "upsample"), on_gpu(pipe, decoder, low_vram_attr=True):
            decoder.upsample(shape, upsample_times=4)
        with timed(seconds, "decode"):
            pipe.decode_latent(shape, texture, 512)
    return seconds


def warmup_mesh(device: Any = "cuda", resolution: int = 512, radius: float = 0.2) -> Any:
    """A sphere of ``radius`` as trellis2's ``MeshWithVoxel``, its attribute voxels a shell at ``resolution``.

    What ``decode_latent`` returns, at a fixed small size: the export it goes through launches the
    kernels a job's export does (CuMesh, our rasterizer's Triton kernels, FlexGEMM's ``grid_sample_3d``).
    """
    import trimesh
    from trellis2.representations import MeshWithVoxel

    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    axis = (torch.arange(resolution, dtype=torch.float32, device=device) + 0.5) / resolution - 0.5
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).sqrt()
    coords = torch.argwhere((r - radius).abs() < 1.5 / resolution).int()
    channels = max(part.stop for part in PBR_LAYOUT.values())
    return MeshWithVoxel(
        torch.from_numpy(sphere.vertices).float().to(device), torch.from_numpy(sphere.faces).int().to(device),
        origin=[-0.5, -0.5, -0.5], voxel_size=1 / resolution, coords=coords,
        attrs=torch.full((coords.shape[0], channels), 0.5, device=device),
        voxel_shape=torch.Size([1, channels, resolution, resolution, resolution]), layout=dict(PBR_LAYOUT),
    )
