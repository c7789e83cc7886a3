"""Truthful answers: the cascade's resolution rule, and the answer saying which resolution was used."""

from __future__ import annotations

import base64
import logging

import pytest
from helpers import png_b64

from trellis_mv.cascade import fit_resolution
from trellis_mv.config import Settings
from trellis_mv.standin import NOT_DONE, StandInGenerator
from trellis_mv.worker import run_job

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("requested", "tokens", "resolution", "tried"),
    [
        (1536, {1536: 20_000}, 1536, [1536]),
        (1536, {1536: 49_152, 1408: 49_151}, 1408, [1536, 1408]),
        (1536, {1536: 90_000, 1408: 70_000, 1280: 52_000, 1152: 40_000}, 1152, [1536, 1408, 1280, 1152]),
        (1536, {1536: 99_000, 1408: 90_000, 1280: 80_000, 1152: 70_000, 1024: 60_000}, 1024, [1536, 1408, 1280, 1152, 1024]),
        (1024, {1024: 60_000}, 1024, [1024]),  # 1024_cascade never goes lower, as in trellis2
    ],
)
def test_the_cascade_lowers_its_resolution_by_128_until_the_tokens_fit(requested, tokens, resolution, tried):
    fit = fit_resolution(requested, lambda r: range(tokens[r]))
    assert fit.resolution == resolution
    assert fit.tried == tuple((r, tokens[r]) for r in tried)
    assert fit.structure == range(tokens[resolution])


def test_the_warning_says_what_ran_and_why():
    fit = fit_resolution(1536, lambda r: range({1536: 61_234, 1408: 50_000, 1280: 30_000}[r]))
    assert fit.warnings("1536_cascade") == [
        "pipeline_type 1536_cascade ran at resolution 1280, not 1536: the shape has 61234 tokens at 1536, over the "
        "49152 one pass of the cascade allows"
    ]
    assert fit_resolution(1536, lambda r: range(10)).warnings("1536_cascade") == []
    lowest = fit_resolution(1536, lambda r: range(60_000))
    assert lowest.warnings("1536_cascade")[0].endswith("(still 60000 at 1024, the lowest resolution the cascade goes to)")


def job(pipeline_type: str) -> dict:
    return {"id": "job-c", "input": {"images": [png_b64((32, 32))], "seed": 5, "pipeline_type": pipeline_type,
                                     "output": {"type": "base64"}}}


@pytest.mark.parametrize(
    ("pipeline_type", "max_tokens", "resolution", "warnings"),
    [
        ("512", 49152, 512, []),
        ("1024_cascade", 49152, 1024, []),
        ("1536_cascade", 49152, 1536, []),
        (
            "1536_cascade", 12_000, 1152,
            ["pipeline_type 1536_cascade ran at resolution 1152, not 1536: the shape has 18648 tokens at 1536, over the "
             "12000 one pass of the cascade allows"],
        ),
    ],
)
def test_the_answer_carries_the_resolution_used_and_the_warnings(pipeline_type, max_tokens, resolution, warnings, valid_glb, caplog):
    with caplog.at_level(logging.WARNING, logger="trellis_mv.worker"):
        answer = run_job(job(pipeline_type), settings=Settings(), generator=StandInGenerator(max_tokens=max_tokens), store=None)
    assert (answer["pipeline_type"], answer["resolution"]) == (pipeline_type, resolution)
    assert answer["warnings"][0].startswith(NOT_DONE) and answer["warnings"][1:] == warnings  # the stand-in's, then the cascade's
    assert [record.getMessage() for record in caplog.records] == [f"job job-c: {warning}" for warning in answer["warnings"]]
    valid_glb(base64.b64decode(answer["glb"]["base64"]))
