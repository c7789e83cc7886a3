"""What FlexGEMM, the sparse-convolution backend of TRELLIS.2's decoders, already knows about this GPU.

FlexGEMM autotunes its Triton kernels per GPU name and per shape bucket (``log2`` of the voxel
count, channels, kernel volume) on first use, and keeps the results in a JSON file read once at
import (``FLEX_GEMM_AUTOTUNE_CACHE_PATH``; entries under ``torch.cuda.get_device_name()``).
Only the VAE decoders call it (``trellis2.modules.sparse.conv``; the flows have no sparse
convolution), so the number of views never changes what is tuned.
"""

from __future__ import annotations

__all__ = ["flexgemm_entries"]


def flexgemm_entries() -> int:
    """How many autotune results FlexGEMM holds for the GPU at hand (0: every new shape is tuned on first use)."""
    from flex_gemm.utils import get_autotune_cache

    return sum(len(results) for kernels in get_autotune_cache().values() for results in kernels.values())
