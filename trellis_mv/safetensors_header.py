"""A safetensors file's header, read and checked without torch.

safetensors' layout is 8 bytes of little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range (from the end of the header), then the bytes
(https://github.com/huggingface/safetensors, "Format"). The start-up checks read it to refuse an
incomplete download before the load begins (``startup.check_weights``), and the loader to place each
tensor's bytes (``pipeline.direct_read``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import first_line

__all__ = ["MAX_HEADER", "Header", "HeaderError", "read_header"]

MAX_HEADER = 100 * 2**20  # safetensors caps its JSON header at 100 MB


class HeaderError(ValueError):
    """A file that is not a whole safetensors file; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Header:
    """Where the tensors' bytes begin in the file, and its tensors: per name, a dict of ``dtype``,
    ``shape`` and ``data_offsets`` (from ``base``), as the file has them."""

    base: int
    tensors: dict[str, dict]


def read_header(path: Path) -> Header:
    """The header of the safetensors file ``path``, once it is known to be whole: a JSON object of
    tensors whose bytes all lie inside the file.

    Raises ``FileNotFoundError`` for a file that is not there, ``HeaderError`` for one that is not a
    whole safetensors file (a Git LFS pointer, a truncated download, a header that is not one), and
    ``OSError`` for one that cannot be read.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if head.startswith(b"version "):
            raise HeaderError(f"{path} is a Git LFS pointer, not the weights")
        if len(head) < 8:
            raise HeaderError(f"{path} has {size} bytes, too few for a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, MAX_HEADER):
            raise HeaderError(f"{path} has a header of {length} bytes in a file of {size}")
        try:
            tensors = json.loads(file.read(length))
        except ValueError as error:
            raise HeaderError(f"{path} has an unreadable header ({first_line(error)})") from None
    try:
        tensors.pop("__metadata__", None)
        end = max((entry["data_offsets"][1] for entry in tensors.values()), default=0)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise HeaderError(f"{path} has a malformed header") from None
    if 8 + length + end > size:
        raise HeaderError(f"{path} is truncated ({size} of {8 + length + end} bytes)")
    return Header(8 + length, tensors)
