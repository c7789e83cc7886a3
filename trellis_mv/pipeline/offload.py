"""Low-VRAM mode: which models stay on the GPU, and holding one there for a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["RESIDENT_MIN_FREE_GIB", "choose_low_vram", "on_gpu"]

# Resident mode keeps every model on the GPU. Measured on an H100 (BENCHMARKS.md): weights about
# 15.5 GiB resident (five 1.3 B bf16 flows, two fp16 decoders, DINOv3), 1024_cascade with 4 views in
# multidiffusion peaks at 19.5 GiB, and o_voxel's export of a cascade mesh takes up to 7.6 GiB
# while the weights stay put; BiRefNet adds about 1 GiB and 8 views a few more. Below this much free
# memory, models wait on the CPU and visit the GPU per stage (1024_cascade, 4 views: 6.6 GiB peak).
RESIDENT_MIN_FREE_GIB = 36.0


def choose_low_vram(setting: str) -> bool:
    """``TRELLIS_MV_LOW_VRAM``: on, off, or by the free GPU memory (``auto``)."""
    if setting != "auto":
        return setting == "on"
    free, _total = torch.cuda.mem_get_info()
    return free / 2**30 < RESIDENT_MIN_FREE_GIB


@contextmanager
def on_gpu(pipe: Any, module: Any, *, low_vram_attr: bool = False) -> Iterator[None]:
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
