"""RunPod entry point: read the settings, build the worker once, hand it to ``runpod.serverless.start``.

    python handler.py                                # on RunPod: take jobs from the job API
    python handler.py --test_input test_input.json   # one local job from a file (or a JSON string)
    python handler.py --rp_serve_api                 # runpod's local HTTP API: /run, /runsync, /status

Stock runpod takes ``--test_input`` only as a JSON string; a path to a JSON file is read here and
passed on as its text. A local job writes its base64 GLB to ``--glb_out`` (default ``<job id>.glb``,
``local_test.glb`` unless the input names an id) and its base64 preview sheet to ``--preview_out``
(default ``<job id>.preview.png``), answers the files' paths in place of the base64, and exits with
status 1 on an error answer (runpod's ``rp_local``). ``--help`` lists runpod's options and ours; a
command line with any argument is checked whole before the worker is built (a mistake exits with
status 2 at once, not after minutes of loading); RunPod starts the worker with none, and nothing waits.

Logs carry sizes, ids and timings, never job contents: runpod's own logger prints every job's input
and output at its INFO and DEBUG levels (its default is DEBUG), so it is set to WARN unless
``RUNPOD_LOG_LEVEL`` or ``--rp_log_level`` asks otherwise; ``TRELLIS_MV_LOG_LEVEL`` sets our loggers,
and other libraries log warnings only (botocore's DEBUG log holds request bodies). A local job's
answer is logged with its files' paths, keys and sizes, never their base64 or presigned URLs.

The generator is chosen once: ``TRELLIS_MV_GENERATOR="module:callable"`` (the callable gets the
``Settings`` and returns a ``Generator``; ``trellis_mv.standin:create`` is a CPU stand-in that makes
a textured sphere), else TRELLIS.2 when CUDA is available, else a generator that answers every valid
job that a CUDA GPU is needed.

Only the standard library and four small modules are imported at the top: ``main`` begins
TRELLIS.2's head start (``trellis_mv.headstart``: the weights read into memory, the GPU kernels
compiling) before it imports runpod, torch and the worker, which took 7.5 s of a fresh worker's
start on the H200; runpod (whose import waits on a CPU-info subprocess) is imported on a thread
meanwhile, and so are boto3 and the bucket's check (``build_handler``): before the load, only torch,
the checks and the load's own modules are in its way.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from trellis_mv.config import Settings
from trellis_mv.errors import StartupError
from trellis_mv.headstart import HeadStart, begin
from trellis_mv.threads import on_a_thread

if TYPE_CHECKING:
    from trellis_mv.storage import S3Store

log = logging.getLogger("trellis_mv.handler")

Handler = Callable[[dict[str, Any]], dict[str, Any]]
# runpod's logger prints job inputs at DEBUG and local results at INFO.
QUIET_RUNPOD_LOG_LEVEL = "WARN"


def build_handler(settings: Settings, *, send_progress: bool, head: HeadStart | None = None) -> Handler:
    """Everything a job needs, built once before the first job; the returned function runs one job.

    With ``send_progress`` (the hosted mode only: RunPod's job API exists nowhere else), each job's
    progress goes to the job API throttled and in order, all of it before the answer. ``head`` is
    what :func:`main` began (``trellis_mv.headstart``); the generator's factory begins it otherwise.
    A configured bucket is checked (``S3Store.check``) on a thread while torch is imported and the
    GPU checked, and before the load: a missing one raises ``StartupError`` without minutes of
    loading, and boto3's import and the bucket's answer are not in the way of the load.
    """
    from trellis_mv.factory import build_generator
    from trellis_mv.threads import use_cpu_budget

    checked = on_a_thread("check-bucket", _checked_store, settings)
    try:
        use_cpu_budget(settings.cpu_threads)
        generator = build_generator(settings, head, before_load=checked.result)
        store = checked.result()  # a stand-in's or CudaRequired's build does not wait for it
    except StartupError:
        if head is not None:
            head.stop()
        raise
    # The job's own modules once the generator is built: TRELLIS.2's export warm-up has imported the
    # heavy ones beside the load.
    from trellis_mv.progress import OrderedSender, throttled
    from trellis_mv.worker import run_job

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        if not send_progress:
            return run_job(job, settings=settings, generator=generator, store=store)
        sender = OrderedSender(lambda update: asyncio.run(_post_progress(job, update)))
        try:
            return run_job(job, settings=settings, generator=generator, store=store, progress=throttled(sender))
        finally:
            sender.close()

    return handler


def _checked_store(settings: Settings) -> S3Store | None:
    """The configured bucket (``S3Store.from_settings``), checked; None where none is configured."""
    from trellis_mv.storage import S3Store

    store = S3Store.from_settings(settings)
    if store is not None:
        store.check()
        log.info("bucket %r at %s: found, credentials accepted", store.bucket, store.client.meta.endpoint_url)
    return store


def writing_files(handler: Handler, glb_out: Path | None = None, preview_out: Path | None = None) -> Handler:
    """For a local job: a base64 GLB and preview written to ``glb_out`` and ``preview_out`` (default
    ``<job id>.glb``, ``<job id>.preview.png``), their paths answered instead; the answer is logged
    with paths, keys and sizes, never base64 or a presigned URL."""

    def local(job: dict[str, Any]) -> dict[str, Any]:
        answer = handler(job)
        if "error" in answer:
            return answer  # runpod logs it and exits with status 1
        paths = {"glb": glb_out or Path(f"{job['id']}.glb"), "preview": preview_out or Path(f"{job['id']}.preview.png")}
        for name, path in paths.items():
            stored = answer.get(name)
            if stored is None:
                continue
            if "base64" in stored:
                path.write_bytes(base64.b64decode(stored.pop("base64")))
                stored["path"] = str(path)
                log.info("job %s: %s written to %s (%d bytes)", job["id"], name, path, stored["bytes"])
            else:
                log.info("job %s: %s uploaded as %s (%d bytes); its presigned URL is in the answer, not in this log",
                         job["id"], name, stored["key"], stored["bytes"])
        shown = {name: {key: value for key, value in answer[name].items() if key != "url"} for name in paths if name in answer}
        log.info("job %s answer: %s", job["id"], json.dumps({**answer, **shown}))
        return answer

    return local


def read_test_input_file(argv: list[str]) -> list[str]:
    """Replace the value of ``--test_input`` by the file's text when it names a file (not JSON).

    Raises ``ValueError`` when the value is neither a file nor a JSON object.
    """
    args = list(argv)
    for index, arg in enumerate(args):
        if arg == "--test_input" and index + 1 < len(args):
            args[index + 1] = _json_text(args[index + 1])
        elif arg.startswith("--test_input="):
            args[index] = "--test_input=" + _json_text(arg.split("=", 1)[1])
    return args


def local_options() -> argparse.ArgumentParser:
    """handler.py's own options, for a local job (``--test_input``); runpod never sees them."""
    options = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    local = options.add_argument_group("a local job (--test_input): where its files go")
    local.add_argument("--glb_out", type=Path, metavar="PATH",
                       help="the GLB, when answered as base64 (no bucket, or output.type base64); "
                       "default: <job id>.glb, local_test.glb unless the input names an id")
    local.add_argument("--preview_out", type=Path, metavar="PATH",
                       help="the preview sheet (output.preview true), when answered as base64 like the GLB; "
                       "default: <job id>.preview.png")
    return options


def command_line(runpod_options: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The whole command line, runpod's options (``runpod_options``) and ours: for ``--help`` and to refuse a bad one."""
    return argparse.ArgumentParser(
        prog="python handler.py", parents=[runpod_options, local_options()], add_help=False, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="trellis-mv's RunPod worker. With no option it takes jobs from RunPod's job API (on RunPod; "
        "elsewhere runpod runs ./test_input.json).\n\n"
        "  python handler.py --test_input test_input.json   one local job from a file (or a JSON string)\n"
        "  python handler.py --rp_serve_api                 runpod's local HTTP API: /run, /runsync, /status",
        epilog="Settings come from environment variables (BUCKET_*, TRELLIS_MV_*): README.md, 'Environment variables'.",
    )


def take_local_options(argv: list[str]) -> tuple[list[str], argparse.Namespace]:
    """``argv`` without our options (what runpod parses), and our options' values."""
    ours, rest = local_options().parse_known_args(argv[1:])
    return [argv[0], *rest], ours


def quiet_runpod(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` with ``--rp_log_level WARN`` added unless the user chose runpod's log level."""
    chosen = env.get("RUNPOD_LOG_LEVEL") or _given(argv, "--rp_log_level")
    return list(argv) if chosen else [*argv, "--rp_log_level", QUIET_RUNPOD_LOG_LEVEL]


def runpod_mode(argv: list[str], env: Mapping[str, str]) -> str:
    """What ``runpod.serverless.start`` will do with these arguments: "api", "local" (one job) or "hosted"."""
    if "--rp_serve_api" in argv or int(env.get("RUNPOD_REALTIME_PORT") or 0):
        return "api"
    return "local" if _given(argv, "--test_input") or not env.get("RUNPOD_WEBHOOK_GET_JOB") else "hosted"


def configure_logging(level: str) -> None:
    """Our loggers at ``level``; every other library's at WARNING, so no library logs a payload."""
    # force: importing runpod (its rp_upload, on a thread since main began) may have configured the root logger
    # first; when it comes second its basicConfig finds ours and does nothing.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("trellis_mv").setLevel(level)


def main() -> None:
    """Check the command line, configure logging, build the worker and start runpod; a start-up failure exits with status 1."""
    runpod = on_a_thread("import-runpod", importlib.import_module, "runpod")
    argv = sys.argv
    if len(argv) > 1:  # RunPod starts the worker with no argument: only a person's command line waits for runpod here
        command = command_line(runpod.result().serverless.parser)
        command.parse_args(argv[1:])  # --help prints and exits; a bad command line exits with status 2
        try:
            argv = read_test_input_file(argv)
        except ValueError as error:
            command.error(str(error))
    args, ours = take_local_options(argv)
    sys.argv = quiet_runpod(args, os.environ)
    mode = runpod_mode(sys.argv, os.environ)
    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings.log_level)
        head = begin(settings)
        handler = build_handler(settings, send_progress=mode == "hosted", head=head)
    except StartupError as error:
        logging.basicConfig()
        log.critical("cannot start: %s", error, exc_info=error.__cause__)
        sys.exit(1)
    local = writing_files(handler, ours.glb_out, ours.preview_out) if mode == "local" else handler
    runpod.result().serverless.start({"handler": local})


async def _post_progress(job: dict[str, Any], update: dict[str, Any]) -> None:
    """What ``runpod.serverless.progress_update`` sends, sent here and now (the caller keeps the order)."""
    from runpod.http_client import AsyncClientSession
    from runpod.serverless.modules.rp_http import send_result

    async with AsyncClientSession() as session:
        await send_result(session, {"status": "IN_PROGRESS", "output": update}, job)


def _given(argv: list[str], flag: str) -> bool:
    """Whether ``flag`` is in ``argv``, as ``--flag value`` or ``--flag=value``."""
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def _json_text(value: str) -> str:
    """The JSON object ``value`` is or names (a file); ``ValueError`` when it is neither."""
    path = Path(value)
    text = value if value.lstrip().startswith("{") or not path.is_file() else path.read_text(encoding="utf-8")
    if not text.lstrip().startswith("{"):
        raise ValueError(f"--test_input: {value!r} is neither a JSON object nor a file")
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--test_input: {'the JSON text' if text is value else path} is not valid JSON: {error}") from None
    return text


if __name__ == "__main__":
    main()
