"""One job end to end through ``run_job``: a CPU generator at the GPU seam, everything else real.

The generator runs the real multi-view sampler on tiny models and returns a textured trimesh; the GLB
goes through the real export, the Khronos validator and a real S3 server (moto, on loopback).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import re
import weakref

import pytest
import requests
import torch
from cpu_generator import CpuGenerator
from helpers import png_b64

from trellis_mv.factory import CudaRequired
from trellis_mv.config import Settings
from trellis_mv.errors import UserError, WorkerError
from trellis_mv.generator import GenerationRequest
from trellis_mv.storage import S3Store
from trellis_mv.worker import run_job

pytestmark = pytest.mark.timeout(30)

SETTINGS = Settings()
VIEWS = [png_b64((32, 32), (200, 40, 40, 255)), png_b64((32, 32), (40, 40, 200, 255)), png_b64((24, 40), (30, 160, 30))]


def job(**fields):
    return {"id": "job-1", "input": {"images": VIEWS, "seed": 7, **fields}}


class Recording:
    """Wraps a generator and keeps every request it was given."""

    def __init__(self, inner=None):
        self.inner = inner or CpuGenerator()
        self.requests: list[GenerationRequest] = []

    def generate(self, request, progress=None):
        self.requests.append(request)
        return self.inner.generate(request, progress)


class Failing:
    def __init__(self, error: Exception):
        self.error = error

    def generate(self, request, progress=None):
        raise self.error


def glb_of(answer: dict) -> bytes:
    return base64.b64decode(answer["glb"]["base64"])


@pytest.mark.parametrize("mode", ["stochastic", "multidiffusion", "concat"])
@pytest.mark.parametrize("pipeline_type", ["512", "1024_cascade"])
def test_a_job_answers_a_valid_glb(mode, pipeline_type, valid_glb):
    answer = run_job(job(mode=mode, pipeline_type=pipeline_type), settings=SETTINGS, generator=CpuGenerator(), store=None)

    data = glb_of(answer)
    assert answer["glb"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "base64": answer["glb"]["base64"]}
    assert (answer["seed"], answer["views"], answer["mode"], answer["pipeline_type"]) == (7, 3, mode, pipeline_type)
    assert answer["mesh"] == {"vertices": 642, "faces": 1280}
    assert {"validate", "decode", "generate", "export", "store", "total", "sparse_structure", "shape_slat", "tex_slat"} <= set(answer["timings"])
    report = valid_glb(data)
    assert report["info"]["totalVertexCount"] == 642
    assert report["info"]["materialCount"] == 1
    assert report["info"]["extensionsUsed"] == ["KHR_draco_mesh_compression", "EXT_texture_webp"]


def test_the_glb_is_uploaded_and_answered_as_a_url(s3_settings, valid_glb):
    answer = run_job(job(), settings=s3_settings, generator=CpuGenerator(), store=S3Store.from_settings(s3_settings))

    assert re.fullmatch(r"trellis-mv/job-1/[0-9a-f]{32}\.glb", answer["glb"]["key"])
    download = requests.get(answer["glb"]["url"], timeout=10)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == answer["glb"]["sha256"]
    assert len(download.content) == answer["glb"]["bytes"]
    valid_glb(download.content)


def test_same_seed_same_glb_and_the_seed_matters(valid_glb):
    first, again, other = (
        run_job(job(seed=seed), settings=SETTINGS, generator=CpuGenerator(), store=None) for seed in (7, 7, 8)
    )
    valid_glb(glb_of(other))
    assert first["glb"]["sha256"] == again["glb"]["sha256"]
    assert first["glb"]["sha256"] != other["glb"]["sha256"]


def test_a_random_seed_is_echoed_and_reproduces_the_glb(valid_glb):
    request = {"id": "j", "input": {"images": VIEWS[:1]}}
    first = run_job(request, settings=SETTINGS, generator=CpuGenerator(), store=None)
    again = run_job({"id": "j", "input": {"images": VIEWS[:1], "seed": first["seed"]}}, settings=SETTINGS, generator=CpuGenerator(), store=None)
    assert 0 <= first["seed"] < 2**32
    valid_glb(glb_of(first))
    assert again["glb"]["sha256"] == first["glb"]["sha256"]


def test_the_request_reaches_the_generator_as_sent(valid_glb):
    generator = Recording()
    answer = run_job(
        job(mode="multidiffusion", shape_slat={"steps": 3, "mode": "stochastic"}, preprocess={"remove_background": False}),
        settings=SETTINGS, generator=generator, store=None,
    )
    valid_glb(glb_of(answer))
    (request,) = generator.requests
    assert [image.size for image in request.images] == [(32, 32), (32, 32), (24, 40)]
    assert [image.mode for image in request.images] == ["RGB", "RGB", "RGB"]  # opaque alpha is not real alpha
    assert (request.seed, request.mode, request.remove_background) == (7, "multidiffusion", False)
    assert request.shape_slat.steps == 3
    assert [request.stage_mode(stage) for stage in ("sparse_structure", "shape_slat", "tex_slat")] == [
        "multidiffusion", "stochastic", "multidiffusion",
    ]


def test_view_weights_reach_the_sampler_normalised():
    def sha(**fields):
        answer = run_job(job(mode="multidiffusion", **fields), settings=SETTINGS, generator=CpuGenerator(), store=None)
        return answer["glb"]["sha256"]

    equal = sha()
    assert sha(view_weights=[2, 2, 2]) == equal
    assert sha(view_weights=[1, 6, 1]) == sha(view_weights=[0.5, 3, 0.5]) != equal


def test_progress_reports_every_step_in_order(valid_glb):
    updates: list[dict] = []
    answer = run_job(job(pipeline_type="1024_cascade"), settings=SETTINGS, generator=CpuGenerator(), store=None, progress=updates.append)
    valid_glb(glb_of(answer))

    stages = [update["stage"] for update in updates if "step" not in update]
    assert stages == ["validate", "decode", "generate", "export", "store"]
    steps = [(update["stage"], update["step"], update["steps"]) for update in updates if "step" in update]
    # CpuGenerator: four steps a stage; the cascade samples the shape latent twice
    assert steps == [
        *[("sparse_structure", step, 4) for step in range(1, 5)],
        *[("shape_slat", step, 4) for step in range(1, 5)] * 2,
        *[("tex_slat", step, 4) for step in range(1, 5)],
    ]


def test_a_bad_request_never_reaches_the_generator():
    generator = Recording()
    answer = run_job({"id": "j", "input": {"images": VIEWS, "seed": -1, "colour": "red"}}, settings=SETTINGS, generator=generator, store=None)
    assert answer == {
        "error": "seed: -1 is not in the range 0<=x<=4294967295; colour: unknown field; allowed: images, mode, seed, "
        "pipeline_type, sparse_structure, shape_slat, tex_slat, view_weights, preprocess, glb, output"
    }
    assert generator.requests == []


@pytest.mark.parametrize("raw", [None, [], "images", {"input": {}}])
def test_a_job_without_a_usable_input(raw):
    answer = run_job({"id": "j", "input": raw}, settings=SETTINGS, generator=Recording(), store=None)
    assert set(answer) == {"error"}
    assert answer["error"].startswith(("input: expected an object", "images: required"))


def test_without_cuda_a_valid_job_says_a_gpu_is_needed_and_an_invalid_one_says_what_is_wrong():
    no_gpu = CudaRequired("torch.cuda.is_available() is False")
    assert run_job(job(), settings=SETTINGS, generator=no_gpu, store=None) == {
        "error": "this worker needs a CUDA GPU: torch.cuda.is_available() is False; run it on a GPU endpoint, or set "
        "TRELLIS_MV_GENERATOR=trellis_mv.standin:create to try it with a stand-in shape"
    }
    assert run_job(job(mode="fast"), settings=SETTINGS, generator=no_gpu, store=None) == {
        "error": 'mode: "fast" is not allowed; use "stochastic", "multidiffusion" or "concat"'
    }


def test_our_faults_answer_a_short_id_that_is_in_the_log(caplog):
    with caplog.at_level(logging.ERROR, logger="trellis_mv.worker"):
        answer = run_job(job(), settings=SETTINGS, generator=Failing(KeyError("tex_slat_decoder")), store=None)
    match = re.fullmatch(r"internal error ([0-9a-f]{8}): KeyError: 'tex_slat_decoder'", answer["error"])
    assert match, answer
    (record,) = caplog.records
    assert match.group(1) in record.getMessage() and "Traceback (most recent call last)" in record.getMessage()
    assert "KeyError: 'tex_slat_decoder'" in record.getMessage() and record.exc_info is None
    assert set(answer) == {"error"}


class AllocatingThenFailing:
    """Holds a tensor in a frame below ``generate`` when it fails, as a flow does when the GPU runs out of memory."""

    def __init__(self, error: Exception):
        self.error, self.held = error, None

    def generate(self, request, progress=None):
        return self._stage(torch.ones(256, 256))

    def _stage(self, activations: torch.Tensor):
        self.held = weakref.ref(activations)
        raise self.error


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   KeyError("tex_slat_decoder"), UserError("images[0]", "no foreground found")])
def test_nothing_of_a_failed_job_outlives_its_answer(caplog, error):
    """The tensors a failed job held are garbage when its answer is back, even while the log keeps its records."""
    failing = AllocatingThenFailing(error)
    with caplog.at_level(logging.INFO, logger="trellis_mv.worker"):
        answer = run_job(job(), settings=SETTINGS, generator=failing, store=None)
    assert "error" in answer
    assert failing.held is not None and failing.held() is None  # no gc.collect(): nothing may hold it at all
    if not isinstance(error, UserError):
        assert "in _stage" in caplog.text  # the traceback is still in the log, as text


def test_a_worker_error_is_answered_without_its_type():
    answer = run_job(job(), settings=SETTINGS, generator=Failing(WorkerError("the shape decoder is missing")), store=None)
    assert re.fullmatch(r"internal error [0-9a-f]{8}: the shape decoder is missing", answer["error"])


@pytest.mark.parametrize(
    "error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), RuntimeError("CUDA out of memory.")]
)
def test_out_of_memory_asks_runpod_for_a_fresh_worker(error):
    answer = run_job(job(), settings=SETTINGS, generator=Failing(error), store=None)
    assert answer["refresh_worker"] is True
    assert re.fullmatch(
        r'internal error [0-9a-f]{8}: the GPU ran out of memory; try fewer views, mode "stochastic" or a smaller pipeline_type',
        answer["error"],
    )


class DeletingTheBucket:
    """The stand-in, deleting the bucket while it generates: the start-up check passed, the upload will fail."""

    def __init__(self, client, bucket: str):
        self.inner, self.client, self.bucket = CpuGenerator(), client, bucket

    def generate(self, request, progress=None):
        self.client.delete_bucket(Bucket=self.bucket)
        return self.inner.generate(request, progress)


def test_an_upload_failing_mid_job_is_a_storage_error_naming_the_bucket_and_the_worker_goes_on(s3_settings, valid_glb, caplog):
    store = S3Store.from_settings(s3_settings)
    store.check()  # the bucket is there when the worker starts
    bucket = s3_settings.bucket_name
    with caplog.at_level(logging.INFO, logger="trellis_mv"):
        failed = run_job(job(), settings=s3_settings, generator=DeletingTheBucket(store.client, bucket), store=store)
    assert failed == {"error": f"storage error: upload to bucket '{bucket}' failed: NoSuchBucket (The specified bucket "
                               "does not exist); the worker's storage settings (BUCKET_*) or the bucket need fixing, not the request"}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == [f"job job-1 cannot run: {failed['error']}"]
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text

    store.client.create_bucket(Bucket=bucket)
    answer = run_job(job(), settings=s3_settings, generator=CpuGenerator(), store=store)
    valid_glb(requests.get(answer["glb"]["url"], timeout=10).content)


def test_a_glb_over_the_base64_cap_is_refused_with_advice():
    settings = dataclasses.replace(SETTINGS, max_base64_glb_bytes=1_000)
    answer = run_job(job(), settings=settings, generator=CpuGenerator(), store=None)
    assert answer["error"].startswith("output.type: the GLB is ")
    assert "set BUCKET_* on the endpoint to get a URL" in answer["error"]


def test_png_textures_on_request(valid_glb):
    answer = run_job(job(glb={"texture_format": "png"}), settings=SETTINGS, generator=CpuGenerator(), store=None)
    report = valid_glb(glb_of(answer))
    assert "EXT_texture_webp" not in report["info"].get("extensionsUsed", [])
