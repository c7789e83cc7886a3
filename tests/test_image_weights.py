"""builder/download_weights.py against a fake Hugging Face Hub on loopback: the pinned revisions are
asked for, only the files the worker reads arrive, layer by layer as builder/weights_manifest.json
assigns them, in the layout the start-up check accepts; the token opens the gated repository, BAKE
modes decide what happens without one, and a second run downloads nothing again. The same fake Hub
fills a Hugging Face cache with huggingface_hub itself, which trellis_mv.weights then reads as a
RunPod cached model."""

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
from weights_trees import DINO, repo_files, safetensors_bytes

from test_image_build import PINS
from trellis_mv.config import Settings
from trellis_mv.startup import check_weights
from trellis_mv.weights import Source, find_weights

pytest.importorskip("huggingface_hub", reason="download_weights.py needs huggingface_hub")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_fake_token_for_tests"
GATED = {PINS["DINOV3_REPO"]}
REAL_MANIFEST = json.loads((ROOT / "builder" / "weights_manifest.json").read_text())
UNWANTED = {"texturing_pipeline.json", "ckpts/unused_enc.safetensors",
            "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.safetensors", "pytorch_model.bin"}


def fake_repos() -> dict[str, dict[str, bytes]]:
    """Repository -> file -> bytes: what the worker needs, plus files it must not download."""
    repos = repo_files()
    repos[PINS["TRELLIS2_MODEL_REPO"]] |= {"README.md": b"# TRELLIS.2-4B", "texturing_pipeline.json": b"{}",
                                           "ckpts/unused_enc.safetensors": safetensors_bytes({"w": 4})}
    unused_decoder = "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.safetensors"
    repos[PINS["SS_DECODER_REPO"]] |= {unused_decoder: safetensors_bytes({"w": 4})}
    repos[PINS["DINOV3_REPO"]] |= {"pytorch_model.bin": b"x"}
    return repos


def fake_manifest(repos: dict[str, dict[str, bytes]], limit: int = 10_000) -> dict:
    """The real manifest's repositories and layers, with the sizes of the fake files."""
    manifest = json.loads(json.dumps(REAL_MANIFEST)) | {"limit_bytes": limit}
    for repo, entry in manifest["repos"].items():
        entry["files"] = {path: spec | {"bytes": len(repos[repo][path])}
                          for path, spec in entry["files"].items() if path in repos.get(repo, {})}
    return manifest


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
    fake = FakeHub(fake_repos())
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def download(hub: FakeHub, root: Path, token_file: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(root.parent / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1"}
    script = ROOT / "builder" / "download_weights.py"
    command = [sys.executable, str(script), str(root), "--token-file", str(token_file), "--manifest",
               str(root.parent / "manifest.json"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hf_token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> dict:
    written = fake_manifest(fake_repos())
    (tmp_path / "manifest.json").write_text(json.dumps(written))
    return written


def file_gets(hub: FakeHub) -> int:
    """Files downloaded (pipeline.json, which every run reads to plan, left out)."""
    return len([1 for method, path in hub.requests
                if method == "GET" and "/resolve/" in path and not path.endswith("/pipeline.json")])


def files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and ".cache" not in path.parts}


def expected_layer(layer: int) -> set[str]:
    names = {repo: repo.split("/")[1] for repo in REAL_MANIFEST["repos"]}
    listed = {f"{names[repo]}/{path}" for repo, entry in REAL_MANIFEST["repos"].items()
              for path, spec in entry["files"].items() if spec.get("layer", entry["layer"]) == layer
              and repo != "briaai/RMBG-2.0" and path in fake_repos()[repo]}
    unlisted = {f"{names[repo]}/{path}" for repo, content in repo_files().items() for path in content
                if path not in REAL_MANIFEST["repos"][repo]["files"] and REAL_MANIFEST["repos"][repo]["layer"] == layer}
    return listed | unlisted | ({"TRELLIS.2-4B/README.md"} if layer == 5 else set())


def test_each_layer_gets_its_files_and_all_layers_make_weights_the_worker_accepts(hub, tmp_path, token_file,
                                                                                   manifest) -> None:
    root = tmp_path / "models"
    seen: set[str] = {"weights.json"}
    for layer in range(1, 6):
        done = download(hub, root, token_file, "--layer", str(layer))
        assert done.returncode == 0, done.stderr
        assert files(root) - seen == expected_layer(layer), layer
        seen = files(root)
    settings = Settings(model_dir=str(root / "TRELLIS.2-4B"), background_model=str(root / "BiRefNet"))
    summary = check_weights(find_weights(settings, [Source("the image", root)]))
    assert summary.startswith("8 checkpoints; microsoft/TRELLIS.2-4B@af44b45f2e35 from the image")
    assert not {path for path in files(root) if path.split("/", 1)[-1] in UNWANTED}
    assert "RMBG-2.0" not in {path.name for path in root.iterdir()}
    record = json.loads((root / "weights.json").read_text())
    assert record["TRELLIS.2-4B"] == {"repo": PINS["TRELLIS2_MODEL_REPO"], "revision": PINS["TRELLIS2_MODEL_REVISION"]}
    assert set(record) == {"TRELLIS.2-4B", "TRELLIS-image-large", "dinov3-vitl16-pretrain-lvd1689m", "BiRefNet"}
    assert TOKEN not in done.stdout + done.stderr

    gets = file_gets(hub)
    again = download(hub, root, token_file)
    assert again.returncode == 0, again.stderr
    assert file_gets(hub) == gets


def test_auto_without_a_token_bakes_the_public_repos_and_leaves_dinov3_to_the_cached_model(hub, tmp_path,
                                                                                          manifest) -> None:
    root = tmp_path / "models"
    done = download(hub, root, tmp_path / "no-such-secret", "--bake", "auto")
    assert done.returncode == 0, done.stderr
    assert f"{DINO} not baked (gated, no hf_token secret)" in done.stdout
    assert "dinov3-vitl16-pretrain-lvd1689m" not in {path.name for path in root.iterdir()}
    assert not [request for request in hub.requests if DINO in request[1]]
    # RunPod fills its cache for the endpoint's Model field; huggingface_hub writes the same layout.
    cache = tmp_path / "runpod-volume" / "huggingface-cache" / "hub"
    fill_cache(hub, cache, DINO)
    settings = Settings(model_dir=str(root / "TRELLIS.2-4B"), background_model=str(root / "BiRefNet"))
    found = find_weights(settings, [Source("the image", root), Source("the RunPod cached model", cache)])
    assert found.named[DINO].source.name == "the RunPod cached model" and found.named[DINO].pinned
    check_weights(found)


def fill_cache(hub: FakeHub, cache: Path, repo: str) -> None:
    code = ("import sys; from huggingface_hub import snapshot_download; "
            "snapshot_download(sys.argv[1], revision=sys.argv[2], cache_dir=sys.argv[3], token=sys.argv[4])")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}
    revision = PINS["DINOV3_REVISION"]
    subprocess.run([sys.executable, "-c", code, repo, revision, str(cache), TOKEN], env=env, check=True, timeout=60)


@pytest.mark.parametrize(("bake", "token", "code", "message"), [
    ("all", False, 1, "facebook/dinov3-vitl16-pretrain-lvd1689m is gated: accept its licence on the Hub and build "
                      "with a token (docker build --secret id=hf_token,env=HF_TOKEN ...)"),
    ("none", False, 0, "BAKE_WEIGHTS=none, layer 2: nothing baked"),
    ("0", True, 0, "BAKE_WEIGHTS=none, layer 2: nothing baked"),
])
def test_bake_modes(hub, tmp_path, token_file, manifest, bake, token, code, message) -> None:
    secret = token_file if token else tmp_path / "no-such-secret"
    done = download(hub, tmp_path / "models", secret, "--layer", "2", "--bake", bake)
    assert done.returncode == code
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if bake != "all":
        assert hub.requests == []


def test_rmbg_without_a_token_is_refused(hub, tmp_path, manifest) -> None:
    done = download(hub, tmp_path / "models", tmp_path / "no-such-secret", "--bake", "auto", "--rmbg", "1")
    assert done.returncode == 1
    assert "--rmbg (WITH_RMBG=1) needs the hf_token secret: RMBG-2.0 is gated" in done.stderr


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["repos"]["microsoft/TRELLIS-image-large"]["files"]["ckpts/ss_dec_conv3d_16l8_fp16.safetensors"]
     .update(bytes=999), "ss_dec_conv3d_16l8_fp16.safetensors has "),
    (lambda m: m.update(limit_bytes=100), "this layer holds "),
])
def test_a_layer_unlike_the_manifest_fails_the_build(hub, tmp_path, token_file, manifest, change, message) -> None:
    change(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    done = download(hub, tmp_path / "models", token_file, "--layer", "1")
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
