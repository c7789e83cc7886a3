"""builder/download_weights.py against a fake Hugging Face Hub on loopback: the pinned revisions are
asked for, only the files the worker reads arrive, in the layout the start-up check accepts, the
token opens the gated repository, and a second run downloads nothing again."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from test_image_build import PINS
from test_startup import PIPELINE, write_safetensors
from trellis_mv import startup

pytest.importorskip("huggingface_hub", reason="download_weights.py needs huggingface_hub")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_fake_token_for_tests"
GATED = {PINS["DINOV3_REPO"]}


def safetensors_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "tensor.safetensors"
    write_safetensors(path, {"weight": 4})
    return path.read_bytes()


def fake_repos(tmp_path: Path) -> dict[str, dict[str, bytes]]:
    """Repository -> file -> bytes: what the worker needs, plus files it must not download."""
    tensors = safetensors_bytes(tmp_path)
    model = json.dumps({"name": "Model", "args": {}}).encode()
    main: dict[str, bytes] = {"pipeline.json": json.dumps(PIPELINE).encode(), "README.md": b"# TRELLIS.2-4B",
                              "texturing_pipeline.json": b"{}", "ckpts/unused_enc.safetensors": tensors}
    for ref in PIPELINE["args"]["models"].values():
        if ref.startswith("ckpts/"):
            main |= {f"{ref}.json": model, f"{ref}.safetensors": tensors}
    decoder = "ckpts/ss_dec_conv3d_16l8_fp16"
    birefnet_config = {"auto_map": {"AutoConfig": "BiRefNet_config.BiRefNetConfig",
                                    "AutoModelForImageSegmentation": "birefnet.BiRefNet"}}
    return {
        PINS["TRELLIS2_MODEL_REPO"]: main,
        PINS["SS_DECODER_REPO"]: {f"{decoder}.json": model, f"{decoder}.safetensors": tensors,
                                  "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.safetensors": tensors},
        PINS["DINOV3_REPO"]: {"config.json": b"{}", "model.safetensors": tensors, "pytorch_model.bin": b"x"},
        PINS["BIREFNET_REPO"]: {"config.json": json.dumps(birefnet_config).encode(), "birefnet.py": b"",
                                "BiRefNet_config.py": b"", "model.safetensors": tensors},
    }


class FakeHub:
    """The three Hub routes huggingface_hub uses to download: repo info, file HEAD, file GET."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.revisions = {repo: PINS[key[: -len("_REPO")] + "_REVISION"]
                          for key, repo in PINS.items() if key.endswith("_REPO") and repo in repos}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, request: BaseHTTPRequestHandler, *, body: bool) -> None:
        self.requests.append((request.command, request.path))
        info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/?]+)", request.path.split("?")[0])
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", request.path)
        repo, revision = (info or resolve).group(1, 2) if info or resolve else (None, None)
        if repo not in self.repos or revision != self.revisions[repo]:
            return self.send(request, 404, b"{}", {"X-Error-Code": "RevisionNotFound"}, body)
        if repo in GATED and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(request, 401, b"{}", {"X-Error-Code": "GatedRepo",
                                                   "X-Error-Message": "Access to this repo is restricted"}, body)
        if info:
            siblings = [{"rfilename": name} for name in self.repos[repo]]
            answer = json.dumps({"id": repo, "sha": revision, "siblings": siblings}).encode()
            return self.send(request, 200, answer, {"Content-Type": "application/json"}, body)
        content = self.repos[repo].get(resolve.group(3))
        if content is None:
            return self.send(request, 404, b"{}", {"X-Error-Code": "EntryNotFound"}, body)
        etag = hashlib.sha256(content).hexdigest()
        self.send(request, 200, content, {"X-Repo-Commit": revision, "ETag": f'"{etag}"'}, body)

    @staticmethod
    def send(request: BaseHTTPRequestHandler, status: int, content: bytes, headers: dict, body: bool) -> None:
        request.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(content))}.items():
            request.send_header(name, value)
        request.end_headers()
        if body:
            request.wfile.write(content)


@pytest.fixture
def hub(tmp_path: Path):
    fake = FakeHub(fake_repos(tmp_path))
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def download(hub: FakeHub, root: Path, token_file: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(root.parent / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1"}
    script = ROOT / "builder" / "download_weights.py"
    command = [sys.executable, str(script), str(root), "--token-file", str(token_file)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_downloads_the_pinned_files_into_the_layout_the_worker_checks(hub: FakeHub, tmp_path: Path) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text(TOKEN + "\n")
    root = tmp_path / "models"
    done = download(hub, root, token_file)
    assert done.returncode == 0, done.stderr
    assert startup.check_weights(root / "TRELLIS.2-4B", root / "BiRefNet").startswith("8 checkpoints")
    files = {str(path.relative_to(root)) for path in root.rglob("*") if ".cache" not in path.parts}
    assert not {"TRELLIS.2-4B/texturing_pipeline.json", "TRELLIS.2-4B/ckpts/unused_enc.safetensors",
                "TRELLIS-image-large/ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.safetensors",
                "dinov3-vitl16-pretrain-lvd1689m/pytorch_model.bin"} & files
    assert "RMBG-2.0" not in {path.name for path in root.iterdir()}
    manifest = json.loads((root / "weights.json").read_text())
    pinned = {"repo": PINS["TRELLIS2_MODEL_REPO"], "revision": PINS["TRELLIS2_MODEL_REVISION"]}
    assert manifest["TRELLIS.2-4B"] == pinned
    assert TOKEN not in done.stdout + done.stderr

    gets = len([1 for method, path in hub.requests if method == "GET" and "/resolve/" in path])
    again = download(hub, root, token_file)
    assert again.returncode == 0, again.stderr
    assert len([1 for method, path in hub.requests if method == "GET" and "/resolve/" in path]) == gets


def test_the_gated_encoder_without_a_token_fails_with_the_remedy(hub: FakeHub, tmp_path: Path) -> None:
    done = download(hub, tmp_path / "models", tmp_path / "no-such-secret")
    assert done.returncode == 1
    assert "docker build --secret id=hf_token,env=HF_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
