"""The job input: defaults, the mapping onto the generator and exporter, and every way to get it wrong.

Bad inputs are a table of (input, exact answer). Limits are lowered (3 views, 60 kB, 65536 pixels)
so that the size rows need only small files.
"""

from __future__ import annotations

import dataclasses
from typing import get_args

import pytest
from helpers import b64, encode, noise, png, png_b64, png_header_only
from PIL import Image

from trellis_mv import schema
from trellis_mv.config import Settings
from trellis_mv.errors import UserError
from trellis_mv.export import GlbOptions
from trellis_mv.generator import Mode, StageOptions
from trellis_mv.images import EncodedImage, ImageUrl
from trellis_mv.sampling import MODES

pytestmark = pytest.mark.timeout(20)

LIMITS = dataclasses.replace(Settings(), max_views=3, max_image_bytes=60_000, max_image_pixels=65_536)
VIEW = png_b64()
BIG_PNG = encode(noise((150, 150)), "PNG")  # ~67 kB of incompressible pixels, 22500 pixels
SEND = "send base64, a data: URI or an https:// URL"
STAGE_FIELDS = "steps, guidance_strength, guidance_rescale, guidance_interval, rescale_t, mode"
TOP_FIELDS = "images, mode, seed, pipeline_type, sparse_structure, shape_slat, tex_slat, view_weights, preprocess, glb, output"
NO_BUCKET = (
    'output.type: "s3" needs a bucket and this worker has none (set BUCKET_NAME, BUCKET_ACCESS_KEY_ID, '
    'BUCKET_SECRET_ACCESS_KEY on the endpoint); use "base64" or leave output.type out'
)
KEY_PREFIX_RULE = (
    "is not allowed; use 1 to 200 letters, digits, '.', '_', '-' and '/' (not at either end, no empty or '..' parts)"
)
ONE_WEIGHT = "send one positive number per image"
WEIGHS = 'only "multidiffusion" weighs views, and this request uses'
ONE_PER_STEP = "one view per step"
FUSED = "the views meet inside trellis2's cross-attention, which has no per-view bias to weigh them by"
WEIGHTS_FIX = 'use "multidiffusion" in every stage or leave view_weights out'


def job(**fields):
    return {"images": [VIEW], **fields}


def two(**fields):
    return {"images": [VIEW, VIEW], **fields}


BAD_INPUTS = [
    # the input itself
    ([VIEW], 'input: expected an object such as {"images": ["<base64>"]}, got ["' + VIEW[:35] + "..."),
    (None, 'input: expected an object such as {"images": ["<base64>"]}, got null'),
    ({}, "images: required; send a list of 1 to 3 images (base64, data: URIs or https:// URLs)"),
    (job(prompt="a chair"), f"prompt: unknown field; allowed: {TOP_FIELDS}"),
    # images: the list
    ({"images": []}, "images: 0 images given; send 1 to 3"),
    ({"images": [VIEW] * 4}, "images: 4 images given; send 1 to 3"),
    ({"images": VIEW}, f'images: expected a list of 1 to 3 images, got "{VIEW[:36]}...'),
    # images: one entry
    ({"images": [42]}, "images[0]: expected a string (base64, a data: URI or an https:// URL), got 42"),
    ({"images": [VIEW, "  "]}, f"images[1]: empty string; {SEND}"),
    ({"images": ["not base64!"]}, f"images[0]: not valid base64: it contains '!'; {SEND}"),
    ({"images": ["QUJDRA" + "A" * 3]}, "images[0]: not valid base64: its length is impossible (cut short?)"),
    ({"images": [b64(b"just some text, no image")]}, "images[0]: not a PNG, JPEG or WebP image"),
    ({"images": [b64(encode(Image.new("RGB", (8, 8)), "GIF"))]}, "images[0]: not a PNG, JPEG or WebP image"),
    ({"images": [b64(encode(Image.new("RGB", (8, 8)), "BMP"))]}, "images[0]: not a PNG, JPEG or WebP image"),
    ({"images": [b64(b"")]}, f"images[0]: empty string; {SEND}"),
    ({"images": [b64(BIG_PNG)]}, f"images[0]: {len(BIG_PNG)} bytes is over the 60000 bytes limit for one image; send a smaller image"),
    ({"images": [b64(png((300, 300)))]}, "images[0]: 300x300 pixels is over the limit of 65536 pixels; send a smaller image"),
    # a header claiming huge sizes over garbage pixel data: refused before decoding
    ({"images": [b64(png_header_only(5000, 5000))]}, "images[0]: 5000x5000 pixels is over the limit of 65536 pixels; send a smaller image"),
    ({"images": [b64(png_header_only(10000, 10000))]}, "images[0]: 10000x10000 pixels is over the limit of 65536 pixels; send a smaller image"),
    ({"images": [b64(png_header_only(20000, 20000))]}, "images[0]: over the limit of 65536 pixels; send a smaller image"),
    # data URIs
    ({"images": ["data:text/plain;base64,QUJD"]}, "images[0]: the data URI's media type is 'text/plain'; use image/png, image/jpeg or image/webp"),
    ({"images": ["data:image/png,rawbytes"]}, "images[0]: the data URI is not base64-encoded; use data:image/png;base64,<data>"),
    ({"images": ["data:image/png;base64"]}, "images[0]: not a valid data URI; use data:image/png;base64,<data>"),
    ({"images": ["data:image/png;base64,@@@@"]}, f"images[0]: not valid base64: it contains '@'; {SEND}"),
    # URLs
    ({"images": ["http://example.com/chair.png"]}, "images[0]: plain http URLs are not fetched; use an https:// URL"),
    ({"images": ["ftp://example.com/chair.png"]}, f"images[0]: URL scheme 'ftp' is not supported; {SEND}"),
    ({"images": ["file:///etc/passwd"]}, f"images[0]: URL scheme 'file' is not supported; {SEND}"),
    ({"images": ["https:///chair.png"]}, "images[0]: the URL has no host"),
    ({"images": ["https://example.com:99999/chair.png"]}, "images[0]: not a valid URL (Port out of range 0-65535)"),
    ({"images": ["https://example.com/" + "a" * 2048]}, "images[0]: the URL is longer than 2048 characters"),
    # mode, seed, pipeline_type
    (job(mode="fast"), 'mode: "fast" is not allowed; use "stochastic", "multidiffusion" or "concat"'),
    (job(seed=-1), "seed: -1 is not in the range 0<=x<=4294967295"),
    (job(seed=2**32), "seed: 4294967296 is not in the range 0<=x<=4294967295"),
    (job(seed="42"), 'seed: expected an integer, got "42"'),
    (job(seed=1.5), "seed: expected an integer, got 1.5"),
    (job(seed=True), "seed: expected an integer, got true"),
    (job(pipeline_type=512), 'pipeline_type: 512 is not allowed; use "512", "1024", "1024_cascade" or "1536_cascade"'),
    (job(pipeline_type="2048"), 'pipeline_type: "2048" is not allowed; use "512", "1024", "1024_cascade" or "1536_cascade"'),
    # stages
    (job(shape_slat={"steps": 0}), "shape_slat.steps: 0 is not in the range 1<=x<=50"),
    (job(sparse_structure={"steps": 51}), "sparse_structure.steps: 51 is not in the range 1<=x<=50"),
    (job(sparse_structure={"steps": 12.0}), "sparse_structure.steps: expected an integer, got 12.0"),
    (job(tex_slat={"guidance_strength": 25}), "tex_slat.guidance_strength: 25 is not in the range 0<=x<=20"),
    (job(tex_slat={"guidance_strength": float("nan")}), "tex_slat.guidance_strength: expected a finite number, got NaN"),
    (job(tex_slat={"guidance_strength": "high"}), 'tex_slat.guidance_strength: expected a number, got "high"'),
    (job(shape_slat={"guidance_rescale": -0.1}), "shape_slat.guidance_rescale: -0.1 is not in the range 0<=x<=1"),
    (job(shape_slat={"guidance_interval": [0.9, 0.1]}), "shape_slat.guidance_interval: [0.9, 0.1] is not an interval [start, end] with 0<=start<=end<=1"),
    (job(shape_slat={"guidance_interval": [0.5]}), "shape_slat.guidance_interval: expected two numbers [start, end] within 0..1, got 1"),
    (job(shape_slat={"guidance_interval": "0.6-1"}), 'shape_slat.guidance_interval: expected a list, got "0.6-1"'),
    (job(shape_slat={"guidance_interval": [0.5, "1"]}), 'shape_slat.guidance_interval[1]: expected a number, got "1"'),
    (job(sparse_structure={"rescale_t": 0}), "sparse_structure.rescale_t: 0 is not in the range 0.1<=x<=10"),
    (job(tex_slat={"mode": "mean"}), 'tex_slat.mode: "mean" is not allowed; use "stochastic", "multidiffusion" or "concat"'),
    (job(shape_slat={"cfg": 3}), f"shape_slat.cfg: unknown field; allowed: {STAGE_FIELDS}"),
    (job(shape_slat=5), "shape_slat: expected an object, got 5"),
    # view_weights
    (two(view_weights=[1, 2, 3]), f"view_weights: 3 weights given for 2 images; {ONE_WEIGHT}"),
    (two(view_weights=[1]), f"view_weights: 1 weight given for 2 images; {ONE_WEIGHT}"),
    (job(mode="multidiffusion", view_weights=[1, 2]), f"view_weights: 2 weights given for 1 image; {ONE_WEIGHT}"),
    (two(view_weights=[]), f"view_weights: 0 weights given for 2 images; {ONE_WEIGHT}"),
    (two(view_weights=[1, 0]), "view_weights[1]: 0 is not a positive number"),
    (two(view_weights=[-0.5, 1]), "view_weights[0]: -0.5 is not a positive number"),
    (two(view_weights=[1, float("inf")]), "view_weights[1]: expected a finite number, got Infinity"),
    (two(view_weights=[1, "2"]), 'view_weights[1]: expected a number, got "2"'),
    (two(view_weights=[1, True]), "view_weights[1]: expected a number, got true"),
    (two(view_weights=2), "view_weights: expected a list, got 2"),
    (two(view_weights=[1, 2]), f'view_weights: {WEIGHS} "stochastic" ({ONE_PER_STEP}); {WEIGHTS_FIX}'),
    (two(mode="concat", view_weights=[1, 2]), f'view_weights: {WEIGHS} "concat" ({FUSED}); {WEIGHTS_FIX}'),
    (two(mode="multidiffusion", sparse_structure={"mode": "concat"}, view_weights=[1, 2]),
     f'view_weights: {WEIGHS} "concat" ({FUSED}); {WEIGHTS_FIX}'),
    (two(mode="concat", tex_slat={"mode": "stochastic"}, shape_slat={"mode": "multidiffusion"}, view_weights=[1, 2]),
     f'view_weights: {WEIGHS} "stochastic" ({ONE_PER_STEP}) and "concat" ({FUSED}); {WEIGHTS_FIX}'),
    (job(mode="concat", view_weights=[1]), f'view_weights: {WEIGHS} "concat" ({FUSED}); {WEIGHTS_FIX}'),
    # preprocess
    (job(preprocess={"remove_background": "yes"}), 'preprocess.remove_background: "yes" is not allowed; use "auto", true or false'),
    (job(preprocess={"rembg": True}), "preprocess.rembg: unknown field; allowed: remove_background"),
    # glb
    (job(glb={"texture_size": 256}), "glb.texture_size: 256 is not in the range 512<=x<=4096"),
    (job(glb={"texture_size": "2k"}), 'glb.texture_size: expected an integer, got "2k"'),
    (job(glb={"decimation_target": 10}), "glb.decimation_target: 10 is not in the range 1000<=x<=2000000"),
    (job(glb={"texture_format": "jpeg"}), 'glb.texture_format: "jpeg" is not allowed; use "webp" or "png"'),
    (job(glb={"remesh": "yes"}), 'glb.remesh: expected true or false, got "yes"'),
    (job(glb={"compression": "meshopt"}), 'glb.compression: "meshopt" is not allowed; use "draco" or "none"'),
    (job(glb={"unwrap": "blender"}), 'glb.unwrap: "blender" is not allowed; use "fast" or "xatlas"'),
    (job(glb={"format": "obj"}), "glb.format: unknown field; allowed: decimation_target, texture_size, remesh, texture_format, compression, unwrap"),
    # output
    (job(output={"type": "s3"}), NO_BUCKET),
    (job(output={"type": "url"}), 'output.type: "url" is not allowed; use "s3" or "base64"'),
    (job(output={"expires_in": 10}), "output.expires_in: 10 is not in the range 60<=x<=604800"),
    (job(output={"key_prefix": "../up"}), f'output.key_prefix: "../up" {KEY_PREFIX_RULE}'),
    (job(output={"key_prefix": "/abs"}), f'output.key_prefix: "/abs" {KEY_PREFIX_RULE}'),
    (job(output={"key_prefix": "a b"}), f'output.key_prefix: "a b" {KEY_PREFIX_RULE}'),
]


@pytest.mark.parametrize(("job_input", "message"), BAD_INPUTS)
def test_bad_input_is_answered_with_field_problem_and_what_is_allowed(job_input, message):
    with pytest.raises(UserError) as raised:
        schema.parse_job_input(job_input, LIMITS, has_bucket=False)
    assert str(raised.value) == message


def test_the_table_is_large():
    assert len(BAD_INPUTS) >= 30


def test_all_problems_of_a_request_come_back_in_one_answer_in_field_order():
    bad = {
        "images": [VIEW, "http://example.com/a.png"],
        "seed": -1,
        "shape_slat": {"steps": 0, "cfg": 1},
        "glb": {"texture_size": 100},
        "colour": "red",
    }
    with pytest.raises(UserError) as raised:
        schema.parse_job_input(bad, LIMITS, has_bucket=False)
    assert str(raised.value) == "; ".join(
        [
            "images[1]: plain http URLs are not fetched; use an https:// URL",
            "seed: -1 is not in the range 0<=x<=4294967295",
            "shape_slat.steps: 0 is not in the range 1<=x<=50",
            f"shape_slat.cfg: unknown field; allowed: {STAGE_FIELDS}",
            "glb.texture_size: 100 is not in the range 512<=x<=4096",
            f"colour: unknown field; allowed: {TOP_FIELDS}",
        ]
    )


def test_defaults():
    parsed = schema.parse_job_input({"images": [VIEW]}, LIMITS, has_bucket=False)
    assert (parsed.mode, parsed.pipeline_type) == ("stochastic", "1024_cascade")
    assert 0 <= parsed.seed <= schema.MAX_SEED
    assert parsed.glb.to_options() == GlbOptions()
    assert parsed.glb.to_options().texture_format == "webp"
    assert (parsed.output.type, parsed.output.key_prefix, parsed.output.expires_in) == (None, None, None)
    request = parsed.generation_request([Image.new("RGB", (4, 4))])
    assert request.remove_background is None
    assert request.sparse_structure == request.shape_slat == request.tex_slat == StageOptions()


def test_a_full_request_maps_onto_the_generator_and_exporter():
    raw = {
        "images": [VIEW, "data:image/png;base64," + VIEW, "https://example.com/back.png?sig=abc"],
        "mode": "multidiffusion",
        "seed": 4294967295,
        "pipeline_type": "512",
        "sparse_structure": {"steps": 12, "guidance_strength": 7.5, "guidance_rescale": 0.7, "guidance_interval": [0.6, 1], "rescale_t": 5},
        "shape_slat": {"mode": "stochastic"},
        "tex_slat": {"guidance_strength": 1},
        "preprocess": {"remove_background": False},
        "glb": {"decimation_target": 50_000, "texture_size": 1024, "remesh": False, "texture_format": "png", "compression": "none",
                "unwrap": "xatlas"},
        "output": {"type": "s3", "key_prefix": "team-a/chairs", "expires_in": 600},
    }
    parsed = schema.parse_job_input(raw, LIMITS, has_bucket=True)
    first, second, third = parsed.images
    assert isinstance(first, EncodedImage) and (first.format, first.width, first.height) == ("PNG", 16, 16)
    assert second == first
    assert third == ImageUrl("https://example.com/back.png?sig=abc")
    request = parsed.generation_request(["front", "side", "back"])
    assert request.images == ("front", "side", "back")
    assert (request.seed, request.mode, request.pipeline_type, request.remove_background) == (4294967295, "multidiffusion", "512", False)
    assert request.sparse_structure == StageOptions(steps=12, guidance_strength=7.5, guidance_rescale=0.7, guidance_interval=(0.6, 1), rescale_t=5)
    assert request.sparse_structure.sampler_overrides()["guidance_interval"] == (0.6, 1)
    assert request.stage_mode("shape_slat") == "stochastic" and request.stage_mode("tex_slat") == "multidiffusion"
    assert request.tex_slat.guidance_strength == 1.0
    assert parsed.glb.to_options() == GlbOptions(decimation_target=50_000, texture_size=1024, remesh=False, texture_format="png", compression="none",
                                                 unwrap="xatlas")
    assert (parsed.output.type, parsed.output.key_prefix, parsed.output.expires_in) == ("s3", "team-a/chairs", 600)


def test_seeds_default_to_random_values_in_range():
    seeds = {schema.parse_job_input({"images": [VIEW]}, LIMITS, has_bucket=False).seed for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= seed <= schema.MAX_SEED for seed in seeds)


def test_limits_come_from_the_settings():
    eight = [VIEW] * 8
    assert len(schema.parse_job_input({"images": eight}, Settings(), has_bucket=False).images) == 8
    with pytest.raises(UserError, match=r"^images: 8 images given; send 1 to 3$"):
        schema.parse_job_input({"images": eight}, LIMITS, has_bucket=False)
    schema.parse_job_input({"images": [b64(BIG_PNG)]}, Settings(), has_bucket=False)


def test_public_names():
    assert sorted(schema.__all__) == [
        "GlbInput", "JobInput", "MAX_SEED", "OutputInput", "PreprocessInput", "StageInput", "parse_job_input",
    ]


@pytest.mark.parametrize(
    ("fields", "weights", "modes"),
    [
        ({}, None, ("stochastic",) * 3),
        ({"mode": "concat"}, None, ("concat",) * 3),
        ({"mode": "concat", "tex_slat": {"mode": "multidiffusion"}}, None, ("concat", "concat", "multidiffusion")),
        ({"mode": "multidiffusion", "view_weights": [1, 3]}, (1.0, 3.0), ("multidiffusion",) * 3),
        ({"mode": "stochastic", "sparse_structure": {"mode": "multidiffusion"}, "shape_slat": {"mode": "multidiffusion"},
          "tex_slat": {"mode": "multidiffusion"}, "view_weights": [0.25, 2]}, (0.25, 2.0), ("multidiffusion",) * 3),
    ],
)
def test_modes_and_view_weights_reach_the_generator(fields, weights, modes):
    request = schema.parse_job_input(two(**fields), LIMITS, has_bucket=False).generation_request(["a", "b"])
    assert request.view_weights == weights
    assert tuple(request.stage_mode(stage) for stage in ("sparse_structure", "shape_slat", "tex_slat")) == modes


def test_view_weights_are_checked_against_the_images_only_when_those_are_valid():
    with pytest.raises(UserError) as raised:
        schema.parse_job_input({"images": [VIEW, 5], "mode": "multidiffusion", "view_weights": [1]}, LIMITS, has_bucket=False)
    assert str(raised.value) == "images[1]: expected a string (base64, a data: URI or an https:// URL), got 5"


def test_the_contract_offers_exactly_the_sampler_modes():
    assert get_args(Mode) == MODES
