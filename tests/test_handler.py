"""handler.py as a user runs it: ``--test_input`` (a file or a JSON string) and runpod's local HTTP API.

Each test starts ``python handler.py`` as a subprocess with the packaged stand-in generator
(``TRELLIS_MV_GENERATOR=trellis_mv.standin:create``, no ``PYTHONPATH``) and talks to it the way a
client would. The API server binds to loopback; a test waits for uvicorn's "running" line on its
output, not for a fixed time.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
import requests
from helpers import png_b64
from processes import bucket_environment, run_handler

from handler import quiet_runpod, read_test_input_file, runpod_mode, take_local_options
from trellis_mv.progress import OrderedSender, throttled

pytestmark = pytest.mark.timeout(60)

STANDIN = "trellis_mv.standin:create"


def test_test_input_file_paths_are_read_and_json_strings_pass_through(tmp_path):
    path = tmp_path / "job.json"
    path.write_text('{"input": {"images": []}}')
    assert read_test_input_file(["h.py", "--test_input", str(path)]) == ["h.py", "--test_input", '{"input": {"images": []}}']
    assert read_test_input_file(["h.py", f"--test_input={path}"]) == ["h.py", '--test_input={"input": {"images": []}}']
    assert read_test_input_file(["h.py", "--test_input", ' {"input": {}}']) == ["h.py", "--test_input", ' {"input": {}}']
    assert read_test_input_file(["h.py", "--rp_serve_api"]) == ["h.py", "--rp_serve_api"]


@pytest.mark.parametrize(
    ("argv", "rest", "glb", "preview"),
    [
        (["h.py", "--test_input", "{}", "--glb_out", "a/b.glb"], ["h.py", "--test_input", "{}"], Path("a/b.glb"), None),
        (["h.py", "--glb_out=x.glb", "--preview_out", "x.png"], ["h.py"], Path("x.glb"), Path("x.png")),
        (["h.py", "--rp_serve_api"], ["h.py", "--rp_serve_api"], None, None),
    ],
)
def test_the_file_options_are_ours_and_runpod_never_sees_them(argv, rest, glb, preview):
    args, ours = take_local_options(argv)
    assert (args, ours.glb_out, ours.preview_out) == (rest, glb, preview)


def test_help_lists_our_options_with_their_defaults_and_runpods():
    done = run_handler("--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "usage: python handler.py" in text
    assert "--glb_out PATH the GLB, when answered as base64 (no bucket, or output.type base64); default: <job id>.glb" in text
    assert ("--preview_out PATH the preview sheet (output.preview true), when answered as base64 like the GLB; "
            "default: <job id>.preview.png") in text
    assert "--rp_serve_api" in text and "--test_input TEST_INPUT" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--glb-out", "x.glb"], "unrecognized arguments: --glb-out x.glb"),
        (["--rp_api_port", "eighty"], "argument --rp_api_port: invalid int value: 'eighty'"),
        (["--test_input", "no-such-file.json"], "--test_input: 'no-such-file.json' is neither a JSON object nor a file"),
        (["--test_input", '{"input": '], "--test_input: the JSON text is not valid JSON: Expecting value: line 1 column 11"),
        (["--test_input", "test_input.json", "--glb_out"], "argument --glb_out: expected one argument"),
    ],
)
def test_a_bad_command_line_exits_with_status_2_before_the_worker_is_built(args, message):
    done = run_handler(*args, TRELLIS_MV_GENERATOR="no_such_module:create")  # building the worker would fail with 1
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("usage: python handler.py") and message in done.stderr


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["h.py"], {}, ["h.py", "--rp_log_level", "WARN"]),
        (["h.py", "--rp_log_level", "DEBUG"], {}, ["h.py", "--rp_log_level", "DEBUG"]),
        (["h.py", "--rp_log_level=INFO"], {}, ["h.py", "--rp_log_level=INFO"]),
        (["h.py"], {"RUNPOD_LOG_LEVEL": "DEBUG"}, ["h.py"]),
        (["h.py"], {"RUNPOD_DEBUG_LEVEL": "DEBUG"}, ["h.py", "--rp_log_level", "WARN"]),
    ],
)
def test_runpod_logs_at_warn_unless_the_user_chose_a_level(argv, env, expected):
    assert quiet_runpod(argv, env) == expected


@pytest.mark.parametrize(
    ("argv", "env", "mode"),
    [
        (["h.py"], {"RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:1/job-take/$ID?gpu=x"}, "hosted"),
        (["h.py"], {}, "local"),  # runpod then runs ./test_input.json
        (["h.py", "--test_input", "{}"], {"RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:1/"}, "local"),
        (["h.py", "--rp_serve_api"], {"RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:1/"}, "api"),
        (["h.py"], {"RUNPOD_REALTIME_PORT": "8080", "RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:1/"}, "api"),
    ],
)
def test_the_mode_is_the_one_runpod_will_run(argv, env, mode):
    assert runpod_mode(argv, env) == mode


def test_the_repository_test_input_writes_a_glb_file_and_prints_no_base64(tmp_path, valid_glb):
    glb = tmp_path / "chair.glb"
    done = run_handler("--test_input", "test_input.json", "--glb_out", str(glb), TRELLIS_MV_GENERATOR=STANDIN)
    assert done.returncode == 0, done.stdout + done.stderr
    log = done.stdout + done.stderr
    assert "job local_test done: 2 views" in log
    assert f"job local_test: glb written to {glb} ({glb.stat().st_size} bytes)" in log
    answer = json.loads(log.split("job local_test answer: ", 1)[1].splitlines()[0])
    assert answer["glb"]["path"] == str(glb) and "base64" not in answer["glb"]
    assert (answer["pipeline_type"], answer["resolution"]) == ("512", 512)
    assert [warning.split(":")[0] for warning in answer["warnings"]] == ["stand-in generator"]
    assert base64.b64encode(glb.read_bytes()).decode()[:64] not in log
    valid_glb(glb.read_bytes())


def test_the_glb_goes_to_the_job_id_in_the_current_folder_by_default(tmp_path, valid_glb):
    job = json.dumps({"id": "chair-1", "input": {"images": [png_b64()], "seed": 1, "pipeline_type": "512"}})
    done = run_handler("--test_input", job, cwd=tmp_path, TRELLIS_MV_GENERATOR=STANDIN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "job chair-1 done: 1 view, " in done.stdout + done.stderr
    valid_glb((tmp_path / "chair-1.glb").read_bytes())


def test_a_json_string_still_works_and_an_error_answer_exits_non_zero():
    bad = json.dumps({"input": {"images": [png_b64()], "pipeline_type": "2048"}})
    done = run_handler("--test_input", bad, TRELLIS_MV_GENERATOR=STANDIN)
    assert done.returncode == 1
    assert (
        'failed with error: pipeline_type: "2048" is not allowed; use "512", "1024", "1024_cascade" or "1536_cascade"'
        in done.stdout
    )


def test_without_cuda_a_valid_job_fails_with_a_clear_message_and_the_way_out():
    done = run_handler("--test_input", "test_input.json")
    assert done.returncode == 1
    assert (
        "this worker needs a CUDA GPU: torch.cuda.is_available() is False; run it on a GPU endpoint, or set "
        "TRELLIS_MV_GENERATOR=trellis_mv.standin:create to try it with a stand-in shape"
    ) in done.stdout + done.stderr


def test_bad_settings_stop_the_start_with_the_variable_named():
    done = run_handler("--test_input", "test_input.json", TRELLIS_MV_MAX_VIEWS="many")
    assert done.returncode == 1
    assert "TRELLIS_MV_MAX_VIEWS: expected an integer, got 'many'" in done.stderr


@pytest.mark.parametrize("mode", [["--test_input", "test_input.json"], ["--rp_serve_api", "--rp_api_port", "1"], []])
def test_a_missing_bucket_stops_the_worker_at_start_in_one_line(s3_endpoint, mode):
    env = {**bucket_environment(s3_endpoint, "no-such-bucket"), "TRELLIS_MV_GENERATOR": STANDIN}
    if not mode:  # the hosted mode, as RunPod starts it: no argument (nothing is fetched: it stops before)
        env["RUNPOD_WEBHOOK_GET_JOB"] = "http://127.0.0.1:1/job-take/$ID"
    done = run_handler(*mode, **env)
    assert done.returncode == 1, done.stdout + done.stderr
    log = done.stdout + done.stderr
    refusals = [line.split(" ", 2)[2] for line in log.splitlines() if " INFO " not in line]
    assert refusals == [f"CRITICAL trellis_mv.handler: cannot start: bucket 'no-such-bucket' at {s3_endpoint} does not exist: "
                        "create it first, or set BUCKET_NAME to a bucket that exists"], log
    assert log.rstrip().endswith("a bucket that exists") and "Traceback" not in log


def job_input(**fields) -> dict:
    return {"images": [png_b64((32, 32), (220, 120, 20, 255)), png_b64((32, 32), (20, 120, 220, 255))], "seed": 3, **fields}


def test_runsync_answers_a_valid_glb(local_api, valid_glb):
    response = requests.post(f"{local_api}/runsync", json={"input": job_input()}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "COMPLETED", body
    output = body["output"]
    data = base64.b64decode(output["glb"]["base64"])
    assert (output["seed"], output["views"], output["glb"]["bytes"]) == (3, 2, len(data))
    valid_glb(data)


def test_run_answers_in_progress_and_the_job_runs_on_the_first_status(local_api, valid_glb):
    sync = requests.post(f"{local_api}/runsync", json={"input": job_input()}, timeout=30).json()["output"]
    queued = requests.post(f"{local_api}/run", json={"input": job_input()}, timeout=30).json()
    assert queued == {"id": queued["id"], "status": "IN_PROGRESS"}
    # runpod's local API takes POST here (the hosted /status takes GET) and runs the job in this call
    status = requests.post(f"{local_api}/status/{queued['id']}", timeout=30).json()
    assert status["status"] == "COMPLETED", status
    assert status["output"]["glb"]["sha256"] == sync["glb"]["sha256"]
    valid_glb(base64.b64decode(status["output"]["glb"]["base64"]))
    # the job is gone once answered: a second /status does not find it
    again = requests.post(f"{local_api}/status/{queued['id']}", timeout=30).json()
    assert again == {"id": queued["id"], "status": "FAILED", "error": "Job ID not found"}


def test_a_bad_job_fails_with_its_message_and_the_server_goes_on(local_api, valid_glb):
    failed = requests.post(f"{local_api}/runsync", json={"input": job_input(images=[])}, timeout=30).json()
    assert failed == {"id": failed["id"], "status": "FAILED", "error": "images: 0 images given; send 1 to 8"}
    healthy = requests.post(f"{local_api}/runsync", json={"input": job_input()}, timeout=30).json()
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


def test_progress_is_posted_in_order_and_all_of_it_before_close_returns():
    posted: list[int] = []
    first_arrived, release = threading.Event(), threading.Event()

    def post(update: dict) -> None:
        if update["n"] == 0:  # the job API is slow to take the first update
            first_arrived.set()
            assert release.wait(10)
        posted.append(update["n"])

    sender = OrderedSender(post)
    sender({"n": 0})
    assert first_arrived.wait(10)
    for n in range(1, 6):
        sender({"n": n})  # queued while the first post is still in flight: the job is not held up
    assert posted == []
    release.set()
    sender.close()
    assert posted == [0, 1, 2, 3, 4, 5]
