"""A safetensors file's header, read without torch (``trellis_mv.safetensors_header``): what the
start-up checks and the loader's reader refuse, and what they are given."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from trellis_mv.safetensors_header import MAX_HEADER, HeaderError, read_header


def _file(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def test_a_file_safetensors_wrote_is_read_without_its_metadata(tmp_path):
    save_file({"b": torch.zeros(3), "a": torch.ones(2, 2, dtype=torch.float16)}, str(tmp_path / "m.safetensors"),
              metadata={"format": "pt"})
    header = read_header(tmp_path / "m.safetensors")
    assert set(header.tensors) == {"a", "b"}
    assert header.tensors["a"]["dtype"] == "F16" and header.tensors["a"]["shape"] == [2, 2]
    ends = sorted(entry["data_offsets"][1] for entry in header.tensors.values())
    assert header.base + ends[-1] == (tmp_path / "m.safetensors").stat().st_size


@pytest.mark.parametrize(("write", "said"), [
    (lambda path: path.write_text("version https://git-lfs.github.com/spec/v1\n"), "is a Git LFS pointer, not the weights"),
    (lambda path: path.write_bytes(b"\x01\x02"), "has 2 bytes, too few for a safetensors file"),
    (lambda path: _file(path, {}, length=MAX_HEADER + 1), f"has a header of {MAX_HEADER + 1} bytes in a file of 10"),
    (lambda path: path.write_bytes(struct.pack("<Q", 4) + b"{no}"), "has an unreadable header (Expecting property name"),
    (lambda path: _file(path, ["a", "list"]), "has a malformed header"),
    (lambda path: _file(path, {"w": {"dtype": "F32", "shape": [2]}}), "has a malformed header"),
    (lambda path: _file(path, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)),
     "is truncated (78 of 86 bytes)"),  # 8 + 62 bytes of header + 8 of the 16 it promises
])
def test_a_file_that_is_not_a_whole_safetensors_file_is_refused_by_name(tmp_path, write, said):
    path = tmp_path / "model.safetensors"
    write(path)
    with pytest.raises(HeaderError) as refused:
        read_header(path)
    assert str(refused.value).startswith(f"{path} {said}")


def test_a_missing_file_is_not_a_header_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "gone.safetensors")
