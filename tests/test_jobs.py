"""Bulk folder jobs: resume after SIGKILL, shards side by side, bad files listed and skipped.

Real ``gtacity translate`` processes, real signals and real files; a tiny generator on 64x48
images keeps each run short (process start-up, mostly importing torch, dominates).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_clip, make_image_tree, truncate, video_info, write_garbage
from test_translate import reference

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.jobs.journal import MANIFEST, STATE_DIR
from gtacity.engine.jobs.shards import Shard, ShardError, parse_shard
from gtacity.images import decode_rgb
from gtacity.nets import ResnetGenerator, init_weights

SIZE = (64, 48)


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def tree(root: Path, n: int) -> dict:
    """``n`` PNGs in three subfolders: {relative path: RGB pixels}."""
    return make_image_tree(root, [f"s{i % 3}/f{i:03d}.png" for i in range(n)], size=SIZE)


def command(inp, out, weights, *extra) -> list[str]:
    return [sys.executable, "-m", "gtacity", "translate", str(inp), "-o", str(out), "--weights",
            str(weights), "--backend", "torch", "--workers", "2", "-q", *map(str, extra)]


def user_files(out: Path) -> list[str]:
    """Every file under ``out`` except the job's own records, as sorted relative paths."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and STATE_DIR not in p.parts and p.name != MANIFEST)


def finished(out: Path) -> int:
    return sum(1 for p in out.rglob("*.png") if not p.name.startswith("."))


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_gives_exactly_the_complete_set(tmp_path, weights, tiny_generator):
    images = tree(tmp_path / "in", 45)
    out = tmp_path / "out"
    rng = random.Random(1)
    # First kill at a random moment (start-up included; at the latest after 14 outputs, so that a
    # fast machine cannot finish the job first), then kills after k outputs, mid-job.
    targets = [None, rng.randint(1, 14), rng.randint(15, 30)]
    for target in targets:
        process = subprocess.Popen(command(tmp_path / "in", out, weights, "--batch-size", 2),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + (rng.uniform(0.5, 4.0) if target is None else 120)
        while time.monotonic() < deadline and process.poll() is None:
            if out.is_dir() and finished(out) >= (14 if target is None else target):
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.communicate()
    before = finished(out) if out.is_dir() else 0
    assert before < len(images), "the job finished before the kills; the test proves nothing"
    done = subprocess.run(command(tmp_path / "in", out, weights), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = re.search(r"files: (\d+) translated, (\d+) already done, 0 failed", done.stdout)
    translated, already = int(counts[1]), int(counts[2])
    # An image renamed into place but not yet journalled when killed is redone, so "already done"
    # may fall short of what was on disk by the images in flight, never exceed it.
    assert translated + already == len(images) and 0 < already <= before
    assert user_files(out) == sorted(str(p) for p in images)
    hidden = [p for p in out.rglob(".*") if STATE_DIR not in p.parts]
    assert hidden == [], f"temporary files left: {hidden}"
    for rel, src in images.items():
        got = decode_rgb(out / rel)
        assert got is not None and got.shape == src.shape
        assert np.abs(got.astype(int) - reference(tiny_generator, src).astype(int)).max() <= 1


@pytest.mark.slow
def test_shards_started_together_cover_the_input_exactly_once(tmp_path, weights):
    images = tree(tmp_path / "in", 20)
    out = tmp_path / "out"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION"))}
    shards = [  # one by hand, one in a Slurm array (ids 10..12), one in a Kubernetes indexed Job
        (["--shard", "1/3"], {}),
        (["--shard", "auto"], {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10",
                               "SLURM_ARRAY_TASK_MAX": "12", "SLURM_ARRAY_TASK_COUNT": "3"}),
        (["--shard", "auto/3"], {"JOB_COMPLETION_INDEX": "1"}),
    ]
    processes = [subprocess.Popen(command(tmp_path / "in", out, weights, *args), env={**base, **env},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args, env in shards]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in processes]
    assert [r[2] for r in results] == [0, 0, 0], [r[1] for r in results]
    for (stdout, _, _), label, share in zip(results, ("1/3", "3/3", "2/3"), (7, 6, 7)):
        assert f"shard {label}: files: {share} translated, 0 already done, 0 failed" in stdout
    assert user_files(out) == sorted(str(p) for p in images)
    recorded = []
    for journal in (out / STATE_DIR).glob("*.journal"):
        recorded += [json.loads(line[5:]) for line in journal.read_text().splitlines() if line.startswith("done ")]
    assert sorted(recorded) == sorted(str(p) for p in images)  # each file translated by one shard
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["direction"], manifest["backend"], manifest["precision"]) == ("gta2city", "torch", "fp32")


def run_cli(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_bad_files_are_listed_skipped_and_retried_and_videos_resume_per_video(tmp_path, weights):
    images = tree(tmp_path / "in", 6)
    write_garbage(tmp_path / "in" / "s0" / "garbage.png")
    (tmp_path / "in" / "cut.png").write_bytes((tmp_path / "in" / "s1" / "f001.png").read_bytes()[:60])
    (tmp_path / "in" / "clips").mkdir()
    make_clip(tmp_path / "in" / "clips" / "drive.mp4", frames=8, size=SIZE)
    write_garbage(tmp_path / "in" / "clips" / "broken.mp4")
    args = ("translate", tmp_path / "in", "-o", tmp_path / "out", "--weights", weights, "--backend", "torch", "-q")
    first = run_cli(*args)
    assert first.exit_code == 1, first.output
    assert "files: 7 translated, 0 already done, 3 failed" in first.stdout
    assert "3 file(s) failed and were skipped (listed in" in first.stderr
    failures = (tmp_path / "out" / "gtacity-failures.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in failures] == ["clips/broken.mp4", "cut.png", "s0/garbage.png"]
    assert "not a readable video" in failures[0] and "not a readable image" in failures[2]
    good = sorted(str(p) for p in images) + ["clips/drive.mp4"]
    assert user_files(tmp_path / "out") == sorted(good + ["gtacity-failures.txt"])
    assert video_info(tmp_path / "out" / "clips" / "drive.mp4")["frames"] == 8

    stamp = os.stat(tmp_path / "out" / "clips" / "drive.mp4").st_mtime_ns
    again = run_cli(*args)  # failed files are retried, finished ones (the video too) are not
    assert again.exit_code == 1 and "files: 0 translated, 7 already done, 3 failed" in again.stdout
    assert os.stat(tmp_path / "out" / "clips" / "drive.mp4").st_mtime_ns == stamp

    for bad in ("s0/garbage.png", "cut.png", "clips/broken.mp4"):
        (tmp_path / "in" / bad).unlink()
    make_clip(tmp_path / "in" / "clips" / "second.mkv", frames=5, size=SIZE, audio=None)
    last = run_cli(*args)
    assert last.exit_code == 0, last.output
    assert "files: 1 translated, 7 already done, 0 failed" in last.stdout
    assert not (tmp_path / "out" / "gtacity-failures.txt").exists()
    assert video_info(tmp_path / "out" / "clips" / "second.mkv")["frames"] == 5


def test_resume_with_other_settings_is_refused_unless_overwrite(tmp_path, weights):
    images = tree(tmp_path / "in", 4)
    torch.manual_seed(1)
    other = save_generator(init_weights(ResnetGenerator(ngf=8, n_blocks=2)), tmp_path / "other.safetensors",
                           direction="gta2city")
    args = ("translate", tmp_path / "in", "-o", tmp_path / "out", "--backend", "torch", "-q", "--weights")
    assert run_cli(*args, weights).exit_code == 0
    journals = sorted((tmp_path / "out" / STATE_DIR).iterdir())
    refused = run_cli(*args, other)
    assert refused.exit_code == 1 and sorted((tmp_path / "out" / STATE_DIR).iterdir()) == journals
    line = refused.stderr.strip()
    assert "\n" not in line and "was made with other settings (weights_sha256 was '" in line
    assert "--overwrite" in line
    redone = run_cli(*args, other, "--overwrite")
    assert redone.exit_code == 0 and "files: 4 translated, 0 already done" in redone.stdout
    assert run_cli(*args, other).stdout.count("0 translated, 4 already done") == 1
    assert user_files(tmp_path / "out") == sorted(str(p) for p in images)

    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    foreign = run_cli("translate", tmp_path / "in", "-o", tmp_path / "theirs", "--weights", weights, "--backend", "torch")
    assert foreign.exit_code == 1 and "not a gtacity job folder" in foreign.stderr
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["notes.txt"]


def test_a_journal_line_cut_off_by_a_kill_does_not_count(tmp_path, weights):
    """A kill in the middle of a journal line: the item is redone, not taken as done."""
    tree(tmp_path / "in", 2)
    args = ("translate", tmp_path / "in", "-o", tmp_path / "out", "--weights", weights, "--backend", "torch", "-q")
    assert run_cli(*args).exit_code == 0
    (journal,) = (tmp_path / "out" / STATE_DIR).glob("*.journal")
    truncate(journal, keep=(len(journal.read_bytes()) - 1) / len(journal.read_bytes()))
    again = run_cli(*args)
    assert again.exit_code == 0 and "files: 1 translated, 1 already done" in again.stdout


@pytest.mark.parametrize("text, env, expected", [
    ("3/16", {}, Shard(3, 16)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8"}, Shard(8, 8, "SLURM_ARRAY_TASK_ID")),
    ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2",
              "SLURM_ARRAY_TASK_MAX": "7", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(3, 4, "SLURM_ARRAY_TASK_ID")),
    ("auto/4", {"JOB_COMPLETION_INDEX": "0"}, Shard(1, 4, "JOB_COMPLETION_INDEX")),
    ("auto", {"JOB_COMPLETION_INDEX": "3", "GTACITY_SHARD_COUNT": "4"}, Shard(4, 4, "JOB_COMPLETION_INDEX")),
])
def test_shard_values(text, env, expected):
    assert parse_shard(text, env) == expected


@pytest.mark.parametrize("text, env, message", [
    ("3", {}, "use K/N"),
    ("0/4", {}, "K must be in 1..N"),
    ("5/4", {}, "K must be in 1..N"),
    ("auto", {}, "no Slurm array"),
    ("auto", {"JOB_COMPLETION_INDEX": "2"}, "needs the count"),
    ("auto/3", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, "has 4 tasks"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9",
              "SLURM_ARRAY_TASK_COUNT": "3"}, "not an evenly spaced range"),
])
def test_bad_shard_values_say_what_to_pass(text, env, message):
    with pytest.raises(ShardError, match=message):
        parse_shard(text, env)


def test_every_item_lands_in_exactly_one_shard():
    items = list(range(103))
    picked = sorted(i for k in range(1, 8) for i in Shard(k, 7).select(items))
    assert picked == items


def test_bench_e2e_on_a_folder_runs_the_pooled_folder_path(tmp_path):
    from gtacity.engine.measure.bench import run_bench
    from gtacity.engine.measure.bench_plan import BenchConfig

    tree(tmp_path / "frames", 6)
    lines = []
    cfg = BenchConfig(backends=("torch",), device="cpu", batch_sizes=(2,), e2e=tmp_path / "frames",
                      ngf=8, n_blocks=2, repeats=2, warmup=1)
    report = run_bench(cfg, log=lines.append)
    (result,) = report.e2e
    assert (result.size, result.frames) == ("64x48", 6) and result.stage_s["infer"] > 0
    assert any(re.search(r"bound by \w+, busy \d+% of the run", line) for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


def test_cleanup_removes_dead_runs_leftovers_and_keeps_live_ones(tmp_path):
    from gtacity.engine.jobs.journal import RunJournal, clean_leftovers
    from gtacity.files import partial_path

    live, dead, old = RunJournal(tmp_path), RunJournal(tmp_path), RunJournal(tmp_path)
    live.start("t1")  # holds its lock, like a shard still running
    dead.start("t1")
    dead.close()  # what a SIGKILL leaves: the journal, its lock released by the kernel
    old.start("t0")  # a run of settings since replaced with --overwrite
    old.close()
    (tmp_path / "sub").mkdir()
    mine, theirs = (partial_path(tmp_path / "sub" / "a.png", run.owner) for run in (live, dead))
    pid_debris = partial_path(tmp_path / "sub" / "b.png", "999999999")  # a dead plain translate's
    for path in (mine, theirs, pid_debris, tmp_path / ".other-hidden.png"):
        path.write_bytes(b"x")
    assert clean_leftovers(tmp_path, "t1") == 2
    assert mine.exists() and not theirs.exists() and not pid_debris.exists()
    assert (tmp_path / ".other-hidden.png").exists()
    assert sorted(p.stem for p in (tmp_path / STATE_DIR).iterdir()) == sorted([live.run_id, dead.run_id])
    live.close()


def test_folder_options_on_a_single_file_are_refused_in_one_line(tmp_path):
    make_clip(tmp_path / "drive.mp4", frames=2, size=SIZE, audio=None)
    result = run_cli("translate", tmp_path / "drive.mp4", "-o", tmp_path / "out.mp4", "--shard", "1/2")
    assert result.exit_code == 1 and "--shard work on a folder input" in result.stderr
    bad = run_cli("translate", tmp_path, "-o", tmp_path / "out", "--shard", "2")
    assert bad.exit_code == 1 and "use K/N" in bad.stderr and "Traceback" not in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.mp4"]
