"""Session-wide test fixtures: loopback-only networking, a real S3 server, the glTF validator.

- Every test runs with connections to anything but loopback refused (and recorded), and without
  proxies: tests never send traffic off this machine, and SSRF tests can assert that no connection
  was even attempted.
- One moto S3 server (``ThreadedMotoServer``) on 127.0.0.1 and a random port serves the session;
  each test that wants a bucket gets a fresh one.
- ``valid_glb`` runs the Khronos glTF validator (npm ``gltf-validator``, installed by ``npm ci``).
- Tests under ``tests/gpu/`` are skipped, not left out, without CUDA: a CPU run still collects them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Callable

import boto3
import pytest
import torch
from helpers import png
from job_api import JobApi
from moto.server import ThreadedMotoServer
from processes import HandlerProcess, environment, free_port

from trellis_mv.config import Settings

ROOT = Path(__file__).resolve().parent.parent
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if (ROOT / "tests" / "gpu") in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The (host, port) of every connection a test opened; non-loopback ones are refused."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    attempted: list[tuple[str, int]] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address) -> None:
        if isinstance(address, tuple):
            attempted.append((address[0], address[1]))
            if not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
                raise ConnectionRefusedError(f"tests only connect to loopback, not {address[0]}")

    def connect(sock, address):
        check(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempted


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """URL of the session's moto S3 server on loopback."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str):
    """A plain boto3 client for the moto server (for test set-up and checks, not the code under test)."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str, bucket: str) -> Settings:
    """Settings whose BUCKET_* point at ``bucket`` on the moto server."""
    return dataclasses.replace(
        Settings(),
        bucket_endpoint_url=s3_endpoint,
        bucket_access_key_id="test",
        bucket_secret_access_key="test",
        bucket_name=bucket,
    )


@pytest.fixture(scope="session")
def valid_glb(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bytes], dict]:
    """Check GLB bytes with the Khronos glTF validator; fails the test on any error; returns the report."""
    if not (ROOT / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the glTF validator is missing: run `npm ci` in the repository root")
    folder = tmp_path_factory.mktemp("glb")

    def validate(data: bytes) -> dict:
        path = folder / f"{uuid.uuid4().hex}.glb"
        path.write_bytes(data)
        done = subprocess.run(
            ["node", str(ROOT / "tests" / "gltf_validate.mjs"), str(path)],
            capture_output=True, text=True, timeout=60, check=True,
        )
        report = json.loads(done.stdout)
        errors = [message for message in report["issues"]["messages"] if message["severity"] == 0]
        assert report["issues"]["numErrors"] == 0, errors
        return report

    return validate


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Two small PNG views, red and blue, as files."""
    paths = []
    for index, colour in enumerate([(200, 40, 40, 255), (40, 40, 200, 255)]):
        path = tmp_path / f"view{index}.png"
        path.write_bytes(png((32, 32), colour))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def local_api():
    """``handler.py --rp_serve_api`` on loopback with the stand-in generator; yields its base URL."""
    port = free_port()
    server = HandlerProcess("--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port),
                            env=environment(TRELLIS_MV_GENERATOR="trellis_mv.standin:create"))
    if not server.wait_for("Uvicorn running on"):
        server.stop()
        pytest.fail("the API server did not start:\n" + server.output())
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def job_api():
    """The hosted-mode job API stand-in (tests/job_api.py) on loopback."""
    api = JobApi()
    yield api
    api.close()
    api.shutdown()
