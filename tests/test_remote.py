"""``python -m trellis_mv remote``: a deployed endpoint called through runpod's SDK, on loopback.

End to end against runpod's local API (``handler.py --rp_serve_api``) and against the job API
stand-in with a hosted worker (``handler.py`` taking jobs from it, GLBs in a moto bucket and answered
as presigned URLs), both running the CPU stand-in generator: photos in, GLB, preview and report out,
and a job the worker refuses. The timeout, Ctrl-C and unauthorized paths run against the stand-in
alone, where a job waits in the queue for as long as the test needs.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from job_api import USER_KEY, JobApi
from PIL import Image
from processes import ROOT, HandlerProcess, bucket_environment, environment
from urllib3.connectionpool import HTTPConnectionPool

from trellis_mv import cli
from trellis_mv import remote as remote_module
from trellis_mv.remote import Api, TimedOut, wait

pytestmark = pytest.mark.timeout(90)

STANDIN = "trellis_mv.standin:create"
KEY = {"RUNPOD_API_KEY": USER_KEY}


@pytest.fixture(scope="module")
def hosted(s3_endpoint: str):
    """The job API stand-in with a hosted worker behind it, whose bucket makes URL answers."""
    bucket = f"remote-{uuid.uuid4().hex[:12]}"
    boto3.session.Session().client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                                   region_name="us-east-1").create_bucket(Bucket=bucket)
    api = JobApi()
    worker = HandlerProcess(env=environment(**api.environment(), **bucket_environment(s3_endpoint, bucket),
                                            TRELLIS_MV_GENERATOR=STANDIN))
    try:
        if not api.pinged.wait(60):
            pytest.fail("the worker did not start:\n" + worker.output())
        yield api
    finally:
        api.close()
        worker.stop()
        api.shutdown()


def remote(*argv: str | Path, env: dict[str, str] | None = None) -> int:
    return cli.main(["remote", *map(str, argv)], env=KEY if env is None else env)


def test_remote_takes_the_options_of_generate(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["remote", "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert [flag.option for flag in cli.flags() if flag.option not in shown] == []
    argv = ["--mode", "concat", "--steps", "8", "--shape-slat-steps", "3", "--texture-size", "1024", "--preview"]
    local = cli.parser().parse_args(["generate", "a.png", *argv])
    endpoint = cli.parser().parse_args(["remote", "a.png", "--endpoint", "e", *argv])
    assert cli.job_input(endpoint, ["<a>"], inline=False) == {
        "images": ["<a>"], "mode": "concat", "sparse_structure": {"steps": 8}, "shape_slat": {"steps": 3},
        "tex_slat": {"steps": 8}, "glb": {"texture_size": 1024}, "output": {"preview": True},
    }
    inline = cli.job_input(local, ["<a>"])
    assert inline.pop("output") == {"type": "base64", "preview": True}
    assert inline == {key: value for key, value in cli.job_input(endpoint, ["<a>"], inline=False).items() if key != "output"}


def test_the_remote_command_imports_neither_torch_nor_the_mesh_libraries():
    """It sends a job and writes files: torch (3 s of a 6 s start) and trimesh are the worker's."""
    code = "import sys, trellis_mv.cli, trellis_mv.remote; print(sorted({'torch', 'trimesh', 'trellis_mv.worker'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], KEY, "one of the arguments --endpoint --local-api is required"),
        (["--endpoint", "e", "--local-api", "http://127.0.0.1:1"], KEY, "argument --local-api: not allowed with argument --endpoint"),
        (["--endpoint", "e"], {}, "RUNPOD_API_KEY is not set: export your RunPod API key (console: Settings, API Keys) as RUNPOD_API_KEY"),
        (["--local-api", "http://127.0.0.1:1", "--api-base", "http://127.0.0.1:2"], KEY,
         "--api-base is RunPod's API, for --endpoint; --local-api names its own URL"),
        (["--endpoint", "e", "--timeout", "0"], KEY, "argument --timeout: '0' is not a positive number of seconds"),
        (["--endpoint", "e", "--timeout", "soon"], KEY, "argument --timeout: 'soon' is not a positive number of seconds"),
    ],
)
def test_a_bad_command_line_exits_with_status_2(photos, capsys, connections, argv, env, message):
    with pytest.raises(SystemExit) as exit_:
        remote(photos[0], *argv, env=env)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(message)
    assert connections == []


def test_a_request_over_runpods_cap_is_refused_before_sending(tmp_path, capsys, connections):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 7_600_000)  # 10,133,336 characters of base64
    assert remote(big, "--endpoint", "e") == 1
    assert capsys.readouterr().err.startswith("error: the request is 10,133,3")
    assert connections == []


class Script:
    """A fake endpoint answering statuses from a list, on a fake clock that each sleep moves on."""

    def __init__(self, states: list[dict]):
        self.states, self.now, self.sleeps = list(states), 0.0, []

    def status(self, job_id: str, seconds: float | None) -> dict:
        state = self.states.pop(0)
        if isinstance(state, Exception):
            self.now += seconds
            raise state
        return state

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, timeout_s: float | None = None) -> tuple[dict, list[dict]]:
        shown: list[dict] = []
        api = Api(name="fake", submit=lambda _: "j", status=self.status, cancel=None)
        state = wait(api, "j", timeout_s=timeout_s, progress=shown.append, poll_s=1.0, clock=lambda: self.now, sleep=self.sleep)
        return state, shown


def test_each_progress_update_feeds_the_bars_once():
    step = {"stage": "shape_slat", "step": 3, "steps": 12}
    script = Script([
        {"status": "IN_QUEUE"}, {"status": "IN_QUEUE"}, {"status": "IN_PROGRESS"},
        {"status": "IN_PROGRESS", "output": {"stage": "validate"}}, {"status": "IN_PROGRESS", "output": {"stage": "validate"}},
        {"status": "IN_PROGRESS", "output": step}, {"status": "COMPLETED", "output": {"glb": {}}},
    ])
    state, shown = script.wait()
    assert state == {"status": "COMPLETED", "output": {"glb": {}}}
    assert shown == [{"stage": "in queue"}, {"stage": "validate"}, step]
    assert script.sleeps == [1.0] * 6


def test_waiting_stops_at_the_timeout_with_the_last_state_known():
    script = Script([{"status": "IN_QUEUE"}] * 3 + [{"status": "IN_PROGRESS"}] * 3)
    with pytest.raises(TimedOut) as late:
        script.wait(timeout_s=2.5)
    assert (late.value.waited, late.value.status) == (2.5, "IN_QUEUE")
    assert script.sleeps == [1.0, 1.0, 0.5]


def test_a_status_call_that_outlasts_the_timeout_times_out_with_no_state():
    # runpod's local API answers /status when the job is done: the call itself runs out of time
    script = Script([requests.ReadTimeout()])
    with pytest.raises(TimedOut) as late:
        script.wait(timeout_s=4.0)
    assert (late.value.waited, late.value.status) == (4.0, None)


def test_the_local_api_makes_the_files(local_api, photos, tmp_path, capsys, valid_glb):
    output = tmp_path / "chair.glb"
    assert remote(*photos, "--local-api", local_api, "-o", output, "--seed", "3", "--steps", "2", "--preview", env={}) == 0
    out, err = capsys.readouterr()
    glb = output.read_bytes()
    valid_glb(glb)
    report = json.loads(output.with_suffix(".json").read_text())
    assert report["glb"] == {"path": str(output), "bytes": len(glb), "sha256": hashlib.sha256(glb).hexdigest()}
    assert (report["seed"], report["views"]) == (3, 2)
    sheet = output.with_suffix(".preview.png")
    assert report["preview"] == {"path": str(sheet), "bytes": sheet.stat().st_size,
                                 "sha256": hashlib.sha256(sheet.read_bytes()).hexdigest()}
    with Image.open(sheet) as image:
        assert image.format == "PNG"
    lines = out.splitlines()
    assert lines[:2] == [f"wrote {output} ({len(glb):,} bytes, 1,280 faces) and {output.with_suffix('.json')}", f"wrote {sheet}"]
    assert re.fullmatch(r"job test-[0-9a-f-]+ sent to the local API at http://127\.0\.0\.1:\d+", err.strip())


def test_a_job_the_local_worker_refuses_exits_1_with_its_message(local_api, photos, capsys):
    assert remote(photos[0], "--local-api", local_api, "--texture-size", "100", env={}) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: glb.texture_size: 100 is not in the range 512<=x<=4096"
    assert not photos[0].with_suffix(".glb").exists()


def test_the_hosted_endpoint_makes_the_files_with_progress(hosted, photos, tmp_path, capsys, valid_glb):
    output = tmp_path / "chair.glb"
    assert remote(*photos, "--endpoint", "test-endpoint", "--api-base", hosted.base, "-o", output, "--steps", "2", "--preview") == 0
    out, err = capsys.readouterr()
    job_id = re.fullmatch(r"job (\S+) sent to endpoint test-endpoint", err.splitlines()[0]).group(1)
    assert hosted.states[job_id]["status"] == "COMPLETED"
    answer = hosted.states[job_id]["output"]
    glb = output.read_bytes()
    valid_glb(glb)
    report = json.loads(output.with_suffix(".json").read_text())
    # fetched from the presigned URLs; the report keeps the keys, not the URLs
    assert report["glb"] == {"path": str(output), "bytes": len(glb), "sha256": hashlib.sha256(glb).hexdigest(),
                             "key": answer["glb"]["key"]}
    assert report["preview"]["key"] == answer["preview"]["key"] and "url" in answer["preview"]
    assert output.with_suffix(".preview.png").stat().st_size == answer["preview"]["bytes"]
    assert "X-Amz" not in output.with_suffix(".json").read_text()
    assert out.splitlines()[0].startswith(f"wrote {output} ({len(glb):,} bytes")
    # the bars showed the progress each status carried (no terminal: one line per bar)
    updates = []
    for state in hosted.answered[job_id]:
        update = {"stage": "in queue"} if state["status"] == "IN_QUEUE" else state.get("output")
        if state["status"] in ("IN_QUEUE", "IN_PROGRESS") and update and update not in updates[-1:]:
            updates.append(update)
    bars = [update["stage"] for index, update in enumerate(updates)
            if "step" not in update or index == 0 or updates[index - 1]["stage"] != update["stage"]]
    assert err.splitlines()[1:] == bars


def test_a_job_the_hosted_worker_refuses_exits_1_with_its_message(hosted, photos, capsys):
    assert remote(photos[0], "--endpoint", "test-endpoint", "--api-base", hosted.base, "--seed", "-1") == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: seed: -1 is not in the range 0<=x<=4294967295"


def test_a_timeout_says_how_long_it_waited_and_cancels_the_job(job_api, photos, capsys):
    assert remote(photos[0], "--endpoint", "test-endpoint", "--api-base", job_api.base, "--timeout", "0.3") == 1
    [job_id] = job_api.states
    assert re.fullmatch(rf"error: job {job_id} still IN_QUEUE after 0\.[3-9] s \(--timeout 0\.3\); "
                        rf"cancelled job {job_id} on endpoint test-endpoint", capsys.readouterr().err.splitlines()[-1])
    assert job_api.cancelled == [job_id] and job_api.states[job_id]["status"] == "CANCELLED"


def test_a_wrong_key_is_refused_in_runpods_words(job_api, photos, capsys):
    env = {"RUNPOD_API_KEY": "wrong", "RUNPOD_ENDPOINT_BASE_URL": job_api.base}
    assert remote(photos[0], "--endpoint", "test-endpoint", env=env) == 1
    assert capsys.readouterr().err == (
        "error: endpoint test-endpoint: 401 Unauthorized | Make sure Runpod API key is set and valid.\n")
    assert job_api.states == {}


@contextmanager
def remote_process(job_api: JobApi, photo: Path, output: Path):
    """``python -m trellis_mv remote photo`` on the stand-in, started with SIGINT at its default (as from a
    terminal) whatever this pytest was started with: in the background of a non-interactive shell
    (``.ci/run &``) the client inherited it ignored and polled on past the test's Ctrl-C. Killed and
    reaped on the way out, not left running into the next test's warnings."""
    launcher = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                "os.execv(sys.executable, [sys.executable, '-m', 'trellis_mv', *sys.argv[1:]])")
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, "remote", str(photo), "--endpoint", "test-endpoint", "-o", str(output)],
        cwd=ROOT, env=environment(**KEY, RUNPOD_ENDPOINT_BASE_URL=job_api.base), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process
    finally:
        process.kill()
        process.communicate()


def test_ctrl_c_cancels_the_job_on_the_endpoint(job_api, photos, tmp_path):
    with remote_process(job_api, photos[0], tmp_path / "x.glb") as process:
        assert job_api.asked.wait(30)  # the job is queued and the command is waiting for it
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    [job_id] = job_api.states
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == f"interrupted: cancelled job {job_id} on endpoint test-endpoint"
    assert job_api.cancelled == [job_id] and out == ""
    assert not (tmp_path / "x.glb").exists()


def test_the_cancel_does_not_wait_on_a_pool_a_ctrl_c_left_locked(job_api):
    """A Ctrl-C that lands inside urllib3's connection pool (a ``queue.LifoQueue``'s put or get) can leave
    its lock held: on Python 3.11, ad hoc, one interrupt in five landing there did. Here every live pool
    to the endpoint, the status client's among them, is locked as such a Ctrl-C leaves it."""
    api = remote_module.hosted_api("test-endpoint", USER_KEY, job_api.base)
    job_id = api.submit({"images": []})
    assert api.status(job_id, None)["status"] == "IN_QUEUE"
    gc.collect()  # the pools left are live ones: a dead one's finalizer would take its own lock
    port = urlsplit(job_api.base).port
    # type(), not isinstance(): some objects warn when their class is looked up (torch.distributed.reduce_op)
    pools = [found.pool.mutex for found in gc.get_objects()
             if type(found) is HTTPConnectionPool and found.port == port and found.pool]
    assert pools  # the status client's, at least
    for mutex in pools:
        mutex.acquire()
    try:
        cancelling = threading.Thread(target=api.cancel, args=(job_id,), daemon=True)
        cancelling.start()
        cancelling.join(timeout=30)
        waited = cancelling.is_alive()
    finally:
        for mutex in pools:
            mutex.release()
    assert not waited and job_api.cancelled == [job_id]


def test_sigterm_cancels_the_job_as_ctrl_c_does(job_api, photos, tmp_path):
    with remote_process(job_api, photos[0], tmp_path / "x.glb") as process:
        assert job_api.asked.wait(30)
        process.send_signal(signal.SIGTERM)  # what kill and timeout send
        out, err = process.communicate(timeout=30)
    [job_id] = job_api.states
    assert process.returncode == 143, err
    assert err.splitlines()[-1] == f"terminated: cancelled job {job_id} on endpoint test-endpoint"
    assert job_api.cancelled == [job_id] and out == ""


@pytest.mark.parametrize("status", [130, 143])
def test_a_taken_stop_ends_the_process_though_it_left_a_connection_pool_locked(status):
    """After the cancel, the exit: a stop raised inside urllib3's pool (its queue's lock) can leave the lock
    held, and urllib3's finalizer of that pool waited for it at exit for ever (CI, the SIGTERM test above:
    the job cancelled, the line printed, no exit in 30 s). Here a pool is locked as such a stop leaves it."""
    code = ("import urllib3; from trellis_mv.__main__ import exit_with; "
            "pool = urllib3.HTTPConnectionPool('127.0.0.1', 9); pool.pool.mutex.acquire(); "
            f"print('stopped', flush=True); exit_with({status})")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (status, "stopped\n")


def test_a_ctrl_c_the_command_does_not_take_ends_it_with_one_line(monkeypatch, capsys):
    import runpy

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt  # as during the imports, or while the files are written

    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as ended:
        runpy.run_module("trellis_mv", run_name="__main__")
    assert ended.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_ctrl_c_while_the_job_is_sent_waits_for_its_id_and_cancels_it(job_api, photos, tmp_path):
    job_api.run_answers.clear()  # the stand-in queues the job and holds /run's answer
    with remote_process(job_api, photos[0], tmp_path / "x.glb") as process:
        assert job_api.run_taken.wait(30)
        process.send_signal(signal.SIGINT)
        assert process.stderr.readline() == ("interrupted while sending the job: waiting up to 10 s for endpoint "
                                             "test-endpoint to answer with its id, to cancel it (Ctrl-C again: leave at once)\n")
        job_api.run_answers.set()
        out, err = process.communicate(timeout=30)
    [job_id] = job_api.states
    assert process.returncode == 130, err
    assert err.splitlines() == [f"interrupted: cancelled job {job_id} on endpoint test-endpoint"]
    assert job_api.cancelled == [job_id] and job_api.answered == {} and out == ""


def test_ctrl_c_while_the_glb_downloads_writes_nothing(job_api, photos, tmp_path):
    glb = b"glTF" + bytes(60)
    job_api.files["x.glb"] = glb
    job_api.file_answers.clear()  # the download waits in the stand-in
    with remote_process(job_api, photos[0], tmp_path / "x.glb") as process:
        assert job_api.run_taken.wait(30)
        [job_id] = job_api.states
        job_api.states[job_id] = {"id": job_id, "status": "COMPLETED", "output": {"glb": {
            "url": f"{job_api.url}/files/x.glb", "key": "x.glb", "bytes": len(glb), "sha256": hashlib.sha256(glb).hexdigest()}}}
        assert job_api.file_asked.wait(30)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.splitlines()[-1] == (f"interrupted: job {job_id} had completed on endpoint test-endpoint; "
                                    "its files were not fetched, nothing was written")
    assert job_api.cancelled == [] and out == ""
    assert list(tmp_path.glob("x.*")) == []


@contextmanager
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in this process, as from a terminal, whatever pytest was started with."""
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, found)


class Interrupting:
    """A fake endpoint whose /run sends the main thread SIGINT, as a Ctrl-C at once, and answers ``job_id``
    when ``answer`` is set; ``cancelled`` lists what /cancel was asked for."""

    def __init__(self, job_id: str = "j"):
        self.job_id, self.answer, self.cancelled = job_id, threading.Event(), []

    def submit(self, job_input: dict) -> str:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        if not self.answer.wait(30):
            raise requests.ConnectionError("no answer")
        return self.job_id

    def status(self, job_id: str, seconds: float | None) -> dict:
        return {"status": "IN_QUEUE"}

    def run(self) -> int:
        api = Api(name="fake", submit=self.submit, status=self.status, cancel=self.cancelled.append)
        args = cli.parser().parse_args(["remote", "a.png", "--endpoint", "e"])
        with sigint_raises():
            return remote_module._run(api, args, {}, Path("never-written.glb"))


def test_ctrl_c_as_the_job_is_sent_cancels_it_once_answered(capsys):
    endpoint = Interrupting()
    endpoint.answer.set()  # answered at once: the Ctrl-C lands anywhere from the thread's start on
    assert endpoint.run() == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted: cancelled job j on fake"
    assert endpoint.cancelled == ["j"]


def test_ctrl_c_while_the_job_is_sent_leaves_when_no_id_comes_in_the_grace_time(capsys, monkeypatch):
    monkeypatch.setattr(remote_module, "RUN_GRACE_S", 0.05)
    endpoint = Interrupting()
    try:
        assert endpoint.run() == 130
    finally:
        endpoint.answer.set()
    assert capsys.readouterr().err.splitlines() == [
        ("interrupted while sending the job: waiting up to 0.05 s for fake to answer with its id, to cancel it "
         "(Ctrl-C again: leave at once)"),
        "interrupted: fake had not answered with a job id: nothing to cancel (RunPod's console lists the endpoint's jobs)",
    ]
    assert endpoint.cancelled == []


def test_a_second_ctrl_c_during_the_cancel_leaves_at_once():
    def cancel(job_id: str) -> None:
        raise KeyboardInterrupt

    api = Api(name="fake", submit=None, status=None, cancel=cancel)
    assert remote_module._cancel(api, "j") == "left without cancelling job j: cancel it in RunPod's console"
