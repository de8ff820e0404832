"""The user's environment, not our bug (issue 18, engine side): a read-only output, a full disk (in
the output lock, the job manifest, the journal, mid-job), and runs that must not share an output
folder (a second run of the whole job; --overwrite while another shard still writes the old
settings). Real processes, real signals, a real tmpfs of 1 MiB (skipped, saying why, where this
user may not mount one)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from media import make_image
from test_hostile_files import run
from test_jobs import SIZE, command, tree, user_files

from gtacity.checkpoint import file_sha256, save_generator
from gtacity.engine.jobs.journal import MANIFEST, STATE_DIR
from gtacity.images import decode_rgb
from gtacity.nets import ResnetGenerator, init_weights

PAGE = 4096
FULL = "the disk is full; free some space (or choose an output on another disk) and rerun"


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


@pytest.fixture
def disk(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root with CAP_SYS_ADMIN: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path, pages_left: int) -> None:
    """Fill ``disk`` with a file until it is full, then give back ``pages_left`` pages."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:
        with pytest.raises(OSError, match="No space left"):
            while True:
                file.write(bytes(PAGE))
    os.truncate(filler, filler.stat().st_size - pages_left * PAGE)


def everything(root: Path) -> list[str]:
    """Every file and folder under ``root``, hidden ones included."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert "internal error" not in line
    return line


# ---------------------------------------------------------------- read-only, full disk


def test_a_read_only_output_is_one_line(tmp_path, disk, weights):
    tree(tmp_path / "in", 2)
    make_image(tmp_path / "shot.png", size=SIZE)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    assert one_line(run(command(tmp_path / "in", disk, weights))) == (
        f"error: {disk / STATE_DIR}: cannot be written (Read-only file system); the file system is "
        "read-only; choose an output folder on a writable disk")
    assert one_line(run(command(tmp_path / "shot.png", disk / "out.png", weights))) == (
        f"error: {disk / 'out.png'}: cannot be written (Read-only file system); the file system is "
        "read-only; choose an output folder on a writable disk")
    assert everything(disk) == []


def test_a_full_disk_at_the_output_lock_leaves_no_lock(tmp_path, disk, weights):
    make_image(tmp_path / "shot.png", size=SIZE)
    fill(disk, 0)
    line = one_line(run(command(tmp_path / "shot.png", disk / "out.png", weights)))
    assert line == f"error: {disk / 'out.png'}: cannot be written (No space left on device); {FULL}"
    assert everything(disk) == ["filler"]


def test_a_full_disk_at_the_manifest_leaves_no_empty_manifest(tmp_path, disk, weights):
    tree(tmp_path / "in", 2)
    fill(disk, 1)  # the start lock takes the last page
    line = one_line(run(command(tmp_path / "in", disk / "out", weights)))
    assert line == f"error: {disk / 'out' / MANIFEST}: cannot be written (No space left on device); {FULL}"
    assert everything(disk) == ["filler", "out"]


def test_a_full_disk_at_the_journal_leaves_no_journal(tmp_path, disk, weights):
    tree(tmp_path / "in", 2)
    fill(disk, 2)  # the start lock and the manifest take the last two pages
    line = one_line(run(command(tmp_path / "in", disk / "out", weights)))
    assert re.fullmatch(rf"error: {re.escape(str(disk / 'out' / STATE_DIR))}/[0-9a-f]{{16}}\.journal: "
                        rf"cannot be written \(No space left on device\); {re.escape(FULL)}", line), line
    assert everything(disk) == ["filler", "out", f"out/{STATE_DIR}", f"out/{MANIFEST}"]  # a whole manifest
    assert json.loads((disk / "out" / MANIFEST).read_text())["direction"] == "gta2city"


def test_a_disk_that_fills_mid_job_stops_it_in_one_line_and_a_rerun_finishes(tmp_path, disk, weights):
    images = tree(tmp_path / "in", 12)
    fill(disk, 12)
    out = disk / "out"
    line = one_line(run(command(tmp_path / "in", out, weights)))
    assert re.fullmatch(rf"error: {re.escape(str(out))}/.+: cannot be written \(No space left on device\); "
                        rf"{re.escape(FULL)}", line), line
    made = user_files(out)
    assert 0 < len(made) < len(images), "the disk did not fill mid-job; the test proves nothing"
    assert not [p for p in everything(out) if ".partial-" in p or p.endswith(".lock")]
    for rel in made:  # whatever was left is whole
        assert decode_rgb(out / rel).shape == (SIZE[1], SIZE[0], 3)
    (disk / "filler").unlink()
    again = run(command(tmp_path / "in", out, weights))
    assert again.returncode == 0, again.stderr
    translated, done = map(int, re.search(r"files: (\d+) translated, (\d+) already done, 0 failed",
                                          again.stdout).groups())
    assert translated + done == len(images) and done <= len(made)
    assert user_files(out) == sorted(str(p) for p in images)


# ---------------------------------------------------------------- runs sharing a folder


def paused(args: list, out: Path) -> subprocess.Popen:
    """Start a job and stop it (SIGSTOP) once it has started: its journal's lock stays held."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journals = list((out / STATE_DIR).glob("*.journal")) if (out / STATE_DIR).is_dir() else []
        begun = any("\nrun " in j.read_text() for j in journals)
        if begun and not (out / STATE_DIR / ".start.lock").exists():
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGSTOP)
    assert process.poll() is None, "the job ended before it could be paused; the test proves nothing"
    return process


def resumed(process: subprocess.Popen) -> subprocess.CompletedProcess:
    process.send_signal(signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_second_run_of_the_whole_job_is_refused_while_the_first_lives(tmp_path, weights):
    images = tree(tmp_path / "in", 30)
    out = tmp_path / "out"
    first = paused(command(tmp_path / "in", out, weights), out)
    try:
        who = f"another run (pid {first.pid} on {socket.gethostname()}, the whole job)"
        for extra, this in (((), "the whole job"), (("--shard", "1/2"), "shard 1/2")):
            line = one_line(run(command(tmp_path / "in", out, weights, *extra)))
            assert line == (
                f"error: {out}: {who} is translating this job into this folder, and this one ({this}) would "
                "redo its files; wait for it to finish, or split the job between runs with --shard K/N "
                "(the same N, a different K each)")
    finally:
        done = resumed(first)
    assert done.returncode == 0 and "files: 30 translated, 0 already done, 0 failed" in done.stdout
    assert user_files(out) == sorted(str(p) for p in images)
    assert len(list((out / STATE_DIR).glob("*.journal"))) == 1  # the refused runs left nothing


def test_shards_run_side_by_side_but_never_twice(tmp_path, weights):
    images = tree(tmp_path / "in", 30)
    out = tmp_path / "out"
    first = paused(command(tmp_path / "in", out, weights, "--shard", "1/2"), out)
    try:
        for shard in ("1/2", "2/3"):
            line = one_line(run(command(tmp_path / "in", out, weights, "--shard", shard)))
            assert f"(pid {first.pid} on {socket.gethostname()}, shard 1/2) is translating this job" in line
            assert f"and this one (shard {shard}) would redo its files" in line
        second = run(command(tmp_path / "in", out, weights, "--shard", "2/2"))
        assert second.returncode == 0 and "shard 2/2: files: 15 translated" in second.stdout
    finally:
        done = resumed(first)
    assert done.returncode == 0 and "shard 1/2: files: 15 translated" in done.stdout
    assert user_files(out) == sorted(str(p) for p in images)


def test_overwrite_is_refused_while_another_shard_writes_the_old_settings(tmp_path, weights):
    images = tree(tmp_path / "in", 30)
    torch.manual_seed(1)
    other = save_generator(init_weights(ResnetGenerator(ngf=8, n_blocks=2)), tmp_path / "other.safetensors",
                           direction="gta2city")
    out = tmp_path / "out"
    first = paused(command(tmp_path / "in", out, weights, "--shard", "1/2"), out)
    try:
        overwrite = command(tmp_path / "in", out, other, "--shard", "2/2", "--overwrite")
        line = one_line(run(overwrite))
        assert line.startswith(f"error: {out}: another run (pid {first.pid} on {socket.gethostname()}, "
                               "shard 1/2) is still writing this job with its old settings (weights_sha256 was ")
        assert line.endswith("--overwrite now would mix both in one folder; wait for every run to finish "
                             "(or stop them), then rerun")
        assert json.loads((out / MANIFEST).read_text())["weights_sha256"] == file_sha256(weights)
    finally:
        done = resumed(first)
    assert done.returncode == 0 and "shard 1/2: files: 15 translated" in done.stdout
    redone = run(overwrite)  # shard 1/2 is gone: now --overwrite may change the settings
    assert redone.returncode == 0 and "shard 2/2: files: 15 translated" in redone.stdout
    assert json.loads((out / MANIFEST).read_text())["weights_sha256"] == file_sha256(other)
    assert user_files(out) == sorted(str(p) for p in images)
