"""Make the example photos: four views of the tests' textured chair, rendered by our own renderer.

    python examples/make_examples.py

writes ``examples/chair_<view>.png`` (the chair alone, on a transparent background: its alpha channel
is kept and background removal is skipped) and ``examples/chair_<view>.jpg`` (the same view on a
backdrop, as a camera would see it: the worker removes the background) for the views in ``VIEWS``,
and puts the front and back views, downscaled to ``TEST_INPUT_SIZE`` pixels, into ``test_input.json``
and the RunPod Hub's test (``.runpod/tests.json``) as base64: runpod's ``--test_input`` and the Hub
read the images from the request itself.

The chair is ``tests/render_scenes.py``'s (lopsided, checkerboard-textured, 84 faces), rendered with
``trellis_mv.preview.render.shaded`` on the CPU from known orbit cameras (the GLB's frame: +Y up,
azimuth 0 on +Z, where the chair faces). The same code gives the same pixels: ``tests/test_examples.py``
renders them again and compares them with the committed files.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from render_scenes import chair  # noqa: E402 (the tests' asset)

from trellis_mv.preview.render import RenderMesh, shaded  # noqa: E402

# view name -> (azimuth, elevation, field of view), degrees; the chair's front faces azimuth 0
VIEWS = {"front": (15.0, 20.0, 40.0), "left": (100.0, 10.0, 40.0), "back": (195.0, 25.0, 40.0), "right": (280.0, 15.0, 40.0)}
SIZE = 512
SUPERSAMPLE = 2
JPEG_QUALITY = 88
TEST_INPUT_VIEWS = ("front", "back")
TEST_INPUT_SIZE = 128


def render_views() -> dict[str, Image.Image]:
    """Every view of the chair as an RGBA image, SIZE pixels square, background transparent."""
    cameras = torch.tensor(list(VIEWS.values()))
    rgba = shaded(RenderMesh.from_trimesh(chair(), "cpu"), cameras[:, 0], cameras[:, 1], cameras[:, 2], SIZE,
                  margin=0.15, supersample=SUPERSAMPLE).numpy()
    pixels = (rgba.clip(0, 1) * 255).round().astype(np.uint8)
    return {name: Image.fromarray(image, "RGBA") for name, image in zip(VIEWS, pixels)}


def on_backdrop(view: Image.Image) -> Image.Image:
    """The view over a plain studio backdrop: a wall lighter at the top, a floor below the chair's feet."""
    rows = np.linspace(0.0, 1.0, view.height, dtype=np.float32)[:, None, None]
    wall = (0.86 - 0.12 * rows) * np.array([1.0, 0.97, 0.92], dtype=np.float32)
    floor = np.array([0.62, 0.58, 0.52], dtype=np.float32) * (1.0 - 0.2 * rows)
    backdrop = np.where(rows > 0.8, floor, wall) * np.ones((1, view.width, 1), dtype=np.float32)
    rgba = np.asarray(view, dtype=np.float32) / 255
    rgb = rgba[..., :3] * rgba[..., 3:] + backdrop * (1 - rgba[..., 3:])
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def photos() -> dict[str, Image.Image]:
    """Every example file's name (under examples/) and its image."""
    views = render_views()
    files = {f"chair_{name}.png": view for name, view in views.items()}
    files |= {f"chair_{name}.jpg": on_backdrop(view) for name, view in views.items()}
    return files


def encoded(name: str, image: Image.Image) -> bytes:
    """The file's bytes: PNG, or JPEG at JPEG_QUALITY."""
    buffer = io.BytesIO()
    if name.endswith(".jpg"):
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_input_images(views: dict[str, Image.Image]) -> list[str]:
    """TEST_INPUT_VIEWS downscaled to TEST_INPUT_SIZE pixels, as base64 PNGs."""
    small = [views[f"chair_{name}.png"].resize((TEST_INPUT_SIZE, TEST_INPUT_SIZE), Image.Resampling.LANCZOS) for name in TEST_INPUT_VIEWS]
    return [base64.b64encode(encoded("view.png", image)).decode("ascii") for image in small]


def main() -> None:
    """Write the example photos, and their small copies into test_input.json and .runpod/tests.json."""
    files = photos()
    for name, image in files.items():
        (ROOT / "examples" / name).write_bytes(encoded(name, image))
    images = test_input_images(files)
    request = json.loads((ROOT / "test_input.json").read_text(encoding="utf-8"))
    request["input"]["images"] = images
    (ROOT / "test_input.json").write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
    hub = json.loads((ROOT / ".runpod" / "tests.json").read_text(encoding="utf-8"))
    hub["tests"][0]["input"] = request["input"]
    (ROOT / ".runpod" / "tests.json").write_text(json.dumps(hub, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(files)} photos in examples/ and {len(images)} small views in test_input.json and .runpod/tests.json")


if __name__ == "__main__":
    main()
