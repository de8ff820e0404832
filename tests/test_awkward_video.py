"""Awkward videos through `gtacity translate`: a phone's rotation, damage in the middle, files cut
short. Every clip is made (and damaged) here; each test checks the exit code, the line printed,
what is left on disk and that the output decodes."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from click.testing import CliRunner
from media import corrupt_packet, make_clip, remux, truncate, video_info

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.media.sources import open_source

FRAMES = 30


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def translate_cli(weights, *args):
    argv = ["translate", *map(str, args), "--weights", str(weights), "--backend", "torch", "-q"]
    return CliRunner().invoke(cli, argv)


@pytest.mark.parametrize("container, rotation", [("mp4", 90), ("mkv", -90), ("mov", 90)])
def test_rotation_is_carried_so_the_output_plays_the_same_way_up(
    tmp_path, weights, container, rotation
):
    make_clip(tmp_path / f"phone.{container}", frames=4, size=(64, 48), rotation=rotation)
    assert video_info(tmp_path / f"phone.{container}")["rotation"] == rotation
    result = translate_cli(weights, tmp_path / f"phone.{container}", "-o", tmp_path / f"out.{container}")
    assert result.exit_code == 0, result.output
    after = video_info(tmp_path / f"out.{container}")
    assert (after["rotation"], after["size"], after["frames"]) == (rotation, (64, 48), 4)


def test_unrotated_video_gets_no_rotation(tmp_path, weights):
    make_clip(tmp_path / "in.mp4", frames=3)
    assert translate_cli(weights, tmp_path / "in.mp4", "-o", tmp_path / "out.mp4").exit_code == 0
    assert video_info(tmp_path / "out.mp4")["rotation"] == 0


def _cut_faststart_mp4(folder):
    make_clip(folder / "whole.mp4", frames=FRAMES, size=(96, 64))
    remux(folder / "whole.mp4", folder / "drive.mp4", movflags="faststart")  # index up front
    (folder / "whole.mp4").unlink()
    truncate(folder / "drive.mp4", 0.5)
    return folder / "drive.mp4"


def _cut_mkv(folder):
    make_clip(folder / "drive.mkv", frames=FRAMES, size=(96, 64))
    truncate(folder / "drive.mkv", 0.5)
    return folder / "drive.mkv"


@pytest.mark.parametrize("make", [_cut_faststart_mp4, _cut_mkv], ids=["faststart mp4", "mkv"])
def test_a_clip_cut_short_is_reported_with_the_missing_time_and_exit_1(tmp_path, weights, make):
    clip = make(tmp_path)
    out = tmp_path / f"out{clip.suffix}"
    result = translate_cli(weights, clip, "-o", out)
    assert result.exit_code == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {clip}: damaged input: "), line
    assert "frames missing from " in line and "to 1.20 s (the file ends early)" in line
    assert f"the output {out} (" in line and "is kept but incomplete; pass --allow-damaged" in line
    decoded = video_info(out)["frames"]
    assert 10 < decoded < FRAMES and f"({decoded} frames)" in line  # kept, and it plays

    again = translate_cli(weights, clip, "-o", out, "--overwrite", "--allow-damaged")
    assert again.exit_code == 0, again.output
    assert "INCOMPLETE, damaged input: " in again.stdout and "frames missing" in again.stdout


@pytest.mark.parametrize("container, expected", [
    ("mp4", None),  # the decoder rejects the packet
    ("mkv", "15 frames missing from {:.2f} s to 1.20 s"),  # the demuxer cannot go past it
])
def test_damage_in_the_middle_is_counted_with_its_time(tmp_path, weights, container, expected):
    clip = tmp_path / f"drive.{container}"
    make_clip(clip, frames=FRAMES, size=(96, 64))
    seconds = corrupt_packet(clip, 15)
    result = translate_cli(weights, clip, "-o", tmp_path / f"out.{container}")
    assert result.exit_code == 1
    kept = video_info(tmp_path / f"out.{container}")["frames"]
    if container == "mp4":
        # The rejected frame and those that needed it as a reference, timed from the first.
        found = re.search(r"damaged input: (1 decode error, )?(\d+) frames? lost \(at ([\d.]+) s",
                          result.stderr)
        assert found and float(found[3]) == round(seconds, 2), result.stderr
        assert kept == FRAMES - int(found[2])
    else:
        assert f"damaged input: {expected.format(seconds)}" in result.stderr
        assert kept == 15
    accepted = translate_cli(weights, clip, "-o", tmp_path / "o.mkv", "--allow-damaged")
    assert accepted.exit_code == 0 and "INCOMPLETE" in accepted.stdout


HEALTHY = {
    "mp4": dict(frames=6),
    "mov": dict(frames=6),
    "variable rate, late start (mkv)": dict(pts=[30, 33, 34, 39, 47, 61], time_base=Fraction(1, 30)),
    "variable rate, late start (mp4)": dict(pts=[30, 33, 34, 39, 47, 61], time_base=Fraction(1, 30)),
    "late start (mkv)": dict(pts=[50 + i for i in range(8)]),
}


@pytest.mark.parametrize("name, clip", HEALTHY.items(), ids=HEALTHY)
def test_healthy_clips_report_no_damage(tmp_path, name, clip):
    path = tmp_path / f"in.{name.split('(')[-1].rstrip(')') if '(' in name else name}"
    make_clip(path, **clip)
    with open_source(path) as source:
        assert sum(1 for _ in source) == len(clip.get("pts", range(clip.get("frames", 0))))
        assert not source.damage, source.damage.describe()
