"""`gtacity eval flicker`: the warping error on clips made here, where the right answer is known."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from motion import pan, texture, write_frames, write_video

from gtacity.cli import cli
from gtacity.engine.measure.flicker import FlickerConfig, FlickerError, evaluate_flicker, measure_flicker


def brightness_flicker(frames: list[np.ndarray], amplitude: float, seed: int = 0) -> list[np.ndarray]:
    """Each frame shifted by its own random brightness offset in [-amplitude, amplitude]."""
    offsets = np.random.default_rng(seed).uniform(-amplitude, amplitude, len(frames))
    return [np.clip(f.astype(np.float64) + o, 0, 255).astype(np.uint8) for f, o in zip(frames, offsets)]


def test_static_video_translated_identically_has_no_flicker(tmp_path):
    still = texture(96, 64)
    write_frames(tmp_path / "in", [still] * 6)
    write_frames(tmp_path / "out", [255 - still] * 6)  # the same "translation" of every frame
    report = measure_flicker(tmp_path / "in", tmp_path / "out")
    assert report.frames == 6 and len(report.output_curve) == 5
    assert report.output_error < 1e-6 and report.input_error < 1e-6


def test_error_grows_with_brightness_flicker(tmp_path):
    frames = pan(96, 64, frames=8, step=(1, 0))
    write_frames(tmp_path / "in", frames)
    errors = []
    for amplitude in (0, 4, 12):
        write_frames(tmp_path / f"out{amplitude}", brightness_flicker(frames, amplitude))
        errors.append(measure_flicker(tmp_path / "in", tmp_path / f"out{amplitude}").output_error)
    assert errors[0] < errors[1] < errors[2]
    # Offsets uniform in [-12, 12]: consecutive frames differ by ~ (2 * 12^2 / 3) levels^2 on average.
    assert errors[2] > 0.3 * (2 * 12**2 / 3) / 255**2 and errors[2] > 20 * errors[0]


def test_motion_the_flow_explains_costs_nothing(tmp_path):
    """A panning clip translated identically frame by frame: its consecutive frames differ a lot,
    the warping error stays near the input's own; random flicker of that size does not."""
    frames = pan(128, 96, frames=8, step=(3, 1))
    translated = [f[..., ::-1].copy() for f in frames]  # a fixed per-pixel mapping (RGB -> BGR)
    write_frames(tmp_path / "in", frames)
    write_frames(tmp_path / "out", translated)
    report = measure_flicker(tmp_path / "in", tmp_path / "out")
    unwarped = np.mean([np.square((a / 255.0) - (b / 255.0)).mean() for a, b in zip(translated, translated[1:])])
    assert report.output_error < 0.05 * unwarped
    assert report.output_error < 2 * report.input_error + 1e-4
    assert report.reliable > 0.8
    write_frames(tmp_path / "noisy", brightness_flicker(translated, 12))
    assert measure_flicker(tmp_path / "in", tmp_path / "noisy").output_error > 10 * report.output_error


def test_videos_stream_and_cli_prints_json_and_a_plot(tmp_path):
    frames = pan(96, 64, frames=10, step=(2, 0))
    write_video(tmp_path / "in.mp4", frames)
    write_video(tmp_path / "out.mp4", brightness_flicker(frames, 10))
    result = CliRunner().invoke(
        cli, ["eval", "flicker", str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), "--json", "-q",
              "--plot", str(tmp_path / "flicker.png")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["frames"] == 10 and len(report["output_curve"]) == len(report["input_curve"]) == 9
    assert report["output_error"] > 3 * report["input_error"] > 0
    plot = cv2.imread(str(tmp_path / "flicker.png"))
    assert plot is not None and plot.shape == (320, 900, 3) and (plot < 250).any()


def test_mismatched_videos_are_refused_in_one_line(tmp_path):
    frames = pan(96, 64, frames=6, step=(2, 0))
    write_frames(tmp_path / "in", frames)
    write_frames(tmp_path / "short", frames[:4])
    write_frames(tmp_path / "small", [f[:32, :48] for f in frames])
    with pytest.raises(FlickerError, match="has more frames than"):
        measure_flicker(tmp_path / "in", tmp_path / "short")
    with pytest.raises(FlickerError, match="frame 0 is 48x32 but"):
        measure_flicker(tmp_path / "in", tmp_path / "small")
    with pytest.raises(FlickerError, match="the plot is an image"):
        evaluate_flicker(FlickerConfig(tmp_path / "in", tmp_path / "short", plot=tmp_path / "in.mp4"))
    result = CliRunner().invoke(cli, ["eval", "flicker", str(tmp_path / "short"), str(tmp_path / "in"), "-q"])
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1 and "has more frames than" in result.stderr


def test_an_output_steadier_than_its_input_is_not_called_below_a_floor(tmp_path):
    steady = pan(96, 64, frames=8, step=(1, 0))
    write_frames(tmp_path / "in", brightness_flicker(steady, amplitude=10))  # a flickering input
    write_frames(tmp_path / "out", [255 - f for f in steady])  # a "translation" without its flicker
    result = CliRunner().invoke(cli, ["eval", "flicker", str(tmp_path / "in"), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[1]
    ratio = float(line.rsplit("(output / input: ", 1)[1].rstrip(")"))
    assert line.startswith("input itself ") and ratio < 0.5
    assert "floor" not in result.output
