"""No payloads and no signed URLs in any log: ``--test_input``, ``--rp_serve_api`` and ``python -m trellis_mv
generate``, each with and without a bucket, with and without a preview.

The worker runs as a subprocess with our loggers at DEBUG (runpod's at its default for this worker),
the bucket on the tests' moto server. The captured output must hold no piece of the images' base64,
of the GLB's or the preview's base64, no run of 200 base64 characters at all, no PNG or glTF header
in base64 (``iVBORw0KGgo``, ``Z2xURg``), and no presigned URL's credential or signature. A control run
with ``RUNPOD_LOG_LEVEL=DEBUG`` shows that the check sees a leak when there is one. The hosted mode's
log is checked the same way in ``test_hosted.py``.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
from helpers import b64, encode, noise
from processes import ROOT, HandlerProcess, assert_clean, bucket_environment, environment, free_port, leaked, run_handler

pytestmark = pytest.mark.timeout(120)

STANDIN = "trellis_mv.standin:create"
PHOTOS = [encode(noise((48, 48), seed=seed)) for seed in (1, 2)]
IMAGES = [b64(photo) for photo in PHOTOS]
# What a payload looks like in a log, whichever payload it is.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}")
MARKERS = ("iVBORw0KGgo", "Z2xURg", "X-Amz-Signature", "X-Amz-Credential")


def assert_no_payload(log: str, *secrets: str) -> None:
    """``log`` holds none of ``secrets`` (base64 texts, URLs), no long base64 run and no marker of one."""
    assert_clean(log, *secrets)
    assert BASE64_RUN.search(log) is None, BASE64_RUN.search(log)
    assert [marker for marker in MARKERS if marker in log] == []


def job(output: dict) -> dict:
    return {"input": {"images": IMAGES, "seed": 5, "pipeline_type": "512", "output": output}}


def stored_objects(s3_endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``, by key."""
    s3 = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test",
                                         aws_secret_access_key="test", region_name="us-east-1")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


@pytest.mark.parametrize("with_bucket", [False, True], ids=["base64", "bucket"])
@pytest.mark.parametrize("preview", [False, True], ids=["glb", "preview"])
def test_a_local_job_logs_paths_keys_and_sizes_only(s3_endpoint, bucket, tmp_path, with_bucket, preview):
    env = {"TRELLIS_MV_GENERATOR": STANDIN, "TRELLIS_MV_LOG_LEVEL": "DEBUG",
           **(bucket_environment(s3_endpoint, bucket) if with_bucket else {})}
    done = run_handler("--test_input", json.dumps(job({"preview": preview})), cwd=tmp_path, **env)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    answer = json.loads(log.split("job local_test answer: ", 1)[1].splitlines()[0])
    if with_bucket:
        objects = stored_objects(s3_endpoint, bucket)
        assert sorted(objects) == sorted(answer[name]["key"] for name in ("glb", "preview") if name in answer)
        assert f"job local_test: glb uploaded as {answer['glb']['key']} ({answer['glb']['bytes']} bytes)" in log
        payloads = [b64(data) for data in objects.values()]
        assert list(tmp_path.iterdir()) == []
    else:
        files = {"glb": "local_test.glb", "preview": "local_test.preview.png"}  # in the current folder
        assert {name: answer[name]["path"] for name in files if name in answer} == \
            {name: path for name, path in files.items() if name == "glb" or preview}
        payloads = [b64((tmp_path / path).read_bytes()) for path in files.values() if (tmp_path / path).exists()]
        assert f"job local_test: glb written to local_test.glb ({answer['glb']['bytes']} bytes)" in log
    assert ("preview" in answer) == preview and len(payloads) == 1 + preview
    assert_no_payload(log, *IMAGES, *payloads)


def test_the_preview_goes_to_preview_out(tmp_path):
    sheet = tmp_path / "sheets" / "chair.png"
    sheet.parent.mkdir()
    done = run_handler("--test_input", json.dumps(job({"preview": True})), "--preview_out", str(sheet), cwd=tmp_path,
                       TRELLIS_MV_GENERATOR=STANDIN)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["local_test.glb", "sheets"]
    assert f"job local_test: preview written to {sheet} ({sheet.stat().st_size} bytes)" in log
    assert_no_payload(log, *IMAGES, b64(sheet.read_bytes()))


def test_the_check_sees_runpods_own_debug_log_of_the_input(tmp_path):
    done = run_handler("--test_input", json.dumps(job({"type": "base64"})), cwd=tmp_path, TRELLIS_MV_GENERATOR=STANDIN,
                       RUNPOD_LOG_LEVEL="DEBUG")
    assert done.returncode == 0
    log = done.stdout + done.stderr
    assert leaked(log, IMAGES[0]) and BASE64_RUN.search(log) and "iVBORw0KGgo" in log


@pytest.mark.parametrize("with_bucket", [False, True], ids=["base64", "bucket"])
def test_the_local_api_logs_no_payload_and_no_url(s3_endpoint, bucket, with_bucket):
    port = free_port()
    env = environment(TRELLIS_MV_GENERATOR=STANDIN, TRELLIS_MV_LOG_LEVEL="DEBUG",
                      **(bucket_environment(s3_endpoint, bucket) if with_bucket else {}))
    server = HandlerProcess("--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port), env=env)
    try:
        assert server.wait_for("Uvicorn running on"), server.output()
        url = f"http://127.0.0.1:{port}"
        answers = [requests.post(f"{url}/runsync", json=job({"preview": preview}), timeout=60).json()
                   for preview in (False, True)]
        queued = requests.post(f"{url}/run", json=job({"preview": True}), timeout=30).json()
        answers.append(requests.post(f"{url}/status/{queued['id']}", timeout=60).json())
    finally:
        server.stop()
    assert [answer["status"] for answer in answers] == ["COMPLETED"] * 3, answers
    outputs = [answer["output"] for answer in answers]
    stored = [output[name] for output in outputs for name in ("glb", "preview") if name in output]
    assert len(stored) == 5
    secrets = [item["url"] if with_bucket else item["base64"] for item in stored]
    if not with_bucket:
        assert base64.b64decode(outputs[0]["glb"]["base64"])[:4] == b"glTF"
    assert_no_payload(server.output(), *IMAGES, *secrets)


@pytest.mark.parametrize("with_bucket", [False, True], ids=["no-bucket", "bucket-set"])
@pytest.mark.parametrize("preview", [False, True], ids=["glb", "preview"])
def test_the_local_command_logs_no_payload(s3_endpoint, bucket, tmp_path, with_bucket, preview):
    photos = []
    for index, data in enumerate(PHOTOS):
        photos.append(tmp_path / f"view{index}.png")
        photos[-1].write_bytes(data)
    env = environment(TRELLIS_MV_GENERATOR=STANDIN, TRELLIS_MV_LOG_LEVEL="DEBUG", PYTHONPATH=str(ROOT),
                      **(bucket_environment(s3_endpoint, bucket) if with_bucket else {}))
    output = tmp_path / "chair.glb"
    done = subprocess.run(
        [sys.executable, "-m", "trellis_mv", "generate", *map(str, photos), "-o", str(output), "--steps", "2", "-v",
         *(["--preview"] if preview else [])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    files = [output, *([output.with_suffix(".preview.png")] if preview else [])]
    assert "job local done: 2 views" in log and all(Path(path).is_file() for path in files)
    assert_no_payload(log, *IMAGES, *(b64(path.read_bytes()) for path in files))
