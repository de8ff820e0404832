"""Training's checkerboard watch: whole training frames scored at each sample step, a line past 2x."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from test_trainer import tiny_config
from torch import nn

from gtacity.trainer.data import Preprocess
from gtacity.trainer.gridwatch import MAX_WIDTH, grid_score, warning, watch_frames
from gtacity.trainer.loop import train
from gtacity.trainer.step import Precision


def street(h, w, seed=0):
    """A smooth frame with edges (no period-2/4 energy of its own), uint8 RGB."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 6)
    cv2.rectangle(img, (w // 5, h // 3), (w // 2, h - 5), (220, 210, 200), -1)
    return img


class AddsGrid(nn.Module):
    """A 'generator' that returns its input plus a +-amp period-4 checkerboard."""

    def __init__(self, amp: float):
        super().__init__()
        self.amp = amp

    def forward(self, x):
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return (x + self.amp * torch.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)).clamp(-1, 1)


def test_a_generator_that_draws_a_grid_scores_far_over_one_that_does_not():
    frames = [street(256, 512, s) for s in (0, 1)]
    clean = grid_score(nn.Identity(), frames, Precision(), torch.device("cpu"))
    gridded = grid_score(AddsGrid(6 / 127.5), frames, Precision(), torch.device("cpu"))
    assert clean == pytest.approx(1.0, abs=0.1)
    assert gridded > 10, gridded
    line = warning(250, "city2gta", gridded, 2)
    assert line.startswith("step 250: city2gta's") and "2 whole training frame(s)" in line


def test_whole_frames_are_scaled_as_training_scales_them_capped_and_cut_to_multiples_of_4(tmp_path):
    for name, (h, w) in {"a.png": (526, 957), "b.png": (1024, 2048), "c.png": (50, 90)}.items():
        cv2.imwrite(str(tmp_path / name), street(h, w))
    (tmp_path / "0_broken.png").write_bytes(b"not an image")
    files = sorted(tmp_path.iterdir())
    shapes = [f.shape for f in watch_frames(files, Preprocess("scale_width_and_crop", 512, 128), count=3)]
    assert shapes == [(280, 512, 3), (256, 512, 3), (284, 512, 3)]  # the broken file skipped
    big = watch_frames(files[1:3], Preprocess("scale_width_and_crop", 2048, 128))
    assert [f.shape[1] for f in big] == [MAX_WIDTH, MAX_WIDTH]
    native = watch_frames(files[1:], Preprocess("crop", 48, 32), count=3)
    assert [f.shape for f in native] == [(524, 956, 3), (512, 1024, 3), (48, 88, 3)]


def test_training_logs_each_directions_grid_score_at_each_sample_step(tmp_path, capsys):
    result = train(tiny_config(tmp_path, sample_every=8), progress_bar=False)  # 24 steps
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    watched = [r for r in records if "artifacts/gta2city" in r]
    assert [r["step"] for r in watched] == [8, 16, 24]
    for r in watched:
        assert set(r) == {"step", "artifacts/gta2city", "artifacts/city2gta"}
        assert all(np.isfinite(r[k]) and r[k] > 0 for k in r)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.run_dir))
    events.Reload()
    assert {"artifacts/gta2city", "artifacts/city2gta"} <= set(events.Tags()["scalars"])
