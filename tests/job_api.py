"""A loopback stand-in of RunPod's job API, for running ``python handler.py`` in its hosted mode and
for calling it the way a client calls an endpoint (``python -m trellis_mv remote``, runpod's SDK).

runpod's worker loop (runpod 1.12: ``rp_job``, ``rp_http``, ``rp_ping``, ``worker_state``) takes its
addresses from the environment (``environment()`` below) and talks to:

- ``GET  .../job-take/<worker>?...&job_in_progress=0|1``: long-polled; a job ``{"id", "input"}`` (200)
  or nothing (204). Here it blocks until ``submit`` queues a job or ``close`` is called.
- ``GET  .../job-stop/<worker>?...``: long-polled for ``{"jobsToStop": [...]}``; here 204 on ``close``.
- ``POST .../job-done/<worker>/<job id>?...&isStream=false``: a progress update
  ``{"status": "IN_PROGRESS", "output": ...}`` or the job's result (``{"output": ...}``, or
  ``{"error": ...}``, with ``"stopPod": true`` when the handler asked for ``refresh_worker``), as JSON
  text; kept per job in arrival order.
- ``GET  .../ping/<worker>?job_id=...&runpod_version=...``: the heartbeat, from a process of its own.

Every request must carry ``RUNPOD_AI_API_KEY`` as its ``Authorization`` header. The client's side,
under the same base (``<base>/v2/test-endpoint``), with ``Authorization: Bearer <USER_KEY>``:

- ``POST .../run`` with ``{"input": ...}``: queues the job for the worker; ``{"id", "status": "IN_QUEUE"}``.
  ``run_taken`` is set once the job is queued; the answer waits for ``run_answers`` (set unless a test
  clears it, to hold a client inside its /run).
- ``GET  .../status/<job id>``: ``IN_QUEUE`` until a worker takes it, then ``IN_PROGRESS`` with the
  worker's latest progress update as ``output`` (as RunPod shows ``progress_update``), then
  ``COMPLETED`` with ``output`` or ``FAILED`` with ``error``; or ``CANCELLED``. Every answer is kept.
- ``POST .../cancel/<job id>``: recorded; the job is ``CANCELLED`` from then on (a queued one is never
  handed out). The worker is not told: RunPod's stop signal (``job-stop``) is not stood in for.
- ``GET  .../files/<name>`` (no key, as a presigned URL): the bytes of ``files[name]``, for an answer
  whose ``url`` a test points here; ``file_asked`` is set on the request, and the answer waits for
  ``file_answers`` as /run's waits for ``run_answers``.

Tests wait on queues and events, never for a fixed time.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API_KEY = "test-api-key"
USER_KEY = "test-user-key"  # a client's RUNPOD_API_KEY
ENDED = ("COMPLETED", "FAILED", "CANCELLED")
WORKER_ID = "worker-1"
_NO_JOB = None


class JobApi:
    """The stand-in server on 127.0.0.1 and a free port; ``close`` releases every long poll."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.posts: dict[str, list[dict[str, Any]]] = defaultdict(list)  # job id -> bodies, in arrival order
        self.results: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.pinged = threading.Event()
        self.states: dict[str, dict[str, Any]] = {}  # job id -> what /status answers, for jobs sent to /run
        self.answered: dict[str, list[dict[str, Any]]] = defaultdict(list)  # job id -> every /status answer
        self.asked = threading.Event()  # a /status was answered
        self.run_taken = threading.Event()  # a /run's job was queued (its answer may still be held)
        self.run_answers = threading.Event()  # cleared: /run answers wait until it is set
        self.run_answers.set()
        self.files: dict[str, bytes] = {}  # name -> what GET .../files/<name> answers
        self.file_asked = threading.Event()
        self.file_answers = threading.Event()  # cleared: file answers wait until it is set
        self.file_answers.set()
        self.cancelled: list[str] = []
        self.unauthorized: list[str] = []
        self.closed = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}/v2/test-endpoint"

    @property
    def base(self) -> str:
        """What a client takes as RunPod's API base (``RUNPOD_ENDPOINT_BASE_URL``); the endpoint id is ``test-endpoint``."""
        return self.url.rsplit("/", 1)[0]

    def environment(self) -> dict[str, str]:
        """The variables RunPod sets on a worker, pointing here ($ID and $RUNPOD_POD_ID are runpod's placeholders)."""
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_PING": f"{self.url}/ping/$RUNPOD_POD_ID?gpu=cpu",
            "RUNPOD_POD_ID": WORKER_ID,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_ENDPOINT_ID": "test-endpoint",
            # runpod's start-up checks would connect to 8.8.8.8 and look for a GPU: not in tests.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    def submit(self, job: dict[str, Any]) -> None:
        """Queue a job for the worker's next job-take."""
        self.jobs.put(job)

    def result(self, timeout: float = 60) -> tuple[str, dict[str, Any]]:
        """The next job result posted: (job id, body)."""
        return self.results.get(timeout=timeout)

    def close(self) -> None:
        """Answer every pending and later long poll with 204 and every held answer, then stop serving."""
        self.closed.set()
        self.run_answers.set()
        self.file_answers.set()
        self.jobs.put(_NO_JOB)

    def shutdown(self) -> None:
        """Stop the server thread (after the worker is gone)."""
        self._server.shutdown()
        self._server.server_close()


def _handler_class(api: JobApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            if "/status/" in path:
                self._client_call(path)
                return
            if "/files/" in path:
                api.file_asked.set()
                api.file_answers.wait()
                data = api.files.get(path.rsplit("/", 1)[1])
                if data is None:
                    self._answer(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if not self._authorized():
                return
            if "/job-take/" in path:
                job = _NO_JOB if api.closed.is_set() else api.jobs.get()
                while job is not _NO_JOB and api.states.get(job["id"], {}).get("status") == "CANCELLED":
                    job = api.jobs.get()
                if job is _NO_JOB:
                    api.jobs.put(_NO_JOB)  # wake the next poll too
                    self._answer(204)
                else:
                    if job["id"] in api.states:
                        api.states[job["id"]] = {"id": job["id"], "status": "IN_PROGRESS"}
                    self._answer(200, job)
            elif "/job-stop/" in path:
                api.closed.wait()
                self._answer(204)
            elif "/ping/" in path:
                api.pinged.set()
                self._answer(200, {})
            else:
                self._answer(404)

        def do_POST(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            if path.endswith("/run") or "/cancel/" in path:
                self._client_call(path)
                return
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            job_id = path.rsplit("/", 1)[1]
            api.posts[job_id].append(body)
            state = api.states.get(job_id)
            if state is not None and state["status"] not in ENDED:
                if body.get("status") == "IN_PROGRESS":
                    api.states[job_id] = {"id": job_id, "status": "IN_PROGRESS", "output": body["output"]}
                elif "error" in body:
                    api.states[job_id] = {"id": job_id, "status": "FAILED", "error": body["error"]}
                else:
                    api.states[job_id] = {"id": job_id, "status": "COMPLETED", "output": body["output"]}
            if body.get("status") != "IN_PROGRESS":
                api.results.put((job_id, body))
            self._answer(200, {})

        def _client_call(self, path: str) -> None:
            """/run, /status and /cancel, as a client of the endpoint calls them."""
            if self.headers.get("Authorization") != f"Bearer {USER_KEY}":
                api.unauthorized.append(self.path)
                self._answer(401)
                return
            if path.endswith("/run"):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                job_id = str(uuid.uuid4())
                api.states[job_id] = {"id": job_id, "status": "IN_QUEUE"}
                api.submit({"id": job_id, "input": body["input"]})
                api.run_taken.set()
                api.run_answers.wait()
                self._answer(200, {"id": job_id, "status": "IN_QUEUE"})
                return
            job_id = path.rsplit("/", 1)[1]
            if job_id not in api.states:
                self._answer(404, {"error": "request does not exist"})
            elif "/cancel/" in path:
                api.cancelled.append(job_id)
                api.states[job_id] = {"id": job_id, "status": "CANCELLED"}
                self._answer(200, api.states[job_id])
            else:
                state = dict(api.states[job_id])
                api.answered[job_id].append(state)
                self._answer(200, state)
                # after the answer is written: a test that signals the client on this event must not
                # interrupt it in the middle of reading the answer
                api.asked.set()

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == API_KEY:
                return True
            api.unauthorized.append(self.path)
            self._answer(401)
            return False

        def _answer(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads the worker's log, not this server's."""

    return Handler
