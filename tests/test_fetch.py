"""``gtacity.fetch.fetch_file``: a real HTTP server on 127.0.0.1 serves a small file."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gtacity.fetch import Advice, DownloadError, fetch_file

BODY = bytes(range(256)) * 37  # 9472 bytes, not a multiple of any chunk
SHA = hashlib.sha256(BODY).hexdigest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        st = self.server.state
        st["ranges"].append(self.headers.get("Range"))
        body, start = st["body"], 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = {"body": BODY, "ranges": []}
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/weights.pth"
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def test_checksum_ok_lands_whole_and_second_call_fetches_nothing(server, tmp_path):
    dest = tmp_path / "cache" / "weights.pth"
    assert fetch_file(server["url"], dest, sha256=SHA, size=len(BODY), progress=False) == dest
    assert dest.read_bytes() == BODY and not (tmp_path / "cache" / "weights.pth.partial").exists()
    fetch_file(server["url"], dest, sha256=SHA, progress=False)
    assert server["ranges"] == [None]


def test_wrong_checksum_deletes_the_file_and_says_what_to_do(server, tmp_path):
    dest = tmp_path / "weights.pth"
    advice = Advice(check_source="pass --inception-weights FILE")
    with pytest.raises(DownloadError, match=r"SHA-256 .* the partial file was deleted, pass --inception-weights FILE"):
        fetch_file(server["url"], dest, sha256="0" * 64, progress=False, advice=advice)
    assert list(tmp_path.iterdir()) == []


def test_resume_asks_for_the_rest_and_checks_the_whole(server, tmp_path):
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.partial").write_bytes(BODY[:1000])
    fetch_file(server["url"], dest, sha256=SHA, progress=False)
    assert server["ranges"] == ["bytes=1000-"]
    assert dest.read_bytes() == BODY


def test_resume_of_a_corrupt_partial_fails_the_checksum(server, tmp_path):
    dest = tmp_path / "weights.pth"
    (tmp_path / "weights.pth.partial").write_bytes(b"\0" * 1000)
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch_file(server["url"], dest, sha256=SHA, progress=False)
    assert not dest.exists() and not (tmp_path / "weights.pth.partial").exists()
    fetch_file(server["url"], dest, sha256=SHA, progress=False)  # the next call starts over
    assert dest.read_bytes() == BODY


def test_unreachable_server_names_the_advice(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    advice = Advice(other_source="pass --inception-weights FILE")
    with pytest.raises(DownloadError, match="cannot reach .*; check your connection or pass --inception-weights FILE"):
        fetch_file(f"http://127.0.0.1:{port}/w.pth", tmp_path / "w.pth", progress=False, advice=advice)
