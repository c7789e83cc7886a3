"""Small builders shared by the tests: encoded images and crafted files."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, image_format: str = "PNG", **options) -> bytes:
    """``image`` saved in ``image_format``."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png(size=(16, 16), colour=(200, 40, 40, 255)) -> bytes:
    """A one-colour PNG, RGBA or RGB by the length of ``colour``."""
    return encode(Image.new("RGBA" if len(colour) == 4 else "RGB", size, colour), "PNG")


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def png_b64(size=(16, 16), colour=(200, 40, 40, 255)) -> str:
    """A one-colour PNG as base64: the smallest valid view."""
    return b64(png(size, colour))


def noise(size=(32, 32), mode="RGB", seed=0) -> Image.Image:
    """Random pixels: encodes to base64 with every character of the alphabet, '+' and '/' included."""
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data is garbage.

    Refusing it with a size message proves the size was checked before any pixel was decoded.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"not zlib data") + chunk(b"IEND", b"")


def read_glb(data: bytes, folder) -> dict:
    """What a viewer finds in GLB bytes (``tests/gltf_read.mjs``: glTF-Transform, Draco decoded)."""
    import json
    import subprocess
    import uuid
    from pathlib import Path

    path = Path(folder) / f"{uuid.uuid4().hex}.glb"
    path.write_bytes(data)
    script = Path(__file__).resolve().parent / "gltf_read.mjs"
    done = subprocess.run(["node", str(script), str(path)], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)
