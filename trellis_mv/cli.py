"""The commands: ``python -m trellis_mv generate|remote IMAGE... [-o out.glb] [options]``.

``generate`` turns image files into a job input (base64), runs it through ``worker.run_job`` — the
endpoint's own validation, generation, export and preview, one code path — with the output answered
inline and no size cap, and writes the files: the GLB, a JSON report (the answer without base64, file
paths in its place) beside it and, with ``--preview``, the contact sheet. ``remote`` sends the same
job input to a deployed endpoint and writes the same files (``trellis_mv.remote``). A bad command line
exits with status 2: a missing file, an option argparse cannot read, and any value or image the
worker's validation refuses (in the worker's own words, before the generator loads); a job that fails
after that, with status 1.

The options are derived from ``schema.JobInput``, so they cannot drift from the contract: each field
of the job, of ``preprocess``, ``glb`` and ``output`` is a flag of its own name (``--pipeline-type``,
``--texture-size``, ``--no-remesh``, ``--preview``); each stage field is ``--<stage>-<field>``
(``--shape-slat-steps``) and also ``--<field>`` for all three stages at once (``--steps 8``).
Values go to the schema as typed, so a wrong one is refused with the worker's message
("sparse_structure.steps: 0 is not in the range 1<=x<=50"). The generator is the worker's
(``factory.build_generator``: TRELLIS.2 on CUDA, or ``TRELLIS_MV_GENERATOR``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from pydantic import BaseModel
from tqdm import tqdm

from .config import Settings
from .errors import StartupError, UserError
from .generator import STAGES
from .schema import JobInput, parse_job_input
from .threads import use_cpu_budget

__all__ = ["COMMAND_FIELDS", "Flag", "ProgressBars", "flags", "job_input", "main", "parser", "write_files"]

# Fields the commands set themselves: the images are their arguments; the answer's form is theirs to choose.
COMMAND_FIELDS = frozenset({("images",), ("output", "type"), ("output", "key_prefix"), ("output", "expires_in")})
_SECTIONS = ("preprocess", "glb", "output")  # their fields are flagged by their own names
_UNLIMITED = sys.maxsize


@dataclass(frozen=True)
class Flag:
    """One option: its ``--name``, the job-input fields it sets, and how argparse reads it."""

    option: str
    paths: tuple[tuple[str, ...], ...]
    field: Any  # the pydantic FieldInfo it comes from

    @property
    def dest(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


def flags() -> list[Flag]:
    """Every option, derived from ``JobInput``'s fields (see the module docstring)."""
    fields = JobInput.model_fields
    # --steps and friends: one value for all three stages ("mode" is already the job's own flag)
    shared = [Flag(_option(field), tuple((stage, field) for stage in STAGES), spec)
              for field, spec in _model(fields[STAGES[0]]).model_fields.items() if field not in fields]
    found: list[Flag] = []
    for name, info in fields.items():
        if name == STAGES[0]:
            found += shared
        if name in STAGES:
            found += [Flag(_option(name, field), ((name, field),), spec) for field, spec in _model(info).model_fields.items()]
        elif name in _SECTIONS:
            found += [Flag(_option(field), ((name, field),), spec) for field, spec in _model(info).model_fields.items()
                      if (name, field) not in COMMAND_FIELDS]
        elif (name,) not in COMMAND_FIELDS:
            found.append(Flag(_option(name), ((name,),), info))
    return found


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    """Parse ``argv`` and run the command; the exit status."""
    command = parser()
    args = command.parse_args(argv)
    images = []
    for path in args.images:
        try:
            images.append(base64.b64encode(Path(path).read_bytes()).decode("ascii"))
        except OSError as error:
            command.error(f"{path}: {error.strerror or error}")
    output = Path(args.output or Path(args.images[0]).with_suffix(".glb"))
    if not os.access(output.parent, os.W_OK):  # before minutes of GPU time, not after
        command.error(f"{output}: cannot write to {output.parent}")
    if args.command == "remote":
        if args.local_api is not None and args.api_base is not None:
            command.error("--api-base is RunPod's API, for --endpoint; --local-api names its own URL")
        if args.endpoint is not None and not env.get("RUNPOD_API_KEY"):
            command.error("RUNPOD_API_KEY is not set: export your RunPod API key (console: Settings, API Keys) as RUNPOD_API_KEY")
        from .remote import remote  # runpod's import takes a second that generate need not wait for

        return remote(args, job_input(args, images, inline=False), output, env)
    try:
        settings = dataclasses.replace(Settings.from_env(env), max_base64_glb_bytes=_UNLIMITED)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    job = {"id": "local", "input": job_input(args, images)}
    try:  # the worker's own validation: a value it refuses is a bad command line, found before the generator loads
        parse_job_input(job["input"], settings, has_bucket=False)
    except UserError as error:
        command.error(str(error))
    logging.basicConfig(level=settings.log_level if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Here, not at the top: the worker imports torch, which ``remote`` (this module's other user) need not wait for.
    from .factory import build_generator
    from .worker import run_job

    try:
        use_cpu_budget(settings.cpu_threads)
        generator = build_generator(settings)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with ProgressBars() as progress:
        answer = run_job(job, settings=settings, generator=generator, store=None, progress=progress)
    if "error" in answer:
        print(f"error: {answer['error']}", file=sys.stderr)
        return 1
    files = {key: base64.b64decode(answer[key]["base64"]) for key in ("glb", "preview") if key in answer}
    for line in write_files(answer, files, output):
        print(line)
    return 0


class ProgressBars:
    """One tqdm bar per sampling stage (steps done / steps), on stderr; a job step without a count
    (``validate``, ``export``, ...) is one plain line, not a bar that could only say ``0it``.

    As in k-diffusion, ``disable=None`` turns the bars off when stderr is not a terminal (``docker
    run`` without ``-t``, a log file); each stage then gets one plain line instead. ``disable=True``
    prints nothing.
    """

    def __init__(self, *, file: TextIO | None = None, disable: bool | None = None):
        self.file, self.disable = file, disable
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, update: dict[str, Any]) -> None:
        stage = update["stage"]
        if "step" not in update or stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            if "step" in update:
                self.bar = tqdm(desc=stage, total=update["steps"], unit="step", file=self.file or sys.stderr,
                                disable=self.disable, leave=True, dynamic_ncols=True)
            if self.disable is not True and (self.bar is None or self.bar.disable):
                print(stage, file=self.file or sys.stderr, flush=True)
        if "step" in update:
            self.bar.total = update["steps"]
            self.bar.update(update["step"] - self.bar.n)

    def close(self) -> None:
        """Finish the current bar."""
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage = None, None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parser() -> argparse.ArgumentParser:
    """The command line: ``generate`` and ``remote``, each with the job's options (``flags``)."""
    command = argparse.ArgumentParser(prog="python -m trellis_mv", description="trellis-mv: photos in, files out.")
    commands = command.add_subparsers(dest="command", required=True)
    generate = _job_command(
        commands, "generate", help="photos of one object -> a textured GLB, on this machine",
        description="Photos of one object -> one textured GLB, with the endpoint's validation and defaults. "
        "Options name the job-input fields they set (README, 'The contract').",
    )
    generate.add_argument("-v", "--verbose", action="store_true", help="log at TRELLIS_MV_LOG_LEVEL (default: warnings only)")
    remote = _job_command(
        commands, "remote", help="the same, from your deployed RunPod endpoint",
        description="Photos of one object -> one textured GLB, made by a deployed endpoint: the job goes through "
        "RunPod's API with runpod's SDK, the GLB comes back as the endpoint answers it (a URL or base64). "
        "Options name the job-input fields they set (README, 'The contract').",
    )
    target = remote.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", metavar="ID", help="the endpoint's id (RunPod console); the API key is read from RUNPOD_API_KEY")
    target.add_argument("--local-api", metavar="URL", help="runpod's development API instead, as `python handler.py "
                        "--rp_serve_api` serves it (e.g. http://localhost:8000): no key, no progress, no cancelling")
    remote.add_argument("--api-base", metavar="URL", help="RunPod's API (default: RUNPOD_ENDPOINT_BASE_URL, else "
                        "runpod's own, https://api.runpod.ai/v2)")
    remote.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="stop waiting after this long and cancel the "
                        "job (default: wait until it ends)")
    return command


def _job_command(commands: Any, name: str, **texts: str) -> argparse.ArgumentParser:
    """A sub-command taking images, ``-o`` and one option per job-input field (``flags``)."""
    sub = commands.add_parser(name, **texts)
    sub.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG or WebP files, 1 to TRELLIS_MV_MAX_VIEWS")
    sub.add_argument("-o", "--output", metavar="PATH", help="the GLB to write (default: the first image's name, .glb); "
                     "the report goes beside it as .json, the preview as .preview.png")
    for flag in flags():
        sub.add_argument(flag.option, dest=flag.dest, default=argparse.SUPPRESS, help=_help(flag), **_reader(flag.field.annotation, flag.paths[0][-1]))
    return sub


def job_input(args: argparse.Namespace, images: list[str], *, inline: bool = True) -> dict[str, Any]:
    """The job input that parsed options and base64 ``images`` describe; a stage's own flag beats a shared one.

    ``inline`` asks for the GLB as base64 (``generate``); without it the endpoint chooses (``remote``).
    """
    job: dict[str, Any] = {"images": images, **({"output": {"type": "base64"}} if inline else {})}
    chosen = [flag for flag in flags() if flag.dest in vars(args)]
    for flag in sorted(chosen, key=lambda flag: len(flag.paths) == 1):
        for path in flag.paths:
            section = job
            for part in path[:-1]:
                section = section.setdefault(part, {})
            section[path[-1]] = getattr(args, flag.dest)
    return job


def write_files(answer: dict[str, Any], files: Mapping[str, bytes], output: Path) -> list[str]:
    """Write the GLB and the preview (``files``: their bytes by answer field) and the report; lines that say so.

    The report is the answer with each file's path in place of its base64 or its presigned URL (which
    expires, and grants access to the object while it lasts); a stored object's ``key`` stays.
    """
    paths = {"glb": output, "preview": output.with_suffix(".preview.png")}
    report = dict(answer)
    for key, data in files.items():
        paths[key].write_bytes(data)
        report[key] = {"path": str(paths[key]), **{k: v for k, v in answer[key].items() if k not in ("base64", "url")}}
    report_path = output.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = [f"wrote {output} ({answer['glb']['bytes']:,} bytes, {answer['mesh']['faces']:,} faces) and {report_path}"]
    if "preview" in answer:
        lines.append(f"wrote {paths['preview']}")
        lines += [f"view {number}: IoU {fit['iou']:.3f} at azimuth {fit['azimuth']}°, elevation {fit['elevation']}°"
                  for number, fit in enumerate(answer["views_fit"], 1)]
    return lines


def _option(*parts: str) -> str:
    return "--" + "-".join(parts).replace("_", "-")


def _model(info: Any) -> type[BaseModel]:
    return info.annotation


def _help(flag: Flag) -> str:
    fields = ", ".join(".".join(path) for path in flag.paths)
    if "default" in flag.field.description:
        return f"{flag.field.description} ({fields})"
    default = "TRELLIS.2's pipeline.json" if flag.field.default is None else json.dumps(flag.field.default)
    return f"{flag.field.description} ({fields}; default: {default})"


def _reader(annotation: Any, name: str) -> dict[str, Any]:
    """argparse keywords for a field's type; values are only converted, the schema checks them."""
    kind = _bare(annotation)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind in (int, float):
        return {"type": kind, "metavar": "N" if kind is int else "X"}
    if typing.get_origin(kind) is list:
        # The one list of fixed length is an interval; others (view_weights) take one number per image.
        return {"type": float, "nargs": 2, "metavar": ("START", "END")} if name == "guidance_interval" else \
            {"type": float, "nargs": "+", "metavar": "X"}
    choices = typing.get_args(kind)
    shown = "{" + ",".join(json.dumps(choice) if isinstance(choice, bool) else str(choice) for choice in choices) + "}"
    return {"type": _literal(choices), "metavar": shown}


def _seconds(text: str) -> float:
    """A positive number of seconds, for ``--timeout``."""
    value = float(text) if text.replace(".", "", 1).isdigit() else 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _bare(annotation: Any) -> Any:
    """The type under ``X | None`` and ``Annotated[X, ...]``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _literal(choices: tuple[Any, ...]) -> Callable[[str], Any]:
    """Text to a choice's value: "true"/"false" to booleans where the choices hold them, else as typed."""
    def read(text: str) -> Any:
        if any(isinstance(choice, bool) for choice in choices) and text in ("true", "false"):
            return text == "true"
        return text

    return read
