"""Job images: base64 strings, data URIs and https URLs, turned into checked PIL images.

The work is split so that every cheap check runs while the request is validated, and all of a
request's mistakes come back in one answer:

- ``parse_source`` (called by the schema): decodes base64 and data URIs and reads only the image
  header — format and size — so a decompression bomb is refused before any pixel is decoded. URLs are
  checked for form and kept as URLs.
- ``load_all`` (step 2 of a job): downloads URLs with runpod's SSRF-safe ``rp_ssrf.safe_get`` (only
  public addresses, every redirect re-checked, size and time capped), checks their header the same
  way, decodes the pixels, applies the EXIF orientation, and keeps alpha only when it is real.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence
from urllib.parse import unquote, urlsplit

import numpy as np
import requests
from PIL import Image, ImageOps

from .config import Settings
from .errors import UserError

__all__ = [
    "FORMATS",
    "EncodedImage",
    "ImageError",
    "ImageUrl",
    "Source",
    "decode_base64",
    "fetch",
    "inspect_image",
    "load",
    "load_all",
    "parse_source",
]

FORMATS = ("PNG", "JPEG", "WEBP")
MAX_URL_LENGTH = 2048
_SEND = "send base64, a data: URI or an https:// URL"
_NOT_AN_IMAGE = "not a PNG, JPEG or WebP image"
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DATA_URI = re.compile(r"data:(?P<type>[^,;]*)(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.S | re.I)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
# Image decoders raise all of these on damaged data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_GREY_16_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """One image is unusable; the message is for the client, and the caller prefixes ``images[i]``."""


@dataclass(frozen=True)
class EncodedImage:
    """An image's encoded bytes whose header has been checked: a supported format, not too many pixels."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageUrl:
    """An https URL, fetched in step 2 (never while validating)."""

    url: str


Source = EncodedImage | ImageUrl


def parse_source(text: str, *, max_bytes: int, max_pixels: int) -> Source:
    """Classify one ``images`` entry and run every check that needs no download and no pixel decoding."""
    text = text.strip()
    if not text:
        raise ImageError(f"empty string; {_SEND}")
    if text[:5].lower() == "data:":
        return inspect_image(_data_uri_bytes(text, max_bytes=max_bytes), max_pixels=max_pixels)
    scheme = _URL_SCHEME.match(text)
    if scheme:  # base64 has no ':' in its alphabet, so anything with a scheme is meant as a URL
        return _checked_url(text, scheme.group(1).lower())
    return inspect_image(decode_base64(text, max_bytes=max_bytes), max_pixels=max_pixels)


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    """Decode base64 as browsers and tools produce it.

    Accepted: the standard and the URL-safe alphabet, line breaks, missing or extra ``=`` padding,
    percent-encoding, and spaces where form-encoding turned ``+`` into a space.
    """
    compact = re.sub(r"[\r\n\t]", "", text).strip()
    if "%" in compact:
        compact = unquote(compact)
    compact = compact.replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    bad = _NOT_BASE64.search(compact)
    if bad:
        raise ImageError(f"not valid base64: it contains {bad.group()!r}; {_SEND}")
    if len(compact) % 4 == 1:
        raise ImageError("not valid base64: its length is impossible (cut short?)")
    size = len(compact) * 6 // 8
    if size > max_bytes:
        raise ImageError(f"{_mb(size)} is over the {_mb(max_bytes)} limit for one image; send a smaller image")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except binascii.Error as error:
        raise ImageError(f"not valid base64: {error}") from None


def inspect_image(data: bytes, *, max_pixels: int) -> EncodedImage:
    """Read format and size from the header only, and refuse what is not allowed before decoding pixels."""
    if not data:
        raise ImageError("the image is empty (0 bytes)")
    try:
        with _open(data, FORMATS) as image:
            image_format, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise ImageError(f"over the limit of {max_pixels} pixels; send a smaller image") from None
    except _DECODE_ERRORS:
        raise ImageError(_NOT_AN_IMAGE) from None
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} pixels is over the limit of {max_pixels} pixels; send a smaller image")
    return EncodedImage(data=data, format=image_format, width=width, height=height)


def load(encoded: EncodedImage) -> Image.Image:
    """Decode the pixels, turn the image upright (EXIF), and give RGBA when alpha is real, else RGB."""
    try:
        with _open(encoded.data, (encoded.format,)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as error:
        raise ImageError(f"the {encoded.format} data is damaged or cut short ({error})") from None
    return _rgb_or_rgba(upright)


def fetch(url: str, *, timeout_s: float, max_bytes: int) -> bytes:
    """Download a user's URL with runpod's SSRF protections and our own size and time caps."""
    # Imported here: importing runpod reads its credentials file and sets log levels, and only jobs
    # that send URLs need it.
    from runpod.serverless.utils import rp_ssrf

    shown = _shown(url)
    deadline = time.monotonic() + timeout_s
    try:
        response = rp_ssrf.safe_get(url, timeout=timeout_s)
        with response:
            if response.status_code != 200:
                raise ImageError(f"{shown} answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ImageError(f"{shown} is {_mb(int(declared))}, over the {_mb(max_bytes)} limit for one image")
            return _read_capped(response, shown, max_bytes=max_bytes, deadline=deadline, timeout_s=timeout_s)
    except rp_ssrf.SSRFError as error:
        raise ImageError(f"refused to fetch {shown}: {error}; only public https addresses are fetched") from None
    except requests.Timeout:
        raise ImageError(f"{shown} did not answer within {timeout_s:g} s") from None
    except requests.RequestException as error:
        raise ImageError(f"could not download {shown} ({type(error).__name__})") from None


def load_all(sources: Sequence[Source], settings: Settings) -> list[Image.Image]:
    """Fetch and decode every view (URLs in parallel); all problems are reported together."""
    with ThreadPoolExecutor(max_workers=max(1, len(sources))) as pool:
        outcomes = list(pool.map(lambda source: _load_one(source, settings), sources))
    problems = [f"images[{index}]: {outcome}" for index, outcome in enumerate(outcomes) if isinstance(outcome, ImageError)]
    if problems:
        raise UserError("", "; ".join(problems))
    return outcomes


def _load_one(source: Source, settings: Settings) -> Image.Image | ImageError:
    try:
        if isinstance(source, ImageUrl):
            data = fetch(source.url, timeout_s=settings.url_timeout_s, max_bytes=settings.max_image_bytes)
            source = inspect_image(data, max_pixels=settings.max_image_pixels)
        return load(source)
    except ImageError as error:
        return error


def _read_capped(response: requests.Response, shown: str, *, max_bytes: int, deadline: float, timeout_s: float) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=1 << 16):
        body += chunk
        if len(body) > max_bytes:
            raise ImageError(f"{shown} is over the {_mb(max_bytes)} limit for one image")
        if time.monotonic() > deadline:
            raise ImageError(f"{shown} took longer than {timeout_s:g} s to download")
    return bytes(body)


def _data_uri_bytes(text: str, *, max_bytes: int) -> bytes:
    match = _DATA_URI.fullmatch(text)
    if not match:
        raise ImageError("not a valid data URI; use data:image/png;base64,<data>")
    media_type = match["type"].strip().lower()
    if media_type and not media_type.startswith("image/"):
        raise ImageError(f"the data URI's media type is {media_type!r}; use image/png, image/jpeg or image/webp")
    if "base64" not in [param.strip().lower() for param in match["params"].split(";")]:
        raise ImageError("the data URI is not base64-encoded; use data:image/png;base64,<data>")
    return decode_base64(match["data"], max_bytes=max_bytes)


def _checked_url(text: str, scheme: str) -> ImageUrl:
    if scheme == "http":
        raise ImageError("plain http URLs are not fetched; use an https:// URL")
    if scheme != "https":
        raise ImageError(f"URL scheme {scheme!r} is not supported; {_SEND}")
    if len(text) > MAX_URL_LENGTH:
        raise ImageError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(text)
        host, _port = parts.hostname, parts.port  # the port is only checked when read
    except ValueError as error:
        raise ImageError(f"not a valid URL ({error})") from None
    if not host:
        raise ImageError("the URL has no host")
    return ImageUrl(text)


@contextmanager
def _open(data: bytes, formats: Sequence[str]) -> Iterator[Image.Image]:
    # Our pixel cap is checked right after opening; Pillow's own, looser warning would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=formats)
    with image:
        yield image


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode in _GREY_16_BIT:  # Pillow's convert() clips 16-bit grey at 255 instead of scaling it
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8), "L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            return rgba
    return image.convert("RGB")


def _shown(url: str) -> str:
    """The URL as quoted back in messages: no query string (it may hold a token), at most 100 characters."""
    parts = urlsplit(url)
    short = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return short if len(short) <= 100 else short[:97] + "..."


def _mb(size: int) -> str:
    if size < 1_000_000:
        return f"{size} bytes"
    return f"{size / 1e6:.1f} MB" if size % 1_000_000 else f"{size // 1_000_000} MB"
