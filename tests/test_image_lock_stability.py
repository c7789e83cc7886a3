"""builder/lock.py's answer is a function of the repository: what an index publishes later cannot change it.

The same ``uv pip compile`` call that ``lock.py`` makes, against a package index served on loopback
(PEP 691 JSON with PEP 700 upload times, the form uv reads ``--exclude-newer`` from), whose contents
change between two compilations as PyPI's do: a release uploaded after ``LOCK_EXCLUDE_NEWER``, and a
release that appears late but carries an earlier upload time (as a mirror catching up shows it; this
is how filelock 4.3.2 broke ``.ci/run``). Only a change of the pins may change the lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from test_image_build import BUILDER

sys.path.insert(0, str(BUILDER))
import lock  # noqa: E402  (builder/ is scripts, not a package)

EXCLUDE_NEWER = "2026-06-01T00:00:00Z"
BEFORE, AFTER = "2026-03-01T00:00:00Z", "2026-09-01T00:00:00Z"


def wheel(name: str, version: str, requires: tuple[str, ...] = ()) -> bytes:
    """A minimal pure-Python wheel: metadata is all a resolver reads."""
    info = f"{name}-{version}.dist-info"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        *(f"Requires-Dist: {requirement}\n" for requirement in requires)])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return buffer.getvalue()


class Index:
    """Packages on a loopback simple index; ``publish`` adds one while the server runs."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.projects: dict[str, list[dict]] = {}
        self.url = ""

    def publish(self, name: str, version: str, uploaded: str, requires: tuple[str, ...] = ()) -> None:
        filename = f"{name}-{version}-py3-none-any.whl"
        self.files[filename] = wheel(name, version, requires)
        self.projects.setdefault(name, []).append({
            "filename": filename, "url": f"{self.url}/files/{filename}", "upload-time": uploaded,
            "hashes": {"sha256": hashlib.sha256(self.files[filename]).hexdigest()},
        })

    def handler(self) -> type[BaseHTTPRequestHandler]:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802  (uv asks whether a wheel's server takes range requests)
                self.do_GET(body=False)

            def do_GET(self, body: bool = True) -> None:  # noqa: N802  (http.server's name)
                self.body = body
                parts = self.path.strip("/").split("/")
                if parts[0] == "simple" and len(parts) == 2 and parts[1] in index.projects:
                    body = json.dumps({"meta": {"api-version": "1.1"}, "name": parts[1],
                                       "files": index.projects[parts[1]]}).encode()
                    self.reply(body, "application/vnd.pypi.simple.v1+json")
                elif parts[0] == "files" and parts[-1] in index.files:
                    self.reply(index.files[parts[-1]], "application/octet-stream")
                else:
                    self.send_error(404)

            def reply(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.body:
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    monkeypatch.setenv("UV_NO_CACHE", "1")  # every compilation asks the index again, as a fresh CI machine does
    index = Index()
    server = ThreadingHTTPServer(("127.0.0.1", 0), index.handler())
    index.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    index.publish("alpha", "1.0", BEFORE)
    index.publish("beta", "1.0", BEFORE, ("alpha>=1.0",))
    index.publish("beta", "1.1", BEFORE, ("alpha>=1.0.5",))
    yield index
    server.shutdown()
    thread.join()
    server.server_close()


def compile_pins(index: Index, folder: Path, pins: str, *, prefer: Path | None = None) -> Path:
    """What lock.py does for one stage, against the loopback index."""
    folder.mkdir(parents=True)
    source = folder.with_suffix(".in")
    source.write_text(pins + "\n", encoding="utf-8")
    output = folder / "stage.txt"
    lock.uv_compile([source], output, exclude_newer=EXCLUDE_NEWER, index=f"{index.url}/simple", prefer=prefer)
    return output


def versions(path: Path) -> dict[str, str]:
    return dict(line.split(" ")[0].split("==") for line in path.read_text(encoding="utf-8").splitlines()
                if "==" in line and not line.startswith("#"))


def test_a_release_uploaded_after_the_date_changes_nothing(index: Index, tmp_path: Path) -> None:
    committed = compile_pins(index, tmp_path / "committed", "beta==1.0")
    index.publish("alpha", "2.0", AFTER)
    fresh = compile_pins(index, tmp_path / "fresh", "beta==1.0", prefer=committed)
    assert versions(committed) == {"alpha": "1.0", "beta": "1.0"}
    assert lock.differences(committed.parent, fresh.parent) == []


def test_a_release_that_appears_late_with_an_earlier_date_changes_nothing(index: Index, tmp_path: Path) -> None:
    committed = compile_pins(index, tmp_path / "committed", "beta==1.0")
    index.publish("alpha", "1.0.5", BEFORE)
    fresh = compile_pins(index, tmp_path / "fresh", "beta==1.0", prefer=committed)
    upgraded = compile_pins(index, tmp_path / "upgraded", "beta==1.0")
    assert lock.differences(committed.parent, fresh.parent) == []
    assert versions(upgraded)["alpha"] == "1.0.5"  # what the check saw without the committed preferences


def test_a_changed_pin_changes_the_lock(index: Index, tmp_path: Path) -> None:
    committed = compile_pins(index, tmp_path / "committed", "beta==1.0")
    index.publish("alpha", "1.0.5", BEFORE)
    fresh = compile_pins(index, tmp_path / "fresh", "beta==1.1", prefer=committed)
    assert versions(fresh) == {"alpha": "1.0.5", "beta": "1.1"}
    assert [problem.split(":")[0] for problem in lock.differences(committed.parent, fresh.parent)] == ["stage.txt"]


def test_an_exclusion_date_in_the_future_is_refused() -> None:
    lock.past(EXCLUDE_NEWER)
    with pytest.raises(SystemExit, match="lies in the future"):
        lock.past("2999-01-01T00:00:00Z")
