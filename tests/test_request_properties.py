"""What no request can do: make the worker answer a user's mistake as its own fault.

test_schema.py and test_images.py hold the exact answer to each mistake we thought of; these two
properties cover the ones we did not. Any JSON value as a job's input, and any damage to a valid
PNG, JPEG or WebP view, ends in a ``UserError`` or in a request and views the generator accepts;
anything else would reach the worker's catch-all and be answered as an internal error. Hypothesis
runs derandomized, with no example database, so that every run tries the same inputs.
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers import b64, encode, noise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel

from trellis_mv import schema
from trellis_mv.config import Settings
from trellis_mv.errors import UserError
from trellis_mv.images import ImageUrl, load_all

pytestmark = pytest.mark.timeout(60)

LIMITS = dataclasses.replace(Settings(), max_views=3, max_image_bytes=60_000, max_image_pixels=65_536)
VIEWS = [
    encode(noise((24, 16), mode), image_format)
    for mode, image_format in [("RGBA", "PNG"), ("L", "PNG"), ("RGB", "JPEG"), ("RGBA", "WEBP")]
] + [encode(Image.new("P", (12, 12)), "PNG"), encode(Image.new("I;16", (12, 12)), "PNG")]
VIEW = b64(VIEWS[0])
# The contract's field names, top level ("") and in each nested object, as the schema defines them.
FIELDS = {"": list(schema.JobInput.model_fields)} | {
    name: list(field.annotation.model_fields) for name, field in schema.JobInput.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
# Values near the contract's: its names, the edges of its ranges, image sources that almost work.
NEAR = st.sampled_from([
    "stochastic", "multidiffusion", "concat", "512", "1536_cascade", "webp", "png", "draco", "xatlas", "s3",
    "base64", "auto", "", " ", "..", "a/b", VIEW, VIEW[:21], "data:image/png;base64," + VIEW, "data:,",
    "https://", "https://example.com/v.png", "http://127.0.0.1/v.png", 0, 1, 50, 51, 512, 4096, 2**32, -1, 0.5,
])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | NEAR,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from([name for names in FIELDS.values() for name in names]) | st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
EXAMPLES = settings(max_examples=400, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def accepted_or_refused(raw: object) -> None:
    """Validate and decode as a job does, then build what the generator and the exporter get."""
    try:
        request = schema.parse_job_input(raw, LIMITS, has_bucket=False)
        if any(isinstance(source, ImageUrl) for source in request.images):
            return  # fetching is test_fetch.py's, on a loopback server
        views = load_all(request.images, LIMITS)
    except UserError as error:
        assert str(error)
        return
    assert len(request.generation_request(views).images) == len(views)
    request.glb.to_options()


@EXAMPLES
@given(JSON)
def test_any_json_input_is_accepted_or_refused_as_the_users_mistake(raw):
    accepted_or_refused(raw)


@EXAMPLES
@given(st.sampled_from(list(FIELDS)).flatmap(
    lambda section: st.tuples(st.just(section), st.dictionaries(st.sampled_from(FIELDS[section]), NEAR | JSON, max_size=3))
))
def test_any_fields_beside_valid_images_are_accepted_or_refused(drawn):
    section, fields = drawn
    accepted_or_refused({"images": [VIEW, VIEW], **fields} if section == "" else {"images": [VIEW], section: fields})


@st.composite
def damaged_views(draw) -> bytes:
    """A valid view with bytes changed, removed, inserted or cut off."""
    data = bytearray(draw(st.sampled_from(VIEWS)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        change = draw(st.sampled_from(["set", "remove", "insert", "cut"]))
        if change == "set":
            data[at] = draw(st.integers(0, 255))
        elif change == "remove":
            del data[at:at + draw(st.integers(1, 40))]
        elif change == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[max(at, 1):]
        if not data:
            data = bytearray(b"\x89")
    return bytes(data)


@EXAMPLES
@given(damaged_views())
def test_a_damaged_view_is_refused_by_its_index_or_decoded_to_rgb_or_rgba(data):
    try:
        request = schema.parse_job_input({"images": [VIEW, b64(data)]}, LIMITS, has_bucket=False)
        views = load_all(request.images, LIMITS)
    except UserError as error:
        assert str(error).startswith("images[1]: ") and "images[0]" not in str(error), error
        return
    assert [view.mode in ("RGB", "RGBA") for view in views] == [True, True]
    assert views[1].width * views[1].height <= LIMITS.max_image_pixels
