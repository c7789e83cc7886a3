"""Background removal: BiRefNet (MIT) by default, RMBG-2.0 only when configured.

TRELLIS.2's ``pipeline.json`` names ``briaai/RMBG-2.0`` (gated, non-commercial licence); the worker
loads whatever ``Settings.background_model`` points to, ``/models/BiRefNet`` unless configured.

Both models are Hugging Face *remote code* (``birefnet.py`` next to the weights). Under
transformers 5, ``AutoModelForImageSegmentation.from_pretrained`` always builds the model on the
meta device, and their Swin backbone calls ``.item()`` on a freshly made ``torch.linspace`` while
it is being built: "Tensor.item() cannot be called on meta tensors" (transformers#43957,
TRELLIS.2#101). :func:`load_background_remover` therefore builds the model itself: the remote
class comes from ``get_class_from_dynamic_module`` (local files only), is constructed on the CPU
with real tensors, and the checkpoint is loaded so that any parameter it lacks fails at start-up
instead of staying random (buffers the checkpoint may leave out, such as Swin's relative position
indices, are rebuilt by the constructor). That works the same under
transformers 4.x and 5.x, and needs no version pin.

The remover is a callable with ``to``/``cpu``, like trellis2's ``rembg.BiRefNet``: RGB in, RGBA
out (alpha = predicted mask, resized to the input). The pipeline skips it when a view has a real
alpha channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import StartupError

__all__ = ["BackgroundRemover", "load_background_remover"]

_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_AUTO_CLASS = "AutoModelForImageSegmentation"


class BackgroundRemover:
    """Predicts a foreground mask with a BiRefNet-style model: ``model(x)[-1]`` is ``[B, 1, H, W]`` logits.

    Pre- and post-processing are trellis2's ``rembg.BiRefNet``: resize to ``size``² (bilinear),
    ImageNet normalisation, sigmoid, mask resized back to the image.
    """

    def __init__(self, model: torch.nn.Module, *, size: int = 1024):
        self.model = model.eval()
        self.size = size

    def to(self, device: Any) -> None:
        """Move the model (the pipeline's low-VRAM mode moves it in and out per job)."""
        self.model.to(device)

    def cuda(self) -> None:
        """Move the model to the current CUDA device."""
        self.model.cuda()

    def cpu(self) -> None:
        """Move the model to the CPU."""
        self.model.cpu()

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> Image.Image:
        """Return ``image`` as RGBA whose alpha is the predicted foreground mask."""
        rgb = image.convert("RGB")
        resized = np.asarray(rgb.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.float32) / 255
        pixels = torch.from_numpy(((resized - _MEAN) / _STD).transpose(2, 0, 1).copy())[None]
        weight = next(self.model.parameters())
        logits = self.model(pixels.to(weight.device, weight.dtype))[-1]
        mask = (logits[0, 0].float().sigmoid().cpu() * 255).to(torch.uint8).numpy()
        rgba = rgb.copy()
        rgba.putalpha(Image.fromarray(mask, "L").resize(rgb.size))
        return rgba


def load_background_remover(path: str) -> BackgroundRemover:
    """Load a BiRefNet or RMBG-2.0 checkpoint from the local folder ``path`` (no network).

    Raises ``StartupError`` naming the folder when it is missing, has no remote-code mapping for
    ``AutoModelForImageSegmentation``, or its weights do not match the model.
    """
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise StartupError(f"TRELLIS_MV_BACKGROUND_MODEL: {path} has no config.json (expected a BiRefNet snapshot)")
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True, local_files_only=True)
    reference = (getattr(config, "auto_map", None) or {}).get(_AUTO_CLASS)
    if reference is None:
        raise StartupError(f"TRELLIS_MV_BACKGROUND_MODEL: {path}/config.json maps no {_AUTO_CLASS} class")
    model_class = get_class_from_dynamic_module(reference, str(folder), local_files_only=True)
    # Built here, outside transformers' meta-device context: init-time .item() calls see real tensors.
    model = model_class(config=config)
    try:
        missing, unexpected = model.load_state_dict(_read_weights(folder), strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape; torch lists one per line, after a heading
        details = "; ".join(line.strip() for line in str(error).splitlines()[1:]) or str(error)
        raise StartupError(f"TRELLIS_MV_BACKGROUND_MODEL: weights in {path} do not fit {reference}: {details}") from error
    parameters = {name for name, _ in model.named_parameters()}
    missing_parameters = [name for name in missing if name in parameters]
    if missing_parameters or unexpected:
        raise StartupError(
            f"TRELLIS_MV_BACKGROUND_MODEL: weights in {path} do not fit {reference}: "
            f"missing {missing_parameters[:5]}, unexpected {unexpected[:5]}"
        )
    return BackgroundRemover(model.float())


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_file = folder / "model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    bin_file = folder / "pytorch_model.bin"
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise StartupError(f"TRELLIS_MV_BACKGROUND_MODEL: {folder} has neither model.safetensors nor pytorch_model.bin")
