"""Helpers shared by the GPU tests and the benchmarks: views, loading, the generator hook, low-VRAM switching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

_REGISTERED: list = []


def rgba_view(seed: int, size: int = 384) -> Image.Image:
    """An RGBA photo stand-in: a noisy coloured blob on a transparent background (a real alpha channel)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    radius = 0.55 + 0.1 * np.sin(3 * np.arctan2(ys, xs) + seed)
    alpha = ((xs ** 2 + ys ** 2) ** 0.5 < radius).astype(np.uint8) * 255
    rgb = (rng.integers(0, 256, (size, size, 3)) * 0.3 + np.array([200, 120, 40]) * 0.7).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def load_shell_pipeline(model_dir: Path, background_model: Path, head=None):
    """``load_pipeline`` (resident) on random weights, its sparse-structure decoder answering a shell (Trap 2);
    with it, the latents of the flows' warm-up during the load (``TrellisGenerator``'s ``warmed_latents``).
    ``head``: a head start (``trellis_mv.headstart.begin``) whose reads and imports the load waits for, as the worker's."""
    from random_weights import ShellOccupancy

    from trellis_mv.config import Settings
    from trellis_mv.pipeline import load_pipeline

    waits = {} if head is None else {"wait_read": head.wait_read, "wait_imported": head.wait_imported}
    pipeline, warmed = load_pipeline(Settings(model_dir=str(model_dir), background_model=str(background_model),
                                              low_vram="off"), **waits)
    pipeline.models["sparse_structure_decoder"] = ShellOccupancy(pipeline.models["sparse_structure_decoder"])
    return pipeline, warmed


def register(generator) -> None:
    """Make ``generator`` what ``registered_generator`` answers (the handler's TRELLIS_MV_GENERATOR hook)."""
    _REGISTERED[:] = [generator]


def registered_generator(settings):
    """``TRELLIS_MV_GENERATOR="harness:registered_generator"``: the already loaded test generator."""
    return _REGISTERED[0]


def set_low_vram(pipeline, on: bool) -> None:
    """Switch a loaded pipeline between resident and low-VRAM, as ``load_pipeline`` would have built it."""
    import torch

    pipeline.low_vram = on
    parts = [*pipeline.models.values(), pipeline.image_cond_model, pipeline.rembg_model]
    for part in parts:
        part.to("cpu" if on else "cuda")
    torch.cuda.empty_cache()


def flexgemm_entries() -> int:
    """How many autotune results FlexGEMM holds for the GPU at hand (0: every new shape is tuned on first use).

    Entries are kept per GPU name and per shape bucket; only TRELLIS.2's VAE decoders run FlexGEMM.
    """
    from flex_gemm.utils import get_autotune_cache

    return sum(len(results) for kernels in get_autotune_cache().values() for results in kernels.values())
