"""The loader's own build and fill give trellis2's model: every tensor equal, computed ones included.

``trellis_mv.pipeline.loading`` builds each model without the random initialisation its checkpoint
overwrites and fills it on another thread, reading the checkpoint past the page cache where the
file system allows it (``direct_read``: pinned buffers, copies to the GPU beside the next read); a
model built that way from a full checkpoint must be the model ``trellis2.models.from_pretrained``
gives, bit for bit: parameters, buffers, and the plain tensors modules compute in ``__init__`` (the
rotary embeddings' frequencies).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from random_weights import DECODERS, FLOWS, configs_dir


@pytest.mark.parametrize("checkpoint", ["ss_flow_img_dit_1_3B_64_bf16", "shape_dec_next_dc_f16c32_fp16"])
def test_a_model_built_without_random_init_and_filled_is_trellis2s(tmp_path: Path, checkpoint: str, record):
    from safetensors.torch import save_file
    from trellis2 import models

    from trellis_mv.pipeline.loading import _build, _fill, _lacking
    from trellis_mv.pipeline.prefetch import can_read_direct

    config_file, key = {**FLOWS, **DECODERS}[checkpoint]
    spec = json.loads((configs_dir() / config_file).read_text())["models"][key]
    prefix = tmp_path / checkpoint
    torch.manual_seed(0)
    with torch.device("cuda"):
        written = getattr(models, spec["name"])(**spec["args"])
    Path(f"{prefix}.json").write_text(json.dumps({"name": spec["name"], "args": spec["args"]}))
    save_file({k: v.contiguous().cpu() for k, v in written.state_dict().items()}, f"{prefix}.safetensors")
    del written

    with torch.device("cuda"):
        theirs = models.from_pretrained(str(prefix))
    built = _build(models, prefix, random_init=False)
    unfilled = _lacking(built, Path(f"{prefix}.safetensors"))
    ours = _fill(built, prefix, low_vram=False)
    record(f"loading_{checkpoint}_read_past_the_page_cache", can_read_direct(Path(f"{prefix}.safetensors")))

    assert unfilled == []
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    different = [name for name in theirs_state if not torch.equal(theirs_state[name], ours_state[name])]
    plain = [(name, attribute) for (name, module), (_, other) in zip(theirs.named_modules(), ours.named_modules())
             for attribute, value in vars(module).items()
             if isinstance(value, torch.Tensor) and not torch.equal(value, getattr(other, attribute))]
    record(f"loading_{checkpoint}_tensors", len(theirs_state))
    record(f"loading_{checkpoint}_different", len(different) + len(plain))
    assert different == [] and plain == []
