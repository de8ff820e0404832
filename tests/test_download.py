"""``gtacity data download``: a real HTTP server on 127.0.0.1 serves a small archive the tests build."""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from gtacity.cli import cli
from gtacity.trainer.download import DATASETS, ArchiveError, DatasetSpec, DownloadError, LayoutError, download_dataset

# trainA keeps Cityscapes names, trainB and testB GTA5 names, testA names that show no domain.
LAYOUT = {
    "trainA": [f"aachen_000000_0000{i:02d}_leftImg8bit.png" for i in range(3)],
    "trainB": ["00001.png", "00002.png"],
    "testA": ["1.png", "2.png"],
    "testB": ["00003.png"],
}


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (seed * 40 % 256, 90, 200)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(layout: dict[str, list[str]], top: str = "cityscapes2gta/", extra: dict[str, bytes] | None = None,
             ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for folder, names in layout.items():
            zf.writestr(f"{top}{folder}/", b"")
            for i, name in enumerate(names):
                zf.writestr(f"{top}{folder}/{name}", png_bytes(i))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class Server:
    """What the handler serves and how it misbehaves; records every request's Range header."""

    def __init__(self) -> None:
        self.body = make_zip(LAYOUT)
        self.mode = "ok"  # ok | ignore_range | truncate | huge | slow | missing
        self.ranges: list[str | None] = []
        self.sent: list[int] = []
        self.url = ""


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        st = self.server.state
        st.ranges.append(self.headers.get("Range"))
        if st.mode == "missing":
            return self.send_error(404, "Not Found")
        if st.mode == "slow":
            time.sleep(1)
        body, start = st.body, 0
        rng = self.headers.get("Range")
        if rng and st.mode != "ignore_range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        length = 10**15 if st.mode == "huge" else len(part)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if st.mode == "huge":
            return
        if st.mode == "truncate":
            part = part[: len(part) // 2]
            self.close_connection = True
        self.wfile.write(part)
        st.sent.append(len(part))


class QuietServer(ThreadingHTTPServer):
    """A client that gives up (timeout tests) breaks the pipe: expected here, so not printed."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.state = Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}/cityscapes2gta.zip"
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def fetch(server: Server, to: Path, **kw):
    return download_dataset("cityscapes2gta", to, url=server.url, progress=False, **kw)


def test_full_download_unpacks_and_summarises(server, tmp_path):
    layout = fetch(server, tmp_path)
    assert layout.root == tmp_path / "cityscapes2gta" and layout.fetched
    assert [(f.name, f.images, f.domain) for f in layout.folders] == [
        ("trainA", 3, "city"), ("trainB", 2, "gta"), ("testA", 2, None), ("testB", 1, "gta"),
    ]
    assert sorted(p.name for p in (layout.root / "trainB").iterdir()) == ["00001.png", "00002.png"]
    assert (tmp_path / "cityscapes2gta.zip").read_bytes() == server.body
    assert not (tmp_path / "cityscapes2gta.zip.partial").exists()
    assert server.ranges == [None]
    lines = layout.summary_lines()
    assert "trainA" in lines[1] and "3 images" in lines[1] and "city" in lines[1]
    assert "unknown" in lines[3] and "not documented" in lines[-1]


def test_second_run_does_nothing_and_force_fetches_again(server, tmp_path):
    fetch(server, tmp_path, keep_zip=False)
    assert not (tmp_path / "cityscapes2gta.zip").exists()
    again = fetch(server, tmp_path)
    assert not again.fetched and len(server.ranges) == 1
    assert "already downloaded" in again.summary_lines()[0]
    forced = fetch(server, tmp_path, force=True)
    assert forced.fetched and len(server.ranges) == 2
    assert [f.images for f in forced.folders] == [3, 2, 2, 1]


def test_resume_requests_only_the_rest(server, tmp_path):
    n = len(server.body) // 3
    (tmp_path / "cityscapes2gta.zip.partial").write_bytes(server.body[:n])
    fetch(server, tmp_path)
    assert server.ranges == [f"bytes={n}-"]
    assert server.sent == [len(server.body) - n]
    assert (tmp_path / "cityscapes2gta.zip").read_bytes() == server.body


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.mode = "ignore_range"
    (tmp_path / "cityscapes2gta.zip.partial").write_bytes(server.body[:100])
    layout = fetch(server, tmp_path)
    assert server.ranges == ["bytes=100-"] and server.sent == [len(server.body)]
    assert (tmp_path / "cityscapes2gta.zip").read_bytes() == server.body
    assert layout.folders[0].images == 3


def test_complete_partial_answered_416_needs_no_body(server, tmp_path):
    (tmp_path / "cityscapes2gta.zip.partial").write_bytes(server.body)
    fetch(server, tmp_path)
    assert server.ranges == [f"bytes={len(server.body)}-"] and server.sent == []
    assert (tmp_path / "cityscapes2gta.zip").read_bytes() == server.body


def test_truncated_transfer_fails_and_resumes_next_time(server, tmp_path):
    server.mode = "truncate"
    with pytest.raises(DownloadError, match=r"stopped at \d+ of \d+ bytes; run the same command again"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cityscapes2gta.zip").exists()
    assert not (tmp_path / "cityscapes2gta").exists()
    half = (tmp_path / "cityscapes2gta.zip.partial").stat().st_size
    assert 0 < half < len(server.body)
    server.mode = "ok"
    fetch(server, tmp_path)
    assert server.ranges[-1] == f"bytes={half}-"
    assert (tmp_path / "cityscapes2gta.zip").read_bytes() == server.body


def test_size_differing_from_the_documented_size_is_refused(server, tmp_path, monkeypatch):
    spec = DATASETS["cityscapes2gta"]
    monkeypatch.setitem(DATASETS, "sized", DatasetSpec("sized", spec.url, "sized", len(server.body) + 1, "test"))
    with pytest.raises(DownloadError, match="is .* bytes; the partial file was deleted, check --url"):
        download_dataset("sized", tmp_path, url=server.url, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/gtacity-evil.txt", "cityscapes2gta/../../evil.txt"])
def test_members_outside_the_target_are_refused(server, tmp_path, member):
    server.body = make_zip(LAYOUT, extra={member: b"owned"})
    to = tmp_path / "data"
    with pytest.raises(ArchiveError, match="points outside the target folder"):
        fetch(server, to)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/gtacity-evil.txt").exists()
    assert sorted(p.name for p in to.iterdir()) == ["cityscapes2gta.zip"]


def test_missing_folder_is_named(server, tmp_path):
    server.body = make_zip({k: v for k, v in LAYOUT.items() if k != "testB"})
    with pytest.raises(LayoutError, match=r"has no testB/ \(found testA/, trainA/, trainB/\)"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cityscapes2gta").exists()


def test_folder_without_images_is_named(server, tmp_path):
    server.body = make_zip({**LAYOUT, "testA": []})
    with pytest.raises(LayoutError, match="testA/ holds no images"):
        fetch(server, tmp_path)


def test_archive_without_top_folder_is_accepted(server, tmp_path):
    server.body = make_zip(LAYOUT, top="")
    assert [f.images for f in fetch(server, tmp_path).folders] == [3, 2, 2, 1]


def test_corrupt_zip_says_delete_and_retry(server, tmp_path):
    server.body = b"PK\x03\x04 this is not really a zip" * 50
    with pytest.raises(ArchiveError, match=r"\.zip is not a valid zip archive .*; delete it and run again"):
        fetch(server, tmp_path)


def test_http_error_and_unreachable_server(server, tmp_path):
    server.mode = "missing"
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cityscapes2gta.zip"
    with pytest.raises(DownloadError, match=r"cannot reach .*; check your connection or pass --url to a mirror"):
        download_dataset("cityscapes2gta", tmp_path, url=url, progress=False)


def test_silent_server_times_out(server, tmp_path):
    server.mode = "slow"
    with pytest.raises(DownloadError, match="cannot reach .*timed out"):
        fetch(server, tmp_path, timeout_s=0.3)


def test_not_enough_disk_space_fails_before_writing(server, tmp_path):
    server.mode = "huge"
    with pytest.raises(DownloadError, match="GiB free; free some space or pass --to another disk"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cityscapes2gta.zip.partial").exists()


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DownloadError, match="unknown dataset 'gta6'; known: cityscapes2gta"):
        download_dataset("gta6", tmp_path)


def test_cli_prints_the_summary(server, tmp_path):
    to = tmp_path / "tmp"
    result = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(to), "--url", server.url])
    assert result.exit_code == 0, result.output
    assert "cityscapes2gta: ready in" in result.stdout
    assert "trainA       3 images  domain: city (from file names)" in result.stdout
    assert "testA        2 images  domain: unknown" in result.stdout
    again = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(to), "--url", server.url])
    assert again.exit_code == 0 and "already downloaded and unpacked" in again.stdout


def test_cli_error_is_one_line(server, tmp_path):
    server.mode = "missing"
    result = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(tmp_path), "--url", server.url])
    assert result.exit_code == 1
    expected = f"error: {server.url}: HTTP 404 Not Found; check the URL or pass --url to a mirror"
    assert result.stderr.strip().splitlines() == [expected]


def test_offline_leaves_no_empty_folder(tmp_path, server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "new" / "data"
    result = CliRunner().invoke(cli, ["data", "download", "cityscapes2gta", "--to", str(target),
                                      "--url", f"http://127.0.0.1:{port}/cityscapes2gta.zip"])
    assert result.exit_code == 1 and "cannot reach" in result.stderr
    assert list((tmp_path / "kept").iterdir()) == []  # the folders it made are gone; the one it found stays
    # a download that got some bytes before failing keeps them (with its folder) to resume
    server.mode = "truncate"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_dataset("cityscapes2gta", tmp_path / "resumable", url=server.url, progress=False)
    assert [p.name for p in (tmp_path / "resumable").iterdir()] == ["cityscapes2gta.zip.partial"]
