"""``python -m trellis_mv remote IMAGE... --endpoint ID [-o out.glb] [options]``: a deployed endpoint, from your machine.

The job input is the one ``generate`` builds (``cli.job_input``, the same options), sent with
runpod's own SDK: ``runpod.Endpoint(ID).run`` posts it to ``<API base>/<ID>/run`` with the key from
``RUNPOD_API_KEY``, and the SDK's client asks ``/status/<job id>`` once a second. While the job runs,
the status's ``output`` is the worker's latest progress update (``{"stage": "export"}``,
``{"stage": "shape_slat", "step": 7, "steps": 12}``: ``trellis_mv.progress``), which feeds the
progress bars ``generate`` draws. When the job is done, the GLB and the preview come from the
answer's presigned URLs (downloaded with urllib) or its base64, are checked against the answer's
``bytes`` and ``sha256``, and are written with the report as ``generate`` writes them.

Exit status: 0 when the files are written; 1 when the job failed (the worker's message, as
``generate`` prints it), was cancelled or stopped on the endpoint, ran past ``--timeout`` (it is then
cancelled), when the API could not be reached or a file not fetched; 130 on Ctrl-C and 143 on
SIGTERM (``kill``, ``timeout``), after cancelling the job on the endpoint. The API base is
``--api-base``, else ``RUNPOD_ENDPOINT_BASE_URL`` (the variable runpod itself reads), else runpod's
``https://api.runpod.ai/v2``.

Ctrl-C (SIGINT) cancels from the moment the command sends the job until the files are fetched.
Ctrl-C while ``/run`` is on its way gives its answer up to ``RUN_GRACE_S`` seconds to bring the job's
id, so that the job it made is cancelled too (Ctrl-C again: leave at once); Ctrl-C while the files
download leaves the job as it ended and writes nothing. SIGTERM is taken as Ctrl-C is, so that a job
is not left running (and billed) by a command that was stopped. A command started with SIGINT
ignored (``&`` in a non-interactive shell, which shields background commands from the Ctrl-C meant
for the one in front) keeps it ignored, as Python leaves it: SIGTERM stops it.

``--local-api URL`` calls runpod's development API instead (``python handler.py --rp_serve_api``),
with the same SDK client. Its routes differ from the hosted ones: no endpoint id in the path, and
``POST /status/<id>`` runs the job and answers when it is done, so there is no progress, and there
is no ``/cancel``: a job interrupted or timed out there runs on to its end.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import runpod
from runpod.endpoint.runner import Job, RunPodClient

from .cli import ProgressBars, write_files

__all__ = ["Api", "TimedOut", "hosted_api", "local_api", "remote", "wait"]

POLL_S = 1.0  # how often /status is asked, as runpod's own Job.output asks it
RUN_BODY_CAP = 10_000_000  # RunPod refuses a /run request above 10 MB (README, "Payload limits")
DOWNLOAD_TIMEOUT_S = 300.0
RUN_GRACE_S = 10.0  # after a Ctrl-C during /run, how long its answer may take to bring the job id (the SDK's own timeout)
WAKE_S = 0.1  # how often the main thread looks up from waiting on /run's thread, to take a Ctrl-C there
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
FILES = {"glb": "GLB", "preview": "preview"}


@dataclass(frozen=True)
class Api:
    """One endpoint's job operations, and how messages name the endpoint.

    ``submit(job_input)`` answers the job id; ``status(job_id, seconds)`` the job's status (``seconds``:
    how long the call may take, None for no limit); ``cancel(job_id)`` is None where the API cannot.
    """

    name: str
    submit: Callable[[dict[str, Any]], str]
    status: Callable[[str, float | None], dict[str, Any]]
    cancel: Callable[[str], Any] | None


class TimedOut(Exception):
    """``--timeout`` passed after ``waited`` seconds; ``status`` is the job's last known state (None: no answer)."""

    def __init__(self, waited: float, status: str | None):
        super().__init__(waited, status)
        self.waited, self.status = waited, status


def hosted_api(endpoint_id: str, api_key: str, base_url: str | None = None) -> Api:
    """RunPod's job API through runpod's SDK, at ``base_url`` (None: runpod's ``endpoint_url_base``).

    The cancel goes through a client of its own: a Ctrl-C can land inside the status client's
    connection pool, between a lock's acquisition and the block that releases it (Python 3.11 raises
    it there; urllib3's pool is a ``queue.LifoQueue``), and a cancel through that pool would then wait
    for ever: in CI once, a command waited so 30 s after its Ctrl-C, its job not cancelled.
    """
    endpoint = runpod.Endpoint(endpoint_id, api_key=api_key)
    client = endpoint.rp_client
    if base_url:
        client.endpoint_url_base = base_url.rstrip("/")

    def cancel(job_id: str) -> Any:
        own = RunPodClient(api_key=api_key)
        own.endpoint_url_base = client.endpoint_url_base
        return Job(endpoint_id, job_id, own).cancel()

    return Api(
        name=f"endpoint {endpoint_id}",
        submit=lambda job_input: endpoint.run({"input": job_input}).job_id,
        # the SDK's Job.status() keeps only the state's name; the status itself carries the progress
        status=lambda job_id, _seconds: client.get(f"{endpoint_id}/status/{job_id}"),
        cancel=cancel,
    )


def local_api(url: str) -> Api:
    """runpod's development API (``handler.py --rp_serve_api``) at ``url``, through the SDK's client."""
    client = RunPodClient(api_key="none")  # the client wants a key; the development API reads none
    client.endpoint_url_base = url.rstrip("/")
    return Api(
        name=f"the local API at {url}",
        submit=lambda job_input: client.post("run", {"input": job_input})["id"],
        status=lambda job_id, seconds: client.post(f"status/{job_id}", None, timeout=seconds),
        cancel=None,
    )


def wait(api: Api, job_id: str, *, timeout_s: float | None, progress: Callable[[dict[str, Any]], None],
         poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Ask for the job's status until it ends, and answer the last one.

    Each new progress update goes to ``progress`` once (``{"stage": "in queue"}`` while the job waits
    for a worker). Raises :class:`TimedOut` once ``timeout_s`` seconds have passed.
    """
    start = clock()
    deadline = None if timeout_s is None else start + timeout_s
    shown, status = None, None
    while True:
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            raise TimedOut(clock() - start, status)
        try:
            state = api.status(job_id, left)
        except requests.ReadTimeout:
            if deadline is None or clock() < deadline:
                raise
            raise TimedOut(clock() - start, status) from None
        status = state["status"]
        if status in ENDED:
            return state
        update = _update(state)
        if update is not None and update != shown:
            progress(update)
            shown = update
        sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - clock())))


def remote(args: argparse.Namespace, job_input: dict[str, Any], output: Path, env: Mapping[str, str]) -> int:
    """Run ``job_input`` where ``args`` says (``--endpoint`` or ``--local-api``) and write its files; the exit status."""
    if args.local_api:
        api = local_api(args.local_api)
    else:
        api = hosted_api(args.endpoint, env["RUNPOD_API_KEY"], args.api_base or env.get("RUNPOD_ENDPOINT_BASE_URL"))
        size = len(json.dumps({"input": job_input}))
        if size > RUN_BODY_CAP:
            return _failed(f"the request is {size:,} bytes (the images in base64), over the {RUN_BODY_CAP:,} bytes "
                           "RunPod accepts for /run: send fewer or smaller photos")
    return _run(api, args, job_input, output)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a Ctrl-C would be: the same paths cancel the job."""


def _terminated(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _stopped(stop: KeyboardInterrupt) -> tuple[str, int]:
    """How a stop is told, and its exit status: Ctrl-C 130, SIGTERM 143 (128 + the signal)."""
    return ("terminated", 143) if isinstance(stop, _Terminated) else ("interrupted", 130)


def _run(api: Api, args: argparse.Namespace, job_input: dict[str, Any], output: Path) -> int:
    """``_run_taking_stops`` with SIGTERM taken as Ctrl-C (where this is the main thread, which signals reach)."""
    if threading.current_thread() is not threading.main_thread():
        return _run_taking_stops(api, args, job_input, output)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _run_taking_stops(api, args, job_input, output)
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run_taking_stops(api: Api, args: argparse.Namespace, job_input: dict[str, Any], output: Path) -> int:
    """Send the job, wait for it and write its files (``remote``'s work, with Ctrl-C taken); the exit status."""
    sending = _Sending(api, job_input)
    try:
        sending.start()
        with ProgressBars() as bars:
            job_id = sending.job_id()
            print(f"job {job_id} sent to {api.name}", file=sys.stderr, flush=True)
            state = wait(api, job_id, timeout_s=args.timeout, progress=bars)
    except KeyboardInterrupt as stop:  # wherever it came, the job id is the one /run's thread brought, if any
        told, status = _stopped(stop)
        print(f"{told}: {_cancel(api, sending.job_id_after_ctrl_c(RUN_GRACE_S))}", file=sys.stderr, flush=True)
        return status
    except TimedOut as late:
        waited = f"after {late.waited:.1f} s (--timeout {args.timeout:g})"
        said = f"job {job_id} still {late.status} {waited}" if late.status else f"no answer for job {job_id} {waited}"
        return _failed(f"{said}; {_cancel(api, job_id)}")
    except (requests.RequestException, RuntimeError) as error:  # runpod's SDK raises RuntimeError on a 401
        return _failed(f"{api.name}: {error}")
    if state["status"] == "FAILED":
        return _failed(str(state.get("error") or f"job {job_id} failed without a message"))
    if state["status"] == "CANCELLED":
        return _failed(f"job {job_id} was cancelled on {api.name}")
    if state["status"] == "TIMED_OUT":
        return _failed(f"job {job_id} ran past {api.name}'s execution timeout and was stopped there")
    answer = state["output"]
    try:
        files = {key: _fetched(key, answer[key]) for key in FILES if key in answer}
    except (OSError, ValueError) as error:
        return _failed(str(error))
    except KeyboardInterrupt as stop:
        told, status = _stopped(stop)
        print(f"{told}: job {job_id} had completed on {api.name}; its files were not fetched, nothing was written",
              file=sys.stderr, flush=True)
        return status
    for line in write_files(answer, files, output):
        print(line)
    return 0


class _Sending:
    """/run, from a thread of its own: a Ctrl-C in the main thread must not cut the request off
    unanswered, since the job it made would then run on with no id to cancel it by."""

    def __init__(self, api: Api, job_input: dict[str, Any]):
        self.api, self.job_input = api, job_input
        self.started = False
        self.answer: dict[str, Any] = {}  # "id", or "error": what the request raised
        self.done = threading.Event()

    def start(self) -> None:
        self.started = True
        threading.Thread(target=self._post, name="run", daemon=True).start()

    def job_id(self) -> str:
        """The job's id, once /run has answered; the request's error is raised here."""
        _wait_for(self.done, None)
        if "error" in self.answer:
            raise self.answer["error"]
        return self.answer["id"]

    def job_id_after_ctrl_c(self, grace_s: float) -> str | None:
        """After a Ctrl-C: the job's id, waiting up to ``grace_s`` for /run's answer where it is still on
        its way; None where no id came (not sent, an error, no answer in time, a second Ctrl-C)."""
        if self.started and not self.done.is_set():
            print(f"interrupted while sending the job: waiting up to {grace_s:g} s for {self.api.name} to answer with "
                  "its id, to cancel it (Ctrl-C again: leave at once)", file=sys.stderr, flush=True)
            try:
                _wait_for(self.done, grace_s)
            except KeyboardInterrupt:
                pass
        return self.answer.get("id")

    def _post(self) -> None:
        try:
            self.answer["id"] = self.api.submit(self.job_input)
        except BaseException as error:  # noqa: BLE001 (handed to the main thread, which raises it)
            self.answer["error"] = error
        finally:
            self.done.set()


def _wait_for(event: threading.Event, timeout_s: float | None) -> bool:
    """Wait for ``event`` (at most ``timeout_s``), in slices of ``WAKE_S``: a SIGINT the kernel hands to
    another thread is only taken by the main thread once it runs Python again, not while it blocks."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not event.wait(WAKE_S if deadline is None else max(0.0, min(WAKE_S, deadline - time.monotonic()))):
        if deadline is not None and time.monotonic() >= deadline:
            return False
    return True


def _update(state: dict[str, Any]) -> dict[str, Any] | None:
    """What a status says about progress: the worker's latest update, or that the job waits in the queue."""
    if state["status"] == "IN_QUEUE":
        return {"stage": "in queue"}
    update = state.get("output")
    return update if isinstance(update, dict) and "stage" in update else None


def _fetched(key: str, described: dict[str, Any]) -> bytes:
    """The file an answer describes: its base64 decoded, or downloaded from its URL; checked against its sha256."""
    if "base64" in described:
        data = base64.b64decode(described["base64"])
    else:
        try:
            with urllib.request.urlopen(described["url"], timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except (OSError, http.client.HTTPException) as error:  # urllib's text never holds the URL (a signature)
            raise OSError(f"could not download the {FILES[key]} ({described['key']}): {error}") from None
    if len(data) != described["bytes"] or hashlib.sha256(data).hexdigest() != described["sha256"]:
        raise ValueError(f"the {FILES[key]} fetched is {len(data):,} bytes that are not the {described['bytes']:,} "
                         f"bytes of sha256 {described['sha256'][:12]}... the answer describes")
    return data


def _cancel(api: Api, job_id: str | None) -> str:
    """Cancel the job where the API can; what became of it, in words."""
    if job_id is None:
        return f"{api.name} had not answered with a job id: nothing to cancel (RunPod's console lists the endpoint's jobs)"
    if api.cancel is None:
        return f"job {job_id} runs on to its end there: runpod's local API cannot cancel a job"
    try:
        api.cancel(job_id)
    except (requests.RequestException, RuntimeError) as error:
        return f"could not cancel job {job_id} ({error}): cancel it in RunPod's console"
    except KeyboardInterrupt:  # a second Ctrl-C: leave at once
        return f"left without cancelling job {job_id}: cancel it in RunPod's console"
    return f"cancelled job {job_id} on {api.name}"


def _failed(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
