"""handler.py as RunPod runs it: ``--test_input`` (a file or a JSON string) and runpod's local HTTP API.

Each test starts ``python handler.py`` as a subprocess with the CPU test generator configured through
``TRELLIS_MV_GENERATOR`` and talks to it the way a client would. The API server binds to loopback; a
test waits for uvicorn's "running" line on its output, not for a fixed time.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import requests
from helpers import png_b64

from handler import read_test_input_file, throttled

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
CPU_GENERATOR = "cpu_generator:create"


def environment(**extra: str) -> dict[str, str]:
    """A clean environment: no bucket, no proxies, the tests folder importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BUCKET_", "TRELLIS_MV_", "RUNPOD_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def run_handler(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "handler.py", *args], cwd=ROOT, env=environment(**env), capture_output=True, text=True, timeout=50
    )


def test_test_input_file_paths_are_read_and_json_strings_pass_through(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"input": {"images": []}}')
    assert read_test_input_file(["h.py", "--test_input", str(path)]) == ["h.py", "--test_input", '{"input": {"images": []}}']
    assert read_test_input_file(["h.py", f"--test_input={path}"]) == ["h.py", '--test_input={"input": {"images": []}}']
    assert read_test_input_file(["h.py", "--test_input", ' {"input": {}}']) == ["h.py", "--test_input", ' {"input": {}}']
    assert read_test_input_file(["h.py", "--rp_serve_api"]) == ["h.py", "--rp_serve_api"]


def test_the_repository_test_input_runs_with_the_cpu_generator():
    done = run_handler("--test_input", "test_input.json", TRELLIS_MV_GENERATOR=CPU_GENERATOR)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "job local_test done: 2 views" in done.stdout + done.stderr


def test_a_json_string_still_works_and_an_error_answer_exits_non_zero():
    bad = json.dumps({"input": {"images": [png_b64()], "pipeline_type": "2048"}})
    done = run_handler("--test_input", bad, TRELLIS_MV_GENERATOR=CPU_GENERATOR)
    assert done.returncode == 1
    assert (
        'failed with error: pipeline_type: "2048" is not allowed; use "512", "1024", "1024_cascade" or "1536_cascade"'
        in done.stdout
    )


def test_without_cuda_a_valid_job_fails_with_a_clear_message():
    done = run_handler("--test_input", "test_input.json")
    assert done.returncode == 1
    assert "this worker needs a CUDA GPU" in done.stdout + done.stderr


def test_a_missing_file_is_named():
    done = run_handler("--test_input", "no-such-file.json")
    assert done.returncode != 0
    assert "--test_input: 'no-such-file.json' is neither a JSON object nor a file" in done.stderr


def test_bad_settings_stop_the_start_with_the_variable_named():
    done = run_handler("--test_input", "test_input.json", TRELLIS_MV_MAX_VIEWS="many")
    assert done.returncode == 1
    assert "TRELLIS_MV_MAX_VIEWS: expected an integer, got 'many'" in done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """``handler.py --rp_serve_api`` on loopback, with the CPU generator; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)],
        cwd=ROOT, env=environment(TRELLIS_MV_GENERATOR=CPU_GENERATOR), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()  # the process ended: let the fixture report why

    threading.Thread(target=read, daemon=True).start()
    ready.wait(45)
    if process.poll() is not None or not any("Uvicorn running on" in line for line in lines):
        process.kill()
        pytest.fail("the API server did not start:\n" + "".join(lines))
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)
    process.stdout.close()


def job_input(**fields) -> dict:
    return {"images": [png_b64((32, 32), (220, 120, 20, 255)), png_b64((32, 32), (20, 120, 220, 255))], "seed": 3, **fields}


def test_runsync_answers_a_valid_glb(api, valid_glb):
    response = requests.post(f"{api}/runsync", json={"input": job_input()}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "COMPLETED", body
    output = body["output"]
    data = base64.b64decode(output["glb"]["base64"])
    assert (output["seed"], output["views"], output["glb"]["bytes"]) == (3, 2, len(data))
    valid_glb(data)


def test_run_then_status_answers_the_same_glb(api, valid_glb):
    sync = requests.post(f"{api}/runsync", json={"input": job_input()}, timeout=30).json()["output"]
    queued = requests.post(f"{api}/run", json={"input": job_input()}, timeout=30).json()
    assert queued["status"] == "IN_PROGRESS"
    # runpod's local API takes POST here; the hosted /status takes GET
    status = requests.post(f"{api}/status/{queued['id']}", timeout=30).json()
    assert status["status"] == "COMPLETED", status
    assert status["output"]["glb"]["sha256"] == sync["glb"]["sha256"]
    valid_glb(base64.b64decode(status["output"]["glb"]["base64"]))


def test_a_bad_job_fails_with_its_message_and_the_server_goes_on(api, valid_glb):
    failed = requests.post(f"{api}/runsync", json={"input": job_input(images=[])}, timeout=30).json()
    assert failed == {"id": failed["id"], "status": "FAILED", "error": "images: 0 images given; send 1 to 8"}
    healthy = requests.post(f"{api}/runsync", json={"input": job_input()}, timeout=30).json()
    assert healthy["status"] == "COMPLETED"
    valid_glb(base64.b64decode(healthy["output"]["glb"]["base64"]))


def test_progress_sends_every_stage_but_throttles_steps():
    sent: list[dict] = []
    now = [0.0]
    progress = throttled(sent.append, every_s=1.0, clock=lambda: now[0])
    for update, at in [
        ({"stage": "generate"}, 0.0),
        ({"stage": "sparse_structure", "step": 1, "steps": 12}, 0.1),
        ({"stage": "sparse_structure", "step": 2, "steps": 12}, 0.5),
        ({"stage": "sparse_structure", "step": 3, "steps": 12}, 1.2),
        ({"stage": "export"}, 1.3),
    ]:
        now[0] = at
        progress(update)
    assert [update.get("step") for update in sent] == [None, 1, 3, None]
