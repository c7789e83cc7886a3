"""No payloads and no signed URLs in any log, in the local modes (``--test_input``, ``--rp_serve_api``).

The worker runs as a subprocess with a bucket on the tests' moto server and our loggers at DEBUG,
runpod's at its default for this worker; the captured output must hold no piece of the images'
base64, of the GLB's base64, nor a presigned URL's signature. A control run with
``RUNPOD_LOG_LEVEL=DEBUG`` shows that the check sees a leak when there is one. The hosted mode's
log is checked the same way in ``test_hosted.py``.
"""

from __future__ import annotations

import base64
import json
import re

import boto3
import pytest
import requests
from helpers import b64, encode, noise
from processes import SIGNATURE, HandlerProcess, assert_clean, bucket_environment, environment, free_port, leaked, run_handler

pytestmark = pytest.mark.timeout(90)

STANDIN = "trellis_mv.standin:create"
IMAGES = [b64(encode(noise((48, 48), seed=seed))) for seed in (1, 2)]


def job(output: dict) -> str:
    return json.dumps({"input": {"images": IMAGES, "seed": 5, "pipeline_type": "512", "output": output}})


def test_a_local_job_with_a_bucket_logs_the_key_not_the_url(s3_endpoint, bucket, tmp_path):
    env = {**bucket_environment(s3_endpoint, bucket), "TRELLIS_MV_GENERATOR": STANDIN, "TRELLIS_MV_LOG_LEVEL": "DEBUG"}
    done = run_handler("--test_input", job({"type": "s3"}), cwd=tmp_path, **env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    key = re.search(r"GLB uploaded as (trellis-mv/local_test/[0-9a-f]{32}\.glb)", log).group(1)
    s3 = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test",
                                         aws_secret_access_key="test", region_name="us-east-1")
    glb = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert_clean(log, *IMAGES, b64(glb))


def test_a_local_job_with_base64_output_logs_neither_images_nor_glb(tmp_path):
    done = run_handler("--test_input", job({"type": "base64"}), cwd=tmp_path, TRELLIS_MV_GENERATOR=STANDIN,
                       TRELLIS_MV_LOG_LEVEL="DEBUG")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert_clean(log, *IMAGES, b64((tmp_path / "local_test.glb").read_bytes()))


def test_the_check_sees_runpods_own_debug_log_of_the_input(tmp_path):
    done = run_handler("--test_input", job({"type": "base64"}), cwd=tmp_path, TRELLIS_MV_GENERATOR=STANDIN,
                       RUNPOD_LOG_LEVEL="DEBUG")
    assert done.returncode == 0
    assert leaked(done.stdout + done.stderr, IMAGES[0])


def test_the_local_api_logs_no_payload_and_no_url(s3_endpoint, bucket):
    port = free_port()
    env = environment(**bucket_environment(s3_endpoint, bucket), TRELLIS_MV_GENERATOR=STANDIN, TRELLIS_MV_LOG_LEVEL="DEBUG")
    server = HandlerProcess("--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port), env=env)
    try:
        assert server.wait_for("Uvicorn running on"), server.output()
        url = f"http://127.0.0.1:{port}"
        images = {"images": IMAGES, "seed": 5, "pipeline_type": "512"}
        signed = requests.post(f"{url}/runsync", json={"input": {**images, "output": {"type": "s3"}}}, timeout=30).json()
        inline = requests.post(f"{url}/runsync", json={"input": {**images, "output": {"type": "base64"}}}, timeout=30).json()
        queued = requests.post(f"{url}/run", json={"input": images}, timeout=30).json()
        status = requests.post(f"{url}/status/{queued['id']}", timeout=30).json()
    finally:
        server.stop()
    assert SIGNATURE.search(signed["output"]["glb"]["url"]) and SIGNATURE.search(status["output"]["glb"]["url"])
    assert_clean(server.output(), *IMAGES, inline["output"]["glb"]["base64"], signed["output"]["glb"]["url"])
    assert base64.b64decode(inline["output"]["glb"]["base64"])[:4] == b"glTF"
