"""RunPod entry point: read the settings, build the worker once, hand it to ``runpod.serverless.start``.

    python handler.py                                # on RunPod: take jobs from the queue
    python handler.py --test_input test_input.json   # one local job from a file (or a JSON string)
    python handler.py --rp_serve_api                 # runpod's local HTTP API: /run, /runsync, /status

Stock runpod takes ``--test_input`` only as a JSON string; a path to a JSON file is read here and
passed on as its text. A local job that answers an error exits with status 1 (runpod's ``rp_local``).

The generator is chosen once: ``TRELLIS_MV_GENERATOR="module:callable"`` (a testing and extension
hook: the callable gets the ``Settings`` and returns a ``Generator``), else TRELLIS.2 when CUDA is
available, else a stand-in that answers every valid job that a CUDA GPU is needed.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import runpod

from trellis_mv.config import Settings
from trellis_mv.errors import StartupError
from trellis_mv.factory import build_generator
from trellis_mv.storage import S3Store
from trellis_mv.worker import Progress, run_job

log = logging.getLogger("trellis_mv.handler")


def build_handler(settings: Settings, *, send_progress: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Everything a job needs, built once before the first job; the returned function runs one job."""
    generator = build_generator(settings)
    store = S3Store.from_settings(settings)

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        progress = throttled(lambda update: runpod.serverless.progress_update(job, update)) if send_progress else None
        return run_job(job, settings=settings, generator=generator, store=store, progress=progress)

    return handler


def throttled(send: Progress, *, every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> Progress:
    """Pass on every stage start but at most one denoising step per ``every_s`` seconds.

    Each runpod progress update is an HTTP call on a thread of its own: dozens a second would cost
    requests and could arrive out of order.
    """
    last_step = -math.inf

    def progress(update: dict[str, Any]) -> None:
        nonlocal last_step
        if "step" in update:
            if clock() - last_step < every_s:
                return
            last_step = clock()
        send(update)

    return progress


def read_test_input_file(argv: list[str]) -> list[str]:
    """Replace the value of ``--test_input`` by the file's text when it names a file (not JSON)."""
    args = list(argv)
    for index, arg in enumerate(args):
        if arg == "--test_input" and index + 1 < len(args):
            args[index + 1] = _json_text(args[index + 1])
        elif arg.startswith("--test_input="):
            args[index] = "--test_input=" + _json_text(arg.split("=", 1)[1])
    return args


def main() -> None:
    """Configure logging, build the worker and start runpod; a start-up failure exits with status 1."""
    sys.argv = read_test_input_file(sys.argv)
    try:
        settings = Settings.from_env(os.environ)
        # force: importing runpod (its rp_upload) already configured the root logger its own way.
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
        )
        # Progress goes to RunPod's job API, which only exists on RunPod (not in local test modes).
        handler = build_handler(settings, send_progress=bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT")))
    except StartupError as error:
        logging.basicConfig()
        log.critical("cannot start: %s", error, exc_info=error.__cause__)
        sys.exit(1)
    runpod.serverless.start({"handler": handler})


def _json_text(value: str) -> str:
    if value.lstrip().startswith("{"):
        return value
    path = Path(value)
    if not path.is_file():
        sys.exit(f"--test_input: {value!r} is neither a JSON object nor a file")
    return path.read_text(encoding="utf-8")


if __name__ == "__main__":
    main()
