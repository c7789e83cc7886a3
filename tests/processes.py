"""``python handler.py`` as a subprocess, the way RunPod and a user start it, for the tests that need one.

Its output (stdout and stderr together) is read by a thread; tests wait for a line with
``wait_for``, never for a fixed time, and read the whole log with ``output`` to check, with
``assert_clean``, that it holds no payload and no signed URL.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What gives a presigned URL away, whoever prints it.
SIGNATURE = re.compile(r"X-Amz-(Signature|Credential)|Signature=", re.I)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def environment(**extra: str) -> dict[str, str]:
    """A clean environment: no BUCKET_*, TRELLIS_MV_* or RUNPOD_* settings, no proxies; ``extra`` on top."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BUCKET_", "TRELLIS_MV_", "RUNPOD_"))}
    for name in PROXY_VARIABLES:
        env.pop(name, None)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def bucket_environment(endpoint: str, bucket: str) -> dict[str, str]:
    """The BUCKET_* variables for a bucket on the tests' moto server."""
    return {"BUCKET_ENDPOINT_URL": endpoint, "BUCKET_ACCESS_KEY_ID": "test", "BUCKET_SECRET_ACCESS_KEY": "test",
            "BUCKET_NAME": bucket}


def leaked(log: str, secret: str, width: int = 40) -> bool:
    """Whether any ``width``-character piece of ``secret`` (taken every ``width`` characters) is in ``log``."""
    return any(secret[start:start + width] in log for start in range(0, max(1, len(secret) - width), width))


def assert_clean(log: str, *secrets: str) -> None:
    """``log`` holds no signed-URL parameter and no piece of any of ``secrets`` (base64 payloads, URLs)."""
    assert not SIGNATURE.search(log), SIGNATURE.search(log)
    assert [index for index, secret in enumerate(secrets) if leaked(log, secret)] == []


def run_handler(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """Run ``python handler.py *args`` to its end (a ``--test_input`` job) with ``environment(**env)``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "handler.py"), *args], cwd=cwd, env=environment(**env), capture_output=True, text=True,
        timeout=50,
    )


def free_port() -> int:
    """A loopback port nobody listens on (for a server the test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HandlerProcess:
    """``python handler.py *args`` running in ``cwd`` with ``env``; its output collected line by line."""

    def __init__(self, *args: str, env: dict[str, str], cwd: Path = ROOT):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "handler.py"), *args], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # its own process group: runpod's heartbeat runs in a child process
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 45) -> bool:
        """Wait until a line holds ``text`` (True) or the process ended or ``timeout`` passed (False)."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or any(text in line for line in self.lines), timeout)
            return any(text in line for line in self.lines)

    def output(self) -> str:
        """Everything printed so far."""
        with self._changed:
            return "".join(self.lines)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (what RunPod sends a worker it scales down) and wait; the exit status, None if it hung.

        A worker that does not stop in ``timeout`` is killed with everything it started.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None
        finally:
            self._reader.join(timeout)

    def _read(self) -> None:
        with self.process.stdout:
            for line in self.process.stdout:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()
