"""DINOv3 image conditioning for TRELLIS.2, read from a local folder and robust to transformers 5."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import StartupError

__all__ = ["DinoV3Conditioner", "pixels"]


class DinoV3Conditioner:
    """Stands in for trellis2's ``DinoV3FeatureExtractor`` (same interface and numbers), robust to transformers 5.

    trellis2's ``extract_features`` walks ``model.layer``; transformers 5 moved the layers
    (``model.model.layer``), so it raises ``AttributeError``. Here the model runs its own
    ``forward`` and a forward hook on its last ``DINOv3ViTLayer`` takes that layer's output, which
    is what trellis2 normalises (``F.layer_norm`` without affine); the model's own final norm is
    not used. The checkpoint is read from a local folder only.

    On CUDA its matrix products run in TF32 (fp32 range, 10-bit mantissa, fp32 sums) and its attention
    in fp16 (the same 10-bit mantissa, fp32 sums inside the fused kernel): 4 views at two resolutions
    cost 0.39 s of a 13 s job in fp32 on the H200, 0.34 s with TF32 products alone (the attention of
    4096 tokens at 1024² ran in fp32 without tensor cores), what kept ``stochastic`` above 1.02x one
    view. The flows round the tokens to bf16 (8-bit mantissa) before they use them, so the error lands
    below that rounding (tests/gpu/test_encoders.py records it); trellis2's ``pipeline.run`` calls this
    conditioner too, so it gets the same tokens. ``tf32=False`` gives trellis2's fp32 numbers.
    """

    def __init__(self, model_dir: str, image_size: int = 512, *, tf32: bool = True):
        from transformers import AttentionInterface, DINOv3ViTModel

        AttentionInterface.register(_REDUCED_SDPA, _reduced_sdpa)
        self.model = DINOv3ViTModel.from_pretrained(model_dir, local_files_only=True, attn_implementation=_REDUCED_SDPA).eval()
        self.image_size, self.tf32 = image_size, tf32
        layers = [m for m in self.model.modules() if type(m).__name__ == "DINOv3ViTLayer"]
        if not layers:
            raise StartupError(f"{model_dir}: no DINOv3ViTLayer in this DINOv3 checkpoint")
        self._last_layer = layers[-1]

    def to(self, device: Any) -> None:
        """Move the encoder."""
        self.model.to(device)

    def cuda(self) -> None:
        """Move the encoder to the current CUDA device."""
        self.model.cuda()

    def cpu(self) -> None:
        """Move the encoder to the CPU."""
        self.model.cpu()

    @torch.no_grad()
    def __call__(self, images: list[Image.Image] | torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, 1 + registers + patches, 1024]`` for PIL images (resized) or a ``[B, 3, H, W]`` batch."""
        batch = images if isinstance(images, torch.Tensor) else torch.stack([pixels(i, self.image_size) for i in images])
        batch = batch.to(self.model.device)  # where the pipeline put the encoder (the GPU in production)
        mean = torch.tensor([0.485, 0.456, 0.406], device=batch.device)[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225], device=batch.device)[:, None, None]
        batch = (batch - mean) / std
        captured: list[torch.Tensor] = []
        hook = self._last_layer.register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            with _tf32_matmuls(self.tf32 and batch.is_cuda):
                self.model(pixel_values=batch)
        finally:
            hook.remove()
        hidden = captured[-1]
        return F.layer_norm(hidden, hidden.shape[-1:])


def pixels(image: Image.Image, size: int) -> torch.Tensor:
    """trellis2's encoder input for one image: LANCZOS to ``size``², RGB, ``[3, size, size]`` in [0, 1] (CPU)."""
    array = np.asarray(image.resize((size, size), Image.Resampling.LANCZOS).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1)


# transformers' name for :func:`_reduced_sdpa` (its AttentionInterface: a model picks one by name)
_REDUCED_SDPA = "trellis_mv_reduced_sdpa"


def _reduced_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                  **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention, in fp16 where float32 products may be reduced (``_tf32_matmuls``, on CUDA).

    fp16 keeps TF32's 10-bit mantissa, and fused attention kernels (flash, cuDNN) take it on tensor
    cores with fp32 sums; float32 attention falls back to kernels without them. Elsewhere, fp32.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not (query.is_cuda and query.dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"):
        return sdpa_attention_forward(module, query, key, value, *args, **kwargs)
    output, weights = sdpa_attention_forward(module, query.half(), key.half(), value.half(), *args, **kwargs)
    return output.float(), weights


@contextmanager
def _tf32_matmuls(enabled: bool) -> Iterator[None]:
    """Float32 matrix products in TF32 for the block (``set_float32_matmul_precision("high")``), then as before."""
    if not enabled:
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
