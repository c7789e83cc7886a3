"""Every shell command in README.md runs as written, or is skipped here with its reason.

The commands of README's ``sh`` blocks are taken in order (continued lines joined, comment lines
dropped) and run by bash in a scratch folder that holds the repository's files they name, with
this checkout's ``trellis_mv`` first on the path, on loopback only. The one server command starts
``handler.py --rp_serve_api`` on a free loopback port, which the later commands reach in place of
``localhost:8000``. Commands that need a GPU, docker, a real endpoint or the network, and the
install and CI commands (this suite runs inside what they make), are in ``SKIPPED`` with why; a
command that is neither run nor skipped fails the test. Every file a command names is in the
repository, or written by a command before it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import HandlerProcess, environment, free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

pytestmark = pytest.mark.timeout(300)

SERVER = "TRELLIS_MV_GENERATOR=trellis_mv.standin:create python handler.py --rp_serve_api"
SKIPPED = {
    "python3 -m venv .venv && ": "installs torch and the project into a new venv, from the network; this suite runs in one",
    ".ci/run": "installs everything and runs this suite",
    'curl -s -X POST "https://api.runpod.ai/': "a real endpoint (the stand-in's API runs the same requests)",
    'curl -s "https://api.runpod.ai/': "a real endpoint",
    "RUNPOD_API_KEY=rpa_... python -m trellis_mv remote": "a real endpoint; tests/test_remote.py runs it against the job API stand-in",
    "docker run ": "docker and a GPU",
    "HF_TOKEN=hf_... DOCKER_BUILDKIT=1 docker build": "docker, the network and a Hugging Face token",
}
# What commands print that shows they did their work, not only that they exited 0.
SAID = {
    "moto_server -p 9000 &": r"bucket 'glbs' at http://127\.0\.0\.1:\d+: found, credentials accepted",
    'curl -s -X POST "http://localhost:8000/status/': r'"status":\s*"COMPLETED"',
    "python -m trellis_mv remote": r"^wrote model\.glb \(",
    "TRELLIS_MV_GENERATOR=trellis_mv.standin:create python -m trellis_mv generate": r"^wrote model\.glb \(",
}
FILE = re.compile(r"(?<![\w/.@-])@?((?:/?[\w.-]+/)*[\w-]+\.(?:png|jpe?g|webp|json|glb|py|sh|toml|mjs))\b")
WRITTEN = re.compile(r"(?<!\S)(?:>|-o|--glb_out)\s+(\S+)|open\(\"([^\"]+)\", \"wb\"\)")
DOCKER_MOUNT = "/data/"  # docker run -v "$PWD:/data", from the repository's root


BACKGROUND = re.compile(r"&\s*(#.*)?$", re.M)  # a line that starts a server in the background


def commands(text: str = README) -> list[str]:
    """The shell commands of ``text``'s sh blocks, in order; a block that starts a server in the
    background (the bucket example) is one command, a script whose lines share that shell."""
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S):
        lines = [line.strip() for line in re.sub(r"\\\n\s*", "", block).splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        found.extend(["\n".join(lines)] if BACKGROUND.search(block) else lines)
    return found


def skipped(command: str) -> str | None:
    return next((reason for start, reason in SKIPPED.items() if command.startswith(start)), None)


def files_named(command: str) -> tuple[list[str], list[str]]:
    """The files ``command`` names (repository-relative) and those it writes."""
    text = " ".join(shlex.split(command, comments=True))
    named = [name.removeprefix(DOCKER_MOUNT) for name in FILE.findall(text)]
    written = [(first or second).removeprefix(DOCKER_MOUNT) for first, second in WRITTEN.findall(text)]
    return named, written


def test_the_readme_has_commands_and_each_is_run_or_skipped_with_a_reason():
    found = commands()
    assert SERVER in found and len(found) > 10
    for start in SKIPPED:
        assert any(command.startswith(start) for command in found), f"nothing in README starts with {start!r} any more"
    for start in SAID:
        assert any(command.startswith(start) for command in found), f"nothing in README starts with {start!r} any more"


def test_every_file_a_command_reads_is_in_the_repository_or_written_before():
    written: set[str] = set()
    for command in commands():
        named, writes = files_named(command)
        missing = [name for name in named if name not in written and name not in writes and not (ROOT / name).is_file()]
        assert missing == [], command
        written |= set(writes)


def test_every_cpu_command_runs_as_written(tmp_path):
    scratch = tmp_path / "clone"
    scratch.mkdir()
    for command in commands():
        for name in files_named(command)[0]:
            if (ROOT / name).is_file() and not (scratch / name).exists():
                (scratch / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / name, scratch / name)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = environment(PATH=path, PYTHONPATH=str(ROOT))
    port = free_port()
    server = None
    try:
        for command in commands():
            if skipped(command):
                continue
            if command == SERVER:
                server = HandlerProcess("--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port),
                                        env=environment(TRELLIS_MV_GENERATOR="trellis_mv.standin:create"), cwd=scratch)
                assert server.wait_for("Uvicorn running on"), server.output()
                continue
            assert server is not None or "localhost:8000" not in command, "a command needs the server before it starts"
            script = command.replace("localhost:8000", f"127.0.0.1:{port}")
            if BACKGROUND.search(command):  # its server on a free port, stopped with the script
                script = "trap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script.replace("9000", str(free_port()))
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                                  cwd=scratch, env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            said = next((pattern for start, pattern in SAID.items() if command.startswith(start)), None)
            assert said is None or re.search(said, done.stdout + done.stderr, re.M), f"{command}\n{done.stdout}\n{done.stderr}"
    finally:
        if server is not None:
            server.stop()
    assert (scratch / "model.glb").stat().st_size > 0 and (scratch / "local_test.glb").stat().st_size > 0
