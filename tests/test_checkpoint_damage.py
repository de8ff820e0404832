"""Training checkpoints that are damaged, empty or half-rotated: verified on load, the previous one
kept and fallen back to with a line saying so; and a resumed run's metrics.jsonl without repeats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from click.testing import CliRunner
from media import make_image
from test_trainer import make_domains, tiny_config

from gtacity.checkpoint import read_generator_file, save_generator
from gtacity.cli import cli
from gtacity.nets import ResnetGenerator, init_weights
from gtacity.trainer.data import DataError, Preprocess
from gtacity.trainer.distill import DistillConfig, distill
from gtacity.trainer.loop import train
from gtacity.trainer.state import checkpoint_damage, read_checkpoint


def damage_member(path, member_suffix: str, n: int = 64) -> str:
    """Flip ``n`` bytes in the middle of the stored data of the zip member ending in ``member_suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    data = bytearray(path.read_bytes())
    with open(path, "rb") as f:  # the data starts after the local header and its name and extra field
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
    data[start:start + n] = bytes(b ^ 0xFF for b in data[start:start + n])
    path.write_bytes(bytes(data))
    return info.filename


def generator_member(path) -> str:
    """The zip member holding the storage of one of G_gta2city's weights."""
    weight = torch.load(path, weights_only=True)["nets"]["G_gta2city"]["model.10.conv_block.1.weight"]
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if "/data/" in n and zf.read(n) == weight.numpy().tobytes())


def steps_logged(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "G_total" in line]


def gtacity(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gtacity", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_cli_resume_falls_back_past_a_damaged_latest_checkpoint(tmp_path):
    gta, city = make_domains(tmp_path / "data")
    run = tmp_path / "run"
    first = gtacity("train", "--gta", str(gta), "--city", str(city), "--out", str(run), "--ngf", "8",
                    "--n-blocks", "2", "--ndf", "8", "--preprocess", "crop", "--load-size", "48", "--crop-size",
                    "32", "--epochs", "2", "--epochs-decay", "1", "--workers", "0", "--checkpoint-every", "2",
                    "--log-every", "1", "--sample-every", "1000", "--amp", "off", "--stop-after", "4",
                    "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    latest, previous = run / "checkpoints" / "latest.pt", run / "checkpoints" / "previous.pt"
    assert read_checkpoint(previous)["progress"]["step"] == 2
    member = damage_member(latest, generator_member(latest))

    resumed = gtacity("train", "--resume", str(run), "--stop-after", "3", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    notices = [line for line in resumed.stderr.splitlines() if "latest.pt" in line]
    assert notices == [f"{latest}: is damaged: member {member} fails its CRC-32 check; continuing from "
                       f"{previous} (step 2), the checkpoint before it"]
    assert "resuming at step 2" in resumed.stdout and "stopped at step 5" in resumed.stdout
    # The run went on from step 2's weights: every weight finite and of a trained net's size.
    state, _ = read_generator_file(run / "gta2city.safetensors")
    assert all(float(t.abs().max()) < 10 for t in state.values())
    # Steps 3 and 4 were logged before the damage and again after the resume: each once now.
    assert steps_logged(run) == [1, 2, 3, 4, 5]


def test_empty_latest_without_previous_is_one_line(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tmp_path), progress_bar=False, stop_after=1)
    (run / "checkpoints" / "latest.pt").write_bytes(b"")
    result = CliRunner().invoke(cli, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 1
    assert result.output == (f"error: {run}/checkpoints/latest.pt: is empty (0 bytes); there is no previous.pt "
                             "beside it to fall back to\n")


def test_both_checkpoints_damaged_is_one_line(tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tmp_path, checkpoint_every=1), progress_bar=False, stop_after=2)
    ckpt = run / "checkpoints"
    (ckpt / "latest.pt").write_bytes(b"")
    member = damage_member(ckpt / "previous.pt", "data.pkl", n=8)
    with pytest.raises(DataError) as e:
        read_checkpoint(run)
    assert str(e.value) == (f"{ckpt}/latest.pt: is empty (0 bytes), and {ckpt}/previous.pt is damaged: member "
                            f"{member} fails its CRC-32 check; this run cannot continue: start a new one "
                            "(--init-from takes a generator file of this run)")


def test_previous_is_the_checkpoint_before_and_a_damaged_latest_never_replaces_it(tmp_path, capsys):
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    train(tiny_config(tmp_path, checkpoint_every=1), progress_bar=False, stop_after=3)
    assert [read_checkpoint(ckpt / n)["progress"]["step"] for n in ("latest.pt", "previous.pt")] == [3, 2]
    damage_member(ckpt / "latest.pt", "data.pkl", n=8)
    train(tiny_config(tmp_path), resume=True, progress_bar=False, stop_after=1)
    assert "continuing from" in capsys.readouterr().err
    # Resumed from step 2, saved step 3 again; the damaged file was not rotated into previous.pt.
    assert [read_checkpoint(ckpt / n)["progress"]["step"] for n in ("latest.pt", "previous.pt")] == [3, 2]
    assert checkpoint_damage(ckpt / "latest.pt") is None and checkpoint_damage(ckpt / "previous.pt") is None


def test_crash_between_the_renames_resumes_from_previous(tmp_path, capsys):
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    train(tiny_config(tmp_path, checkpoint_every=1), progress_bar=False, stop_after=2)
    (ckpt / "latest.pt").unlink()  # latest.pt renamed to previous.pt, the new one not yet in place
    with pytest.raises(DataError, match="already holds a run"):
        train(tiny_config(tmp_path), progress_bar=False)
    result = train(tiny_config(tmp_path), resume=True, progress_bar=False, stop_after=1)
    assert result.step == 2
    assert f"{ckpt}/latest.pt: is missing; continuing from {ckpt}/previous.pt (step 1)" in capsys.readouterr().err


def test_resume_forgets_the_metrics_logged_after_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    ckpt = run / "checkpoints"
    train(tiny_config(tmp_path, checkpoint_every=2), progress_bar=False, stop_after=4)
    # As if killed after logging steps 3 and 4 but before step 4's checkpoint, with a torn last line.
    os.replace(ckpt / "previous.pt", ckpt / "latest.pt")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "epo')
    train(tiny_config(tmp_path), resume=True, progress_bar=False, stop_after=3)
    assert steps_logged(run) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_distill_keeps_previous_and_falls_back(tmp_path, capsys):
    torch.manual_seed(3)
    teacher = save_generator(init_weights(ResnetGenerator(ngf=8, n_blocks=2)), tmp_path / "teacher.safetensors",
                             direction="city2gta")
    for i in range(4):
        make_image(tmp_path / "city" / f"f{i}.png", size=(40, 32), seed=i)
    cfg = DistillConfig(out=str(tmp_path / "run"), teacher=str(teacher), images=(str(tmp_path / "city"),), ngf=4,
                        n_blocks=2, preprocess=Preprocess("crop", 32, 32), steps=6, workers=0, log_every=1,
                        sample_every=100, checkpoint_every=2)
    distill(cfg, progress_bar=False, stop_after=4)
    ckpt = tmp_path / "run" / "checkpoints"
    assert read_checkpoint(ckpt / "previous.pt")["progress"]["step"] == 2
    damage_member(ckpt / "latest.pt", "data.pkl", n=8)
    distill(DistillConfig(out=cfg.out), resume=True, progress_bar=False)
    assert "continuing from" in capsys.readouterr().err
    assert read_checkpoint(ckpt / "latest.pt")["progress"]["step"] == 6
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "l1" in r] == [1, 2, 3, 4, 5, 6]
