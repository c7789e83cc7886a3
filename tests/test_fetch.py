"""Image URLs: SSRF refusals before any connection, and the caps on what a public server may send.

Refusals use address literals (and ``localhost``), so no DNS query leaves the machine. The download
caps are exercised against a real HTTP server on loopback; reaching it needs runpod's documented
escape hatch for private addresses, which the refusal tests leave off.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from helpers import png

from trellis_mv import images
from trellis_mv.config import Settings
from trellis_mv.errors import UserError
from trellis_mv.images import ImageError, ImageUrl

pytestmark = pytest.mark.timeout(20)

PNG = png((20, 10))
ONLY_PUBLIC = "only public https addresses are fetched"


@pytest.mark.parametrize(
    ("url", "host", "address"),
    [
        ("https://127.0.0.1/chair.png", "127.0.0.1", "127.0.0.1"),
        ("https://localhost:8443/chair.png", "localhost", "127.0.0.1"),
        ("https://[::1]/chair.png", "::1", "::1"),
        ("https://10.0.0.7/chair.png", "10.0.0.7", "10.0.0.7"),
        ("https://172.16.4.2/chair.png", "172.16.4.2", "172.16.4.2"),
        ("https://192.168.1.20/chair.png", "192.168.1.20", "192.168.1.20"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254", "169.254.169.254"),
        ("https://100.64.0.1/chair.png", "100.64.0.1", "100.64.0.1"),
        ("https://0.0.0.0/chair.png", "0.0.0.0", "0.0.0.0"),
        ("https://[::ffff:127.0.0.1]/chair.png", "::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("https://[fd00::1]/chair.png", "fd00::1", "fd00::1"),
    ],
)
def test_local_and_private_addresses_are_refused_without_connecting(url, host, address, connections):
    with pytest.raises(ImageError) as caught:
        images.fetch(url, timeout_s=5, max_bytes=10**6)
    # localhost may resolve to ::1 before 127.0.0.1: either is named
    named = r"(127\.0\.0\.1|::1)" if host == "localhost" else re.escape(address)
    assert re.fullmatch(
        rf"refused to fetch {re.escape(url)}: host {re.escape(repr(host))} resolves to non-public address {named}; "
        + ONLY_PUBLIC,
        str(caught.value),
    )
    assert connections == []


def test_refused_urls_are_answered_with_their_index(connections):
    with pytest.raises(UserError) as caught:
        images.load_all([ImageUrl("https://127.0.0.1/a.png"), ImageUrl("https://169.254.169.254/latest?token=secret")], Settings())
    assert str(caught.value) == (
        "images[0]: refused to fetch https://127.0.0.1/a.png: host '127.0.0.1' resolves to non-public address "
        f"127.0.0.1; {ONLY_PUBLIC}; images[1]: refused to fetch https://169.254.169.254/latest: host "
        f"'169.254.169.254' resolves to non-public address 169.254.169.254; {ONLY_PUBLIC}"
    )
    assert connections == []


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    release = threading.Event()  # a stalled response waits for this, set at teardown


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/chair.png":
            self._send(200, PNG)
        elif self.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif self.path == "/big-undeclared":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * 300_000)  # no Content-Length: the body ends when the connection closes
        elif self.path == "/stall":
            self.server.release.wait(20)
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback HTTP server, reachable because runpod's private-address escape hatch is on."""
    monkeypatch.setenv("RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS", "true")
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_served_image_is_downloaded(server):
    assert images.fetch(f"{server}/chair.png", timeout_s=5, max_bytes=10**6) == PNG


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/missing.png", "{server}/missing.png answered HTTP 404"),
        ("/big-declared", "{server}/big-declared is 1000 MB, over the 100000 bytes limit for one image"),
        ("/big-undeclared", "{server}/big-undeclared is over the 100000 bytes limit for one image"),
        ("/stall", "{server}/stall did not answer within 0.3 s"),
    ],
)
def test_what_a_server_may_not_do(server, path, message):
    with pytest.raises(ImageError) as caught:
        images.fetch(server + path, timeout_s=0.3, max_bytes=100_000)
    assert str(caught.value) == message.format(server=server)


def test_downloaded_bytes_get_the_same_checks_as_base64(server):
    settings = Settings(max_image_pixels=100)
    with pytest.raises(UserError) as caught:
        images.load_all([ImageUrl(f"{server}/chair.png")], settings)
    assert str(caught.value) == "images[0]: 20x10 pixels is over the limit of 100 pixels; send a smaller image"
