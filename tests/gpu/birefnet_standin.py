"""A random stand-in for BiRefNet, packaged like the real one: Hugging Face remote code + weights.

The real BiRefNet/RMBG-2.0 snapshots ship ``config.json`` with an ``auto_map`` to their own
``birefnet.py``, whose Swin backbone calls ``.item()`` on a ``torch.linspace`` while it is built —
the call that fails under transformers 5's meta-device init. This stand-in does the same in its
``__init__`` and answers BiRefNet's output shape (a list whose last item is ``[B, 1, H, W]``
logits at the input size); its mask is a centred disk plus a little learned noise, so cropping
sees a plausible object. It proves :func:`trellis_mv.background.load_background_remover` on the
failure's cause, not on BiRefNet's quality.

``ballast`` float32 parameters, unused by ``forward``, give its checkpoint BiRefNet's size where a
start's reads are measured (benchmarks/cold_start.py: ``BIREFNET_FLOATS``, the real
``model.safetensors``' 0.88 GB); its compute stays the stand-in's.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REMOTE_CODE = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class StandInConfig(PretrainedConfig):
    model_type = "birefnet_standin"

    def __init__(self, bb_pretrained=False, ballast=0, **kwargs):
        self.bb_pretrained, self.ballast = bb_pretrained, ballast
        super().__init__(**kwargs)


class StandInBiRefNet(PreTrainedModel):
    config_class = StandInConfig

    def __init__(self, bb_pretrained=True, config=StandInConfig()):
        super().__init__(config)
        # As Swin's stochastic depth in BiRefNet: a data-dependent .item() during construction.
        self.drop_rates = [x.item() for x in torch.linspace(0, 0.1, 4)]
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
        if config.ballast:
            self.ballast = torch.nn.Parameter(torch.zeros(config.ballast))

    def forward(self, x):
        h, w = x.shape[-2:]
        ys = torch.linspace(-1, 1, h, device=x.device)[:, None]
        xs = torch.linspace(-1, 1, w, device=x.device)[None, :]
        disk = 12 * (0.6 - (xs ** 2 + ys ** 2).sqrt())
        logits = disk.to(x.dtype)[None, None] + 0.1 * self.conv(x)
        return [logits[..., ::4, ::4], logits]
'''


# BiRefNet's (and RMBG-2.0's) model.safetensors: 0.88 GB of float32 parameters
BIREFNET_FLOATS = 221_000_000


def write_standin(folder: Path, *, ballast: int = 0) -> None:
    """Write ``config.json``, ``birefnet_standin.py`` and ``model.safetensors`` into ``folder``, the
    checkpoint ``ballast`` float32 values larger (``BIREFNET_FLOATS``: the real one's size)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "birefnet_standin.py").write_text(REMOTE_CODE)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "birefnet_standin",
        "architectures": ["StandInBiRefNet"],
        "auto_map": {"AutoConfig": "birefnet_standin.StandInConfig",
                     "AutoModelForImageSegmentation": "birefnet_standin.StandInBiRefNet"},
        "bb_pretrained": False,
        "ballast": ballast,
    }, indent=1))
    spec = importlib.util.spec_from_file_location("_birefnet_standin_writer", folder / "birefnet_standin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    model = module.StandInBiRefNet(config=module.StandInConfig(ballast=ballast))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
