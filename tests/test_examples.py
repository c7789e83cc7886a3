"""examples/: the committed photos are what ``examples/make_examples.py`` renders, and small enough for git.

The comparison is of pixels, not bytes, within a few levels on a few edge pixels: the script's
render (torch) and its encoders (Pillow's zlib and libjpeg) may differ in their last bits between the
package sets the suite runs in; a change of camera, asset or renderer moves far more than that.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.timeout(120)


def load_script():
    spec = importlib.util.spec_from_file_location("make_examples", EXAMPLES / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def rendered(script) -> dict[str, Image.Image]:
    return script.photos()


def pixels(image: Image.Image | bytes) -> np.ndarray:
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    return np.asarray(image, dtype=np.int16)


def assert_close(found: np.ndarray, expected: np.ndarray) -> None:
    """Equal but for rounding: mean difference under half a level, under 0.2 % of pixels off by more than 8."""
    assert found.shape == expected.shape
    difference = np.abs(found - expected)
    assert difference.mean() < 0.5, difference.mean()
    assert (difference.max(axis=-1) > 8).mean() < 0.002


def test_the_committed_photos_are_what_the_script_renders(script, rendered):
    assert sorted(path.name for path in EXAMPLES.iterdir() if path.suffix != ".py") == sorted(rendered)
    for name, image in rendered.items():
        committed = (EXAMPLES / name).read_bytes()
        with Image.open(io.BytesIO(committed)) as opened:
            assert (opened.format, opened.mode, opened.size) == (("PNG", "RGBA") if name.endswith(".png") else ("JPEG", "RGB")) + ((512, 512),)
        assert_close(pixels(committed), pixels(script.encoded(name, image)))


def test_the_photos_are_small_enough_for_git():
    assert sum(path.stat().st_size for path in EXAMPLES.iterdir()) < 1_000_000


def test_the_render_is_deterministic(script, rendered):
    again = script.render_views()
    for name, image in again.items():
        assert np.array_equal(pixels(image), pixels(rendered[f"chair_{name}.png"])), name


def test_the_views_show_the_chair_on_transparency_and_on_a_backdrop(rendered):
    for name in ("front", "left", "back", "right"):
        alpha = pixels(rendered[f"chair_{name}.png"])[..., 3]
        assert 0.1 < (alpha > 0).mean() < 0.6  # the chair fills part of the frame, the rest is see-through
        assert (alpha[0] == 0).all() and (alpha[:, 0] == 0).all()
        backdrop = pixels(rendered[f"chair_{name}.jpg"])
        assert backdrop[0, 0].min() > 150  # a light wall where the PNG is transparent


def test_test_input_and_the_hub_test_carry_the_small_front_and_back_views(script, rendered):
    request = json.loads((ROOT / "test_input.json").read_text())["input"]
    expected = script.test_input_images(rendered)
    assert len(request["images"]) == len(expected) == 2
    for sent, made in zip(request["images"], expected):
        assert_close(pixels(base64.b64decode(sent)), pixels(base64.b64decode(made)))
        assert pixels(base64.b64decode(sent)).shape == (script.TEST_INPUT_SIZE, script.TEST_INPUT_SIZE, 4)
    assert len(json.dumps(request)) < 40_000
    assert json.loads((ROOT / ".runpod" / "tests.json").read_text())["tests"][0]["input"] == request
