"""Decoding views: base64 as browsers send it, data URIs, EXIF orientation, alpha, damaged files."""

from __future__ import annotations

import textwrap
from urllib.parse import quote

import numpy as np
import pytest
from helpers import b64, encode, noise, png, png_header_only
from PIL import Image

from trellis_mv import images
from trellis_mv.config import Settings
from trellis_mv.errors import UserError
from trellis_mv.images import EncodedImage, ImageError, inspect_image, load, load_all, parse_source

pytestmark = pytest.mark.timeout(20)

SETTINGS = Settings()
NOISE_PNG = encode(noise((24, 24), seed=3), "PNG")
NOISE_B64 = b64(NOISE_PNG)


def parse(text: str, **limits) -> EncodedImage:
    return parse_source(text, max_bytes=limits.get("max_bytes", 10**6), max_pixels=limits.get("max_pixels", 10**6))


def test_the_sample_exercises_every_special_character():
    assert "+" in NOISE_B64 and "/" in NOISE_B64 and NOISE_B64.endswith("=")


@pytest.mark.parametrize(
    "text",
    [
        NOISE_B64,
        "\n".join(textwrap.wrap(NOISE_B64, 76)),  # MIME line breaks
        "\r\n".join(textwrap.wrap(NOISE_B64, 64)) + "\r\n",
        f"  {NOISE_B64}\n",
        NOISE_B64.rstrip("="),  # padding dropped
        NOISE_B64 + "==",  # padding added twice
        NOISE_B64.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
        NOISE_B64.replace("+", "-").replace("/", "_").rstrip("="),
        NOISE_B64.replace("+", " "),  # form-encoding turned '+' into spaces
        quote(NOISE_B64, safe=""),  # percent-encoded
        "data:image/png;base64," + NOISE_B64,
        "DATA:image/png;BASE64," + NOISE_B64,
        "data:image/jpeg;base64," + NOISE_B64,  # a wrong media type: the bytes decide
        "data:;base64," + NOISE_B64,
        "data:image/png;name=view.png;base64," + "\n".join(textwrap.wrap(NOISE_B64, 76)),
    ],
)
def test_base64_and_data_uris_as_clients_send_them(text):
    parsed = parse(text)
    assert parsed.data == NOISE_PNG
    assert (parsed.format, parsed.width, parsed.height) == ("PNG", 24, 24)


@pytest.mark.parametrize(
    ("image", "image_format", "options"),
    [
        (noise((20, 10)), "PNG", {}),
        (noise((20, 10)), "JPEG", {"quality": 90}),
        (noise((20, 10)), "WEBP", {"lossless": True}),
        (noise((20, 10), mode="RGBA"), "WEBP", {"lossless": True}),
    ],
)
def test_png_jpeg_and_webp_are_read_from_the_header(image, image_format, options):
    parsed = parse(b64(encode(image, image_format, **options)))
    assert (parsed.format, parsed.width, parsed.height) == (image_format, 20, 10)


def test_the_pixel_limit_is_checked_on_the_header_before_decoding():
    header_only = png_header_only(5000, 5000)  # its pixel data is not even valid zlib
    with pytest.raises(ImageError, match=r"^5000x5000 pixels is over the limit of 16777216 pixels"):
        inspect_image(header_only, max_pixels=SETTINGS.max_image_pixels)
    assert inspect_image(png_header_only(4096, 4096), max_pixels=SETTINGS.max_image_pixels).width == 4096


def test_exif_orientation_is_applied():
    left_red_right_blue = Image.new("RGB", (40, 20), (0, 0, 255))
    left_red_right_blue.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(left_red_right_blue, "JPEG", exif=exif.tobytes(), quality=95)
    upright = load(inspect_image(data, max_pixels=10**6))
    assert upright.size == (20, 40)
    pixels = np.asarray(upright).astype(int)
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 2] < 60  # top: red
    assert pixels[37, 10, 2] > 200 and pixels[37, 10, 0] < 60  # bottom: blue


def half_transparent(mode: str) -> Image.Image:
    rgba = Image.new("RGBA", (8, 8), (10, 200, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 4, 8))
    return rgba.convert(mode) if mode != "P" else rgba.quantize(colors=4, method=Image.Quantize.FASTOCTREE)


@pytest.mark.parametrize(
    ("image", "image_format", "mode"),
    [
        (half_transparent("RGBA"), "PNG", "RGBA"),
        (half_transparent("LA"), "PNG", "RGBA"),
        (half_transparent("P"), "PNG", "RGBA"),
        (half_transparent("RGBA"), "WEBP", "RGBA"),
        (Image.new("RGBA", (8, 8), (10, 200, 30, 255)), "PNG", "RGB"),  # opaque alpha is no alpha
        (Image.new("RGB", (8, 8), (10, 200, 30)), "PNG", "RGB"),
        (Image.new("L", (8, 8), 90), "PNG", "RGB"),
        (Image.new("P", (8, 8), 1), "PNG", "RGB"),
        (Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", "RGB"),
    ],
)
def test_alpha_is_kept_only_when_real(image, image_format, mode):
    options = {"lossless": True} if image_format == "WEBP" else {}
    loaded = load(inspect_image(encode(image, image_format, **options), max_pixels=10**6))
    assert loaded.mode == mode
    if mode == "RGBA":
        alpha = np.asarray(loaded)[..., 3]
        assert alpha[:, :4].max() == 0 and alpha[:, 4:].min() == 255


def test_16_bit_grey_is_scaled_not_clipped():
    grey = Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16))
    loaded = load(inspect_image(encode(grey, "PNG"), max_pixels=10**6))
    assert loaded.mode == "RGB"
    assert np.asarray(loaded)[0, 0].tolist() == [30000 >> 8] * 3


def test_load_all_reports_every_broken_image_at_once():
    whole = png((16, 16))
    cut_short = EncodedImage(data=NOISE_PNG[: len(NOISE_PNG) // 2], format="PNG", width=24, height=24)
    sources = [inspect_image(whole, max_pixels=10**6), cut_short, cut_short]
    with pytest.raises(UserError) as raised:
        load_all(sources, SETTINGS)
    problems = str(raised.value).split("; ")
    assert [problem.split(":")[0] for problem in problems] == ["images[1]", "images[2]"]
    assert problems[0].startswith("images[1]: the PNG data is damaged or cut short (")


def test_load_all_keeps_the_order_of_the_views():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    sources = [inspect_image(png((8, 8), colour), max_pixels=10**6) for colour in colours]
    loaded = load_all(sources, SETTINGS)
    assert [image.getpixel((0, 0)) for image in loaded] == colours


def test_public_names():
    assert sorted(images.__all__) == [
        "EncodedImage", "FORMATS", "ImageError", "ImageUrl", "Source", "decode_base64", "fetch", "inspect_image",
        "load", "load_all", "parse_source",
    ]
