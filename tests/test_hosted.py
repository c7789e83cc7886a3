"""The mode RunPod runs: ``python handler.py`` taking jobs from RunPod's job API (a loopback stand-in).

One worker process serves a sequence of jobs the way an endpoint would: a good job answered with a
URL, one answered with base64, a bad one, one that runs the GPU out of memory (the faulty test
generator's ``OOM_SEED``) and one after it. Checked: every result as posted, the progress updates
(stage starts in order, steps throttled, all before the result), ``stopPod`` after the OOM, the
heartbeat, a clean stop on SIGTERM, and a log with no payload and no signed URL.
"""

from __future__ import annotations

import base64
import re

import pytest
import requests
from cpu_generator import OOM_SEED
from helpers import b64, encode, noise
from processes import ROOT, HandlerProcess, assert_clean, bucket_environment, environment

pytestmark = pytest.mark.timeout(120)

IMAGES = [b64(encode(noise((48, 48), seed=seed))) for seed in (3, 4)]
STAGES = ["validate", "decode", "generate", "export", "store"]


def job(job_id: str, **fields) -> dict:
    return {"id": job_id, "input": {"images": IMAGES, "pipeline_type": "512", **fields}}


def test_the_hosted_worker_answers_jobs_from_the_job_api(job_api, s3_endpoint, bucket, valid_glb):
    env = environment(**job_api.environment(), **bucket_environment(s3_endpoint, bucket),
                      TRELLIS_MV_GENERATOR="cpu_generator:create_faulty", TRELLIS_MV_LOG_LEVEL="DEBUG",
                      PYTHONPATH=str(ROOT / "tests"))
    worker = HandlerProcess(env=env)
    try:
        assert job_api.pinged.wait(60), worker.output()
        answers = {}
        for sent in [
            job("good-url", seed=1),
            job("good-base64", seed=2, output={"type": "base64"}),
            job("bad", seed=-1),
            job("oom", seed=OOM_SEED),
            job("after-oom", seed=3),
        ]:
            job_api.submit(sent)
            job_id, answers[sent["id"]] = job_api.result()
            assert job_id == sent["id"]
    finally:
        job_api.close()  # its long polls answer at once from now on, so the worker can stop
        exit_code = worker.stop()
    log = worker.output()
    assert exit_code == 0, log

    url = answers["good-url"]["output"]["glb"]["url"]
    assert set(answers["good-url"]) == {"output"}
    valid_glb(requests.get(url, timeout=10).content)
    glb = base64.b64decode(answers["good-base64"]["output"]["glb"]["base64"])
    valid_glb(glb)
    assert answers["bad"] == {"error": "seed: -1 is not in the range 0<=x<=4294967295"}
    assert answers["oom"]["stopPod"] is True
    assert re.fullmatch(r"internal error [0-9a-f]{8}: the GPU ran out of memory; .*", answers["oom"]["error"])
    assert set(answers["oom"]) == {"error", "stopPod"}
    valid_glb(requests.get(answers["after-oom"]["output"]["glb"]["url"], timeout=10).content)

    for job_id, answer in answers.items():
        *progress, result = job_api.posts[job_id]
        assert result == answer  # the result is the last post: no progress update arrives after it
        updates = [post["output"] for post in progress]
        assert all(post["status"] == "IN_PROGRESS" for post in progress)
        starts = [update["stage"] for update in updates if "step" not in update]
        assert starts == (STAGES if "output" in answer else ["validate"] if job_id == "bad" else STAGES[:3])
        steps = [update for update in updates if "step" in update]
        if "output" in answer:
            # at most one denoising step a second: the stand-in's twelve steps take well under one
            assert 1 <= len(steps) <= 1 + int(answer["output"]["timings"]["generate"])
            assert steps[0] == {"stage": "sparse_structure", "step": 1, "steps": 4}
            assert updates.index(steps[0]) > starts.index("generate")

    assert job_api.unauthorized == []
    assert "Jobs in queue" not in log  # runpod's INFO lines are off, not only its DEBUG ones
    assert_clean(log, *IMAGES, answers["good-base64"]["output"]["glb"]["base64"], url)
