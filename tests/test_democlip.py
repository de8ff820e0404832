"""The synthetic demo clip: a real H.264 + AAC file that the engine can translate."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from media import video_info

from gtacity.cli import cli
from gtacity.democlip import _Scene, render_frame


def test_demo_clip_is_a_real_video_with_audio(tmp_path):
    result = CliRunner().invoke(cli, ["demo-clip", str(tmp_path / "d.mp4"), "--seconds", "1", "--size", "128x72"])
    assert result.exit_code == 0, result.output
    info = video_info(tmp_path / "d.mp4")
    assert info["size"] == (128, 72) and info["frames"] == 25 and info["rate"] == 25
    assert info["audio"] == [("aac", 48000, 2)] and info["tags"] == (1, 1, 1, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["d.mp4"]


def test_the_street_moves_and_is_deterministic():
    scene = _Scene(128, 72, seed=3)
    a, b = render_frame(scene, 0.0), render_frame(scene, 0.5)
    assert np.array_equal(a, render_frame(scene, 0.0))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5  # the camera drove forward
    sky, road = a[:8, 56:72].reshape(-1, 3).mean(0), a[-8:, 48:80].reshape(-1, 3).mean(0)
    assert sky[2] > sky[0] + 40 and abs(road[0] - road[2]) < 20  # blue sky, grey road


def test_refuses_to_overwrite_and_bad_sizes(tmp_path):
    (tmp_path / "mine.mp4").write_bytes(b"keep")
    r = CliRunner().invoke(cli, ["demo-clip", str(tmp_path / "mine.mp4")])
    assert r.exit_code == 1 and "--overwrite" in r.stderr and (tmp_path / "mine.mp4").read_bytes() == b"keep"
    r = CliRunner().invoke(cli, ["demo-clip", str(tmp_path / "x.mp4"), "--size", "65x64"])
    assert r.exit_code == 1 and "must be even" in r.stderr


def test_label_maps_name_what_was_drawn(tmp_path):
    from gtacity.democlip import CAR, ROAD, SKY, VEGETATION, render_labelled

    scene = _Scene(256, 144, seed=3)
    image, labels = render_labelled(scene, 1.3)
    assert np.array_equal(image, render_frame(scene, 1.3)) and labels.shape == (144, 256)
    rgb = image.astype(int)
    mean = {k: rgb[labels == k].mean(0) for k in (SKY, ROAD, VEGETATION, CAR)}
    assert mean[SKY][2] > mean[SKY][0] + 40  # blue
    assert abs(mean[ROAD][0] - mean[ROAD][2]) < 25 and mean[ROAD].mean() < 110  # dark grey
    assert mean[VEGETATION][1] > mean[VEGETATION][0] and mean[CAR][2] > mean[CAR][1]  # green trees, blue car
    assert (labels == CAR).sum() > 50


def test_labelled_frames_form_a_cityscapes_tree_the_score_reads(tmp_path):
    r = CliRunner().invoke(cli, ["demo-clip", str(tmp_path / "game"), "--labels", "--seconds", "2", "--fps", "2",
                                 "--size", "128x64"])
    assert r.exit_code == 0 and "wrote 4 frames with label maps" in r.output, r.output
    images = sorted((tmp_path / "game" / "leftImg8bit" / "train" / "demo").iterdir())
    assert [p.name for p in images][0] == "demo_000000_000000_leftImg8bit.png" and len(images) == 4
    gt = tmp_path / "game" / "gtFine"
    r = CliRunner().invoke(cli, ["eval", "miou", str(gt), "--gt", str(gt)])  # the labels as their own prediction
    assert r.exit_code == 0 and "mIoU 100.0" in r.output and "(4 images)" in r.output, r.output
    again = CliRunner().invoke(cli, ["demo-clip", str(tmp_path / "game"), "--labels"])
    assert again.exit_code == 1 and "is not empty; pass --overwrite" in again.stderr
