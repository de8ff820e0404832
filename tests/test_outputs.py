"""Outputs under pressure: real signals to a real `gtacity translate`, SIGKILL debris, two jobs to
one output. Each test checks the exit code, the one line printed, and exactly what is on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from media import make_clip, make_image_tree, video_info

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.media.lock import OutputLock
from gtacity.files import remove_stale_partials, written_whole

DEAD_PID = 2**22 + 1  # above Linux's pid_max ceiling (4194304): never a running process


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


@pytest.fixture
def slow_clip(tmp_path) -> Path:
    """A clip that takes many seconds to encode with --preset veryslow: time to signal the job."""
    make_clip(tmp_path / "drive.mp4", frames=30, size=(128, 96), audio="aac")
    return tmp_path / "drive.mp4"


def start_job(clip: Path, out: Path, weights: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "gtacity", "translate", str(clip), "-o", str(out),
               "--weights", str(weights), "--backend", "torch", "--preset", "veryslow", "-q"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_partial(job: subprocess.Popen, folder: Path, name: str) -> Path:
    """The job's partial file, once it has one (the sink is open and frames are flowing)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [p for p in folder.iterdir() if p.name.startswith(f".{name}.partial-{job.pid}-")]
        if found and found[0].stat().st_size > 0:
            return found[0]
        assert job.poll() is None, job.communicate()
        time.sleep(0.02)
    raise AssertionError("the job never opened its output")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_the_job_and_remove_the_partial_output(
    tmp_path, weights, slow_clip, signum, code
):
    job = start_job(slow_clip, tmp_path / "out.mp4", weights)
    wait_for_partial(job, tmp_path, "out.mp4")
    job.send_signal(signum)
    stdout, stderr = job.communicate(timeout=60)
    assert job.returncode == code
    assert stderr.strip() == f"stopped by {signal.Signals(signum).name}" and stdout == ""
    assert names(tmp_path) == ["drive.mp4", "g.safetensors"]


def test_second_job_to_the_same_output_is_refused_while_the_first_runs(
    tmp_path, weights, slow_clip
):
    first = start_job(slow_clip, tmp_path / "out.mp4", weights)
    wait_for_partial(first, tmp_path, "out.mp4")
    second = CliRunner().invoke(cli, ["translate", str(slow_clip), "-o", str(tmp_path / "out.mp4"),
                                      "--weights", str(weights), "--backend", "torch", "--overwrite"])
    assert second.exit_code == 1
    assert second.stderr.strip() == (
        f"error: {tmp_path / 'out.mp4'}: another gtacity job (pid {first.pid}) is writing this "
        "output; wait for it to finish or choose another output"
    )
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert names(tmp_path) == ["drive.mp4", "g.safetensors"]


def test_sigkill_debris_is_recognisable_and_the_next_run_removes_only_it(
    tmp_path, weights, slow_clip
):
    job = start_job(slow_clip, tmp_path / "out.mp4", weights)
    partial = wait_for_partial(job, tmp_path, "out.mp4")
    job.kill()
    job.communicate(timeout=60)
    assert partial.exists() and partial.name.endswith(".mp4")  # named with the dead writer's pid
    # Things that look alike but are not this output's debris: all must survive the cleanup.
    others = [f".out.mp4.partial-{os.getpid()}-0123abcd.mp4",  # a live writer (this test)
              f".other.mp4.partial-{DEAD_PID}-0123abcd.mp4",  # another output's
              ".out.mp4.partial-notes.txt", "out.mp4.partial-1-0123abcd.mp4"]
    for name in others:
        (tmp_path / name).write_text("not gtacity's to delete")
    make_clip(tmp_path / "short.mp4", frames=4, audio=None)
    others.append("short.mp4")
    done = subprocess.run([sys.executable, "-m", "gtacity", "translate", str(tmp_path / "short.mp4"), "-o",
                           str(tmp_path / "out.mp4"), "--weights", str(weights), "--backend",
                           "torch", "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert names(tmp_path) == sorted(["drive.mp4", "g.safetensors", "out.mp4", *others])
    assert video_info(tmp_path / "out.mp4")["frames"] == 4


def test_stale_partials_inside_an_output_folder_are_removed_before_the_overwrite_check(
    tmp_path, weights
):
    make_image_tree(tmp_path / "in", files=["a.png", "sub/b.png"])
    (tmp_path / "out" / "sub").mkdir(parents=True)
    debris = tmp_path / "out" / "sub" / f".b.png.partial-{DEAD_PID}-89abcdef.png"
    debris.write_bytes(b"half an image")
    result = CliRunner().invoke(cli, ["translate", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                      "--weights", str(weights), "--backend", "torch", "-q"])
    assert result.exit_code == 0, result.output
    job_records = {".gtacity-job"}  # a folder input is a resumable bulk job
    assert sorted(p.relative_to(tmp_path / "out").as_posix()
                  for p in (tmp_path / "out").rglob("*")
                  if p.is_file() and not job_records & set(p.relative_to(tmp_path / "out").parts)
                  ) == ["a.png", "sub/b.png"]
    assert not (tmp_path / ".out.lock").exists()


def test_lock_refuses_a_second_holder_and_is_removed_on_release(tmp_path):
    first = OutputLock(tmp_path / "x.mp4").acquire()
    assert (tmp_path / ".x.mp4.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(Exception, match=rf"another gtacity job \(pid {os.getpid()}\)"):
        OutputLock(tmp_path / "x.mp4").acquire()
    first.release()
    assert names(tmp_path) == []
    OutputLock(tmp_path / "x.mp4").acquire().release()
    assert remove_stale_partials(tmp_path / "missing" / "x.mp4") == 0


def test_written_whole_replaces_only_on_success_and_clears_a_dead_writers_debris(tmp_path):
    final = tmp_path / "latest.pt"
    final.write_bytes(b"old")
    debris = tmp_path / f".latest.pt.partial-{DEAD_PID}-0123abcd.pt"
    debris.write_bytes(b"half of a checkpoint a SIGKILL left")
    with pytest.raises(KeyboardInterrupt):
        with written_whole(final) as partial:
            partial.write_bytes(b"half")
            raise KeyboardInterrupt
    assert final.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    os.umask(umask := os.umask(0o022))
    with written_whole(tmp_path / "sub" / "latest.pt") as partial:
        assert partial.parent == tmp_path / "sub" and partial.suffix == ".pt" and partial.name.startswith(".")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o600)  # a writer that makes private files
        os.write(fd, b"new")
        os.close(fd)
    assert (tmp_path / "sub" / "latest.pt").read_bytes() == b"new"
    assert (tmp_path / "sub" / "latest.pt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["latest.pt"]
