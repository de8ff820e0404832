"""Hostile and unlucky input files through real `gtacity translate` processes (issue 18, engine side):
names that are not valid UTF-8 or hold a newline, memory bombs (a few KB declaring 20000x20000
pixels) under an address-space cap, an image over OpenCV's own pixel cap, a generator whose output
overflows to NaN. Every input is made here; each job's outputs and failures list are checked
exactly."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from media import make_image, write_garbage
from test_jobs import SIZE, command, tree, user_files

from gtacity.checkpoint import save_generator
from gtacity.engine.jobs.folder import escape_name, read_failures, unescape_name
from gtacity.images import decode_rgb, image_size

ODD = os.fsdecode(b"odd\xff.png")  # not valid UTF-8: Python carries the byte as U+DCFF
BAD = os.fsdecode(b"bad\xfe.png")
NEWLINE = "new\nline.png"


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def run(args: list, timeout: float = 300, **options) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, errors="backslashreplace",
                          **options)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Written by Python, not cv2.imwrite (which crashes on a name that is not UTF-8)."""
    path.write_bytes(cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes())


def declared_png(width: int, height: int, whole: bool = True) -> bytes:
    """A 1-bit grey PNG of ``width`` x ``height`` black pixels: tens of KB that decode to gigabytes.
    Without ``whole`` the image data is a stub (for sizes that could never be decoded anyway)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height if whole else 1)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


# The child imports everything, then caps its address space 1 GiB above what it already uses: a
# 20000x20000 frame (1.2 GB of BGR pixels alone) cannot be decoded within it.
_CAPPED = """import resource, sys
import gtacity.cli, gtacity.engine.translation, gtacity.engine.backends.torch_backend
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, size + 2**30))
sys.argv = ["gtacity", *sys.argv[1:]]
gtacity.cli.main()
"""
# One BLAS and one OpenMP thread: each extra thread's stack and arena would eat the headroom.
_ONE_THREAD = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def capped(args: list) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", _CAPPED, *args[3:]], env=_ONE_THREAD)


# ---------------------------------------------------------------- names


def test_names_that_are_not_utf8_or_hold_a_newline_in_a_folder_job(tmp_path, weights):
    images = tree(tmp_path / "in", 3)
    odd = make_image(tmp_path / "plain.png", size=SIZE, seed=7)
    write_png(tmp_path / "in" / ODD, odd)
    write_garbage(tmp_path / "in" / BAD)
    write_garbage(tmp_path / "in" / NEWLINE)
    out = tmp_path / "out"
    done = run(command(tmp_path / "in", out, weights))
    assert done.returncode == 1, done.stderr  # not -11: cv2.imwrite segfaulted on such a name
    assert "internal error" not in done.stderr
    assert "files: 4 translated, 0 already done, 2 failed" in done.stdout
    expected = sorted([str(p) for p in images] + [ODD, "gtacity-failures.txt"])
    assert user_files(out) == expected
    assert decode_rgb(out / ODD).shape == odd.shape

    failures = out / "gtacity-failures.txt"
    lines = failures.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 3 and lines[-1] == ""  # one line per record, whatever the names hold
    assert [line.split("\t")[0] for line in lines[:2]] == ["bad\\xfe.png", "new\\nline.png"]
    records = read_failures(failures)
    assert [key for key, _ in records] == [BAD, NEWLINE]
    for key, why in records:
        assert why.startswith(f"{tmp_path / 'in' / key}: not a readable image (not a PNG, JPEG, WebP, BMP or TIFF")
        assert "not a readable image (not a readable image)" not in why
    # The journal records the odd name too: a rerun does not redo it.
    again = run(command(tmp_path / "in", out, weights))
    assert "files: 0 translated, 4 already done, 2 failed" in again.stdout


def test_a_single_image_whose_name_is_not_utf8(tmp_path, weights):
    rgb = make_image(tmp_path / "plain.png", size=SIZE)
    source, target = tmp_path / os.fsdecode(b"shot\xe9.png"), tmp_path / os.fsdecode(b"out\xe9.png")
    write_png(source, rgb)
    done = run(command(source, target, weights))
    assert done.returncode == 0, done.stderr
    assert decode_rgb(target).shape == rgb.shape
    assert sorted(os.listdir(tmp_path)) == sorted(["g.safetensors", "plain.png", source.name, target.name])


def test_names_are_escaped_readably_and_come_back_exactly():
    names = ["straße/ü.png", "a\\b.png", "tab\there.png", "cr\rlf\n.png", "bell\x07.png",
             os.fsdecode(b"\xff\x80latin1\xe9.png")]
    for name in names:
        line = escape_name(name)
        assert "\n" not in line and "\t" not in line and "\r" not in line
        line.encode("utf-8")  # no lone surrogate left
        assert unescape_name(line) == name
    assert escape_name("straße/ü.png") == "straße/ü.png"
    assert escape_name(os.fsdecode(b"x\xff.png")) == "x\\xff.png"


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("name, data, size", [
    ("png", lambda: declared_png(20000, 20000, whole=False), (20000, 20000)),
    ("jpeg", lambda: cv2.imencode(".jpg", np.zeros((30, 70, 3), np.uint8))[1].tobytes(), (70, 30)),
    ("webp lossy", lambda: cv2.imencode(".webp", np.zeros((30, 70, 3), np.uint8),
                                        [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes(), (70, 30)),
    ("webp lossless", lambda: cv2.imencode(".webp", np.zeros((31, 71, 4), np.uint8))[1].tobytes(), (71, 31)),
    ("bmp", lambda: cv2.imencode(".bmp", np.zeros((30, 70, 3), np.uint8))[1].tobytes(), (70, 30)),
    ("tiff", lambda: cv2.imencode(".tiff", np.zeros((30, 70, 3), np.uint16))[1].tobytes(), (70, 30)),
    ("unknown", lambda: b"P6\n70 30\n255\n" + bytes(70 * 30 * 3), None),
])
def test_image_size_is_read_from_the_header(name, data, size):
    assert image_size(data()) == size


def test_a_memory_bomb_alone_is_refused_in_one_line_under_a_memory_cap(tmp_path, weights):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(declared_png(20000, 20000))
    assert bomb.stat().st_size < 100_000
    done = capped(command(bomb, tmp_path / "out.png", weights))
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {bomb}: 20000x20000 = 400,000,000 pixels, over the limit of ")
    assert "GiB of memory free here can translate); pass --max-pixels 400000000 to try anyway" in line
    assert sorted(os.listdir(tmp_path)) == ["bomb.png", "g.safetensors"]


def test_a_memory_bomb_in_a_folder_job_is_listed_and_the_rest_translated(tmp_path, weights):
    images = tree(tmp_path / "in", 3)
    (tmp_path / "in" / "bomb.png").write_bytes(declared_png(20000, 20000))
    out = tmp_path / "out"
    done = capped(command(tmp_path / "in", out, weights))
    assert done.returncode == 1, done.stderr
    assert "files: 3 translated, 0 already done, 1 failed" in done.stdout
    assert user_files(out) == sorted([str(p) for p in images] + ["gtacity-failures.txt"])
    ((key, why),) = read_failures(out / "gtacity-failures.txt")
    assert key == "bomb.png" and "20000x20000 = 400,000,000 pixels, over the limit of" in why
    assert "pass --max-pixels 400000000 to try anyway" in why


def test_max_pixels_sets_the_limit(tmp_path, weights):
    rgb = make_image(tmp_path / "shot.png", size=(300, 200))
    refused = run(command(tmp_path / "shot.png", tmp_path / "a.png", weights, "--max-pixels", 59999))
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: {tmp_path / 'shot.png'}: 300x200 = 60,000 pixels, over the limit of 59,999 (set by "
        "--max-pixels); pass --max-pixels 60000 to try anyway, or scale the image down")
    done = run(command(tmp_path / "shot.png", tmp_path / "b.png", weights, "--max-pixels", 60000))
    assert done.returncode == 0, done.stderr
    assert decode_rgb(tmp_path / "b.png").shape == rgb.shape
    assert sorted(os.listdir(tmp_path)) == ["b.png", "g.safetensors", "shot.png"]


def test_an_image_over_opencvs_own_cap_is_listed_and_the_job_goes_on(tmp_path, weights):
    images = tree(tmp_path / "in", 3)
    (tmp_path / "in" / "huge.png").write_bytes(declared_png(60000, 60000, whole=False))
    out = tmp_path / "out"
    # Our limit lifted: OpenCV's own cap (2^30 pixels) is what refuses it.
    done = run(command(tmp_path / "in", out, weights, "--max-pixels", 60000 * 60000))
    assert done.returncode == 1, done.stderr
    assert "files: 3 translated, 0 already done, 1 failed" in done.stdout
    assert user_files(out) == sorted([str(p) for p in images] + ["gtacity-failures.txt"])
    ((key, why),) = read_failures(out / "gtacity-failures.txt")
    assert key == "huge.png"
    assert why.startswith(f"{tmp_path / 'in' / 'huge.png'}: not a readable image (OpenCV refuses it: "
                          "pixels <= CV_IO_MAX_IMAGE_PIXELS)")
    again = run(command(tmp_path / "in", out, weights))  # the default limit refuses it before OpenCV
    assert "files: 0 translated, 3 already done, 1 failed" in again.stdout
    assert "60000x60000 = 3,600,000,000 pixels, over the limit" in read_failures(out / "gtacity-failures.txt")[0][1]


# ---------------------------------------------------------------- outputs that are not numbers


@pytest.fixture
def overflowing(tmp_path, tiny_generator):
    """Finite weights (a load-time check passes them) whose first convolution overflows to Inf, so
    InstanceNorm turns every output into NaN."""
    with torch.no_grad():
        first = next(m for m in tiny_generator.modules() if isinstance(m, torch.nn.Conv2d))
        first.weight.fill_(3e38)  # every sum of 147 such products overflows
    assert all(bool(torch.isfinite(p).all()) for p in tiny_generator.parameters())
    return save_generator(tiny_generator, tmp_path / "nan.safetensors", direction="gta2city")


def test_a_generator_whose_output_is_nan_stops_a_folder_job_before_writing(tmp_path, overflowing):
    tree(tmp_path / "in", 4)
    out = tmp_path / "out"
    done = run(command(tmp_path / "in", out, overflowing))
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {overflowing}: the generator's output for the first batch holds ")
    assert "NaN/Inf values" in line and "Try --precision fp32" in line
    assert user_files(out) == []


def test_a_generator_whose_output_is_nan_writes_no_single_image(tmp_path, overflowing):
    make_image(tmp_path / "shot.png", size=SIZE)
    done = run(command(tmp_path / "shot.png", tmp_path / "out.png", overflowing))
    assert done.returncode == 1 and "NaN/Inf values" in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["nan.safetensors", "shot.png"]
