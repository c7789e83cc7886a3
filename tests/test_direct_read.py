"""Reading a checkpoint past the page cache into a model's tensors (``trellis_mv.pipeline.direct_read``).

Real files on this machine's disk, written by safetensors itself, read with ``O_DIRECT`` in pieces
small enough that tensors straddle them; what lands must be what safetensors' own ``load_file``
gives. The GPU path (pinned buffers, copies that overlap the next read) is tests/gpu/test_loading_gpu.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trellis_mv.pipeline.direct_read import entries, fill_direct, names
from trellis_mv.pipeline.loading import _fill
from trellis_mv.pipeline.prefetch import ALIGN, can_read_direct
from trellis_mv.safetensors_header import HeaderError


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tensors = {
        "blocks.0.weight": torch.randn(96, 80).to(torch.bfloat16),  # 15 360 bytes: straddles 8 KiB pieces
        "blocks.0.bias": torch.randn(80).to(torch.bfloat16),
        "norm.weight": torch.randn(333),  # float32, an odd length
        "embed.table": torch.randn(7, 3).to(torch.float16),
        "mask": torch.rand(50) > 0.5,
        "step": torch.tensor(7, dtype=torch.int64),  # a scalar
        "scales": torch.randn(40).to(torch.float8_e4m3fn),
        "counts": torch.arange(9, dtype=torch.int32),
        "unused.weight": torch.randn(1000),  # in the file, not in the model
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    if not can_read_direct(path):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    return path


def test_entries_are_the_headers_tensors_in_file_order(checkpoint):
    found = entries(checkpoint)
    assert {entry.name for entry in found} == set(load_file(str(checkpoint)))
    assert [entry.start for entry in found] == sorted(entry.start for entry in found)
    assert all(b.start >= a.end for a, b in zip(found, found[1:]))
    assert found[-1].end == checkpoint.stat().st_size


@pytest.mark.parametrize(("chunk", "reads"), [(ALIGN, 1), (ALIGN, 2), (ALIGN, 4), (2 * ALIGN, 2), (1 << 20, 2)])
def test_every_named_tensor_lands_as_safetensors_loads_it(checkpoint, chunk, reads):
    expected = load_file(str(checkpoint))
    targets = {name: torch.zeros_like(tensor) for name, tensor in expected.items() if name != "unused.weight"}
    targets["model.extra"] = torch.full((4,), 9.0)  # the model's, not in the file

    filled = fill_direct(checkpoint, targets, chunk=chunk, reads=reads)

    assert filled == set(expected) - {"unused.weight"}
    for name in filled:
        assert torch.equal(_bits(targets[name]), _bits(expected[name])), name
    assert torch.equal(targets["model.extra"], torch.full((4,), 9.0))


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    # torch.equal has no float8 kernel on the CPU; bytes compare every dtype bit for bit
    return tensor.contiguous().view(-1).view(torch.uint8)


def _write_by_hand(path: Path, tensors: dict[str, tuple[str, torch.Tensor]]) -> None:
    """A safetensors file of ``{name: (dtype name, tensor)}`` written from its format, for dtypes an older
    safetensors cannot save (the image's 0.6 has no complex64)."""
    header, data, offset = {}, b"", 0
    for name, (dtype, tensor) in tensors.items():
        raw = _bits(tensor).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_a_complex_buffer_lands_bit_for_bit(tmp_path):
    # trellis2's sparse structure flow keeps its rotary phases as a persistent complex64 buffer
    phases = torch.polar(torch.ones(64, 6), torch.randn(64, 6))
    weight = torch.randn(5, 3).to(torch.bfloat16)
    _write_by_hand(tmp_path / "flow.safetensors", {"weight": ("BF16", weight), "rope_phases": ("C64", phases)})
    if not can_read_direct(tmp_path / "flow.safetensors"):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    targets = {"rope_phases": torch.zeros(64, 6, dtype=torch.complex64), "weight": torch.zeros(5, 3, dtype=torch.bfloat16)}

    assert fill_direct(tmp_path / "flow.safetensors", targets, chunk=ALIGN) == {"rope_phases", "weight"}

    assert torch.equal(targets["rope_phases"], phases) and torch.equal(targets["weight"], weight)


def test_a_dtype_the_reader_does_not_know_is_refused_by_name_and_its_names_still_read(tmp_path):
    _write_by_hand(tmp_path / "model.safetensors", {"weight": ("F32", torch.ones(4)), "packed": ("F4", torch.ones(2))})

    with pytest.raises(ValueError, match=r"does not know: packed \(F4\)"):
        fill_direct(tmp_path / "model.safetensors", {"weight": torch.zeros(4)})
    assert names(tmp_path / "model.safetensors") == {"weight", "packed"}


def test_a_target_of_another_dtype_or_layout_is_converted_as_load_state_dict_converts(checkpoint):
    expected = load_file(str(checkpoint))
    wider = torch.zeros(96, 80, dtype=torch.float32)  # bf16 in the file
    transposed = torch.zeros(3, 7, dtype=torch.float16).t()  # not contiguous

    fill_direct(checkpoint, {"blocks.0.weight": wider, "embed.table": transposed}, chunk=ALIGN)

    assert torch.equal(wider, expected["blocks.0.weight"].float())
    assert torch.equal(transposed, expected["embed.table"])


def test_a_shape_that_differs_from_the_models_is_refused(checkpoint):
    with pytest.raises(RuntimeError, match="size mismatch for norm.weight"):
        fill_direct(checkpoint, {"norm.weight": torch.zeros(334)})


def test_a_file_shorter_than_its_header_says_is_refused_before_it_is_read(checkpoint):
    last = entries(checkpoint)[-1]
    data = checkpoint.read_bytes()
    short = len(data) - (last.end - last.start) // 2
    checkpoint.write_bytes(data[:short])
    with pytest.raises(HeaderError, match=f"model.safetensors is truncated \\({short} of {len(data)} bytes\\)"):
        fill_direct(checkpoint, {last.name: torch.zeros(last.shape, dtype=last.dtype)}, chunk=ALIGN)


def test_a_read_that_comes_back_short_is_an_error(checkpoint, monkeypatch):
    import os

    read = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, offset: read(fd, buffers, offset) // 2)
    last = entries(checkpoint)[-1]
    with pytest.raises(OSError, match="fewer than the header promises"):
        fill_direct(checkpoint, {last.name: torch.zeros(last.shape, dtype=last.dtype)}, chunk=ALIGN)


def test_the_loaders_fill_reads_past_the_page_cache_and_leaves_what_the_file_lacks(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
    model.register_buffer("scale", torch.ones(3))
    saved = {key: torch.full_like(value, 2.0) for key, value in model.state_dict().items() if key != "1.bias"}
    save_file(saved, str(tmp_path / "model.safetensors"))
    if not can_read_direct(tmp_path / "model.safetensors"):
        pytest.skip(f"{tmp_path} refuses O_DIRECT")

    bias = model[1].bias.clone()

    filled = _fill(model, tmp_path / "model", low_vram=False)

    assert filled is model and torch.equal(model[1].bias, bias)
    assert torch.equal(model[0].weight, torch.full((64, 64), 2.0)) and torch.equal(model.scale, torch.full((3,), 2.0))
    assert not model.training


def test_a_file_that_cannot_be_read_direct_is_filled_through_the_page_cache(tmp_path, monkeypatch):
    from trellis_mv.pipeline import loading

    model = torch.nn.Linear(8, 4)
    save_file({"weight": torch.full((4, 8), 3.0), "bias": torch.full((4,), 5.0)}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(loading, "can_read_direct", lambda path: False)
    monkeypatch.setattr(loading, "fill_direct", lambda path, targets: pytest.fail("read direct"))

    filled = _fill(model, tmp_path / "model", low_vram=False)

    assert torch.equal(filled.weight, torch.full((4, 8), 3.0)) and torch.equal(filled.bias, torch.full((4,), 5.0))


@pytest.mark.parametrize("error", [OSError(22, "Invalid argument"), ValueError("dtypes this reader does not know: x (F4)")])
def test_a_direct_read_that_fails_falls_back_to_the_page_cache(tmp_path, monkeypatch, caplog, error):
    from trellis_mv.pipeline import loading

    model = torch.nn.Linear(8, 4)
    save_file({"weight": torch.full((4, 8), 3.0), "bias": torch.full((4,), 5.0)}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(loading, "can_read_direct", lambda path: True)

    def refused(path, targets):
        raise error

    monkeypatch.setattr(loading, "fill_direct", refused)
    filled = _fill(model, tmp_path / "model", low_vram=False)

    assert torch.equal(filled.weight, torch.full((4, 8), 3.0)) and torch.equal(filled.bias, torch.full((4,), 5.0))
    assert f"not read past the page cache ({error})" in caplog.text
