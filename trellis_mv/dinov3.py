"""DINOv3 image conditioning for TRELLIS.2, read from a local folder and robust to transformers 5."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import StartupError

__all__ = ["DinoV3Conditioner"]


class DinoV3Conditioner:
    """Stands in for trellis2's ``DinoV3FeatureExtractor`` (same interface and numbers), robust to transformers 5.

    trellis2's ``extract_features`` walks ``model.layer``; transformers 5 moved the layers
    (``model.model.layer``), so it raises ``AttributeError``. Here the model runs its own
    ``forward`` and a forward hook on its last ``DINOv3ViTLayer`` takes that layer's output, which
    is what trellis2 normalises (``F.layer_norm`` without affine); the model's own final norm is
    not used. The checkpoint is read from a local folder only.
    """

    def __init__(self, model_dir: str, image_size: int = 512):
        from transformers import DINOv3ViTModel

        self.model = DINOv3ViTModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.image_size = image_size
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
        if isinstance(images, torch.Tensor):
            pixels = images
        else:
            arrays = [np.asarray(i.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS).convert("RGB"),
                                 dtype=np.float32) / 255 for i in images]
            pixels = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])
        pixels = pixels.to(self.model.device)  # where the pipeline put the encoder (the GPU in production)
        mean = torch.tensor([0.485, 0.456, 0.406], device=pixels.device)[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225], device=pixels.device)[:, None, None]
        pixels = (pixels - mean) / std
        captured: list[torch.Tensor] = []
        hook = self._last_layer.register_forward_hook(
            lambda module, args, output: captured.append(output[0] if isinstance(output, tuple) else output))
        try:
            self.model(pixel_values=pixels)
        finally:
            hook.remove()
        hidden = captured[-1]
        return F.layer_norm(hidden, hidden.shape[-1:])
