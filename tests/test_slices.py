"""`translate --start/--duration/--max-frames` (a slice of a video, its audio kept in sync) and
`--preview N` (a side-by-side PNG): real PyAV clips with audio, made here."""

from __future__ import annotations

from fractions import Fraction
from pathlib import PurePosixPath

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from media import corrupt_packet, make_clip, make_image, make_image_tree, video_info

from gtacity.cli import cli
from gtacity.engine import Translator
from gtacity.engine.media.sources import open_source
from gtacity.engine.media.window import Window, WindowError, parse_time

FPS = 25


def translate_cli(weights, *args):
    argv = ["translate", *map(str, args), "--weights", str(weights), "--backend", "torch", "-q"]
    return CliRunner().invoke(cli, argv)


def one_line(result) -> str:
    line = result.stderr.strip()
    assert result.exit_code == 1 and "\n" not in line and line.startswith("error: "), result.output
    return line


@pytest.mark.parametrize("text, seconds", [("90", 90), ("1.5", Fraction(3, 2)), ("01:30", 90),
                                           ("1:02:03.250", 3723.25), ("00:00:00.5", Fraction(1, 2))])
def test_times_read_as_seconds_or_clock_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1:2:3:4", "-1", "ten", "00:61", "1:60:00"])
def test_times_that_are_not_say_how_to_write_one(text):
    with pytest.raises(WindowError, match="--start"):
        parse_time(text, "--start")


def test_a_slice_keeps_exact_frames_its_timestamps_and_its_audio_in_sync(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=50, size=(64, 48), fps=FPS, audio="aac", keyint=10)
    result = translate_cli(weights, clip, "-o", tmp_path / "part.mp4", "--start", "0.8", "--duration", "0.6")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("translated 15 frames")
    src, out = video_info(clip), video_info(tmp_path / "part.mp4")
    assert out["frames"] == 15 and out["rate"] == src["rate"] and out["size"] == src["size"]
    assert out["times"] == [Fraction(i, FPS) for i in range(15)]  # starts at 0, every frame in place
    # The same audio packets, bit for bit, moved back 0.8 s with the picture (to the millisecond:
    # the delay before the first packet is an mp4 edit list, in the movie's 1/1000 s units).
    kept = [(data, t - Fraction(4, 5), d) for data, t, d in src["audio_packets"]
            if Fraction(4, 5) <= t < Fraction(7, 5)]
    assert len(out["audio_packets"]) == len(kept) > 20
    for (data, t, d), (want, wanted_t, wanted_d) in zip(out["audio_packets"], kept):
        assert data == want and d == wanted_d and abs(t - wanted_t) <= Fraction(1, 1000)
    # Each frame is the translation of input frame 20 + i: closest to it among the whole video's.
    assert translate_cli(weights, clip, "-o", tmp_path / "whole.mp4").exit_code == 0
    with open_source(tmp_path / "whole.mp4") as whole, open_source(tmp_path / "part.mp4") as part:
        everything = [f.image.astype(float) for f in whole]
        for i, frame in enumerate(part):
            errors = [np.abs(frame.image - other).mean() for other in everything]
            assert int(np.argmin(errors)) == 20 + i


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_max_frames_from_a_clock_time_start_is_exact(tmp_path, weights, container):
    clip = tmp_path / f"drive.{container}"
    make_clip(clip, frames=40, size=(64, 48), fps=FPS, keyint=10)
    out = tmp_path / f"part.{container}"
    result = translate_cli(weights, clip, "-o", out, "--start", "00:00:00.52", "--max-frames", "7")
    assert result.exit_code == 0, result.output
    info = video_info(out)
    assert info["frames"] == 7 and info["times"] == [Fraction(i, FPS) for i in range(7)]


def test_the_slice_is_reached_by_seeking_not_by_decoding_from_the_start(tmp_path):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=50, size=(64, 48), fps=FPS, keyint=10)
    corrupt_packet(clip, 5)  # damage before the slice's key frame (frame 30)
    with open_source(clip, window=Window(start=Fraction(32, FPS), max_frames=5)) as source:
        frames = list(source)
        assert len(frames) == 5 and not source.damage, source.damage.describe()
        assert len(source._frame_pts) < 20  # from the key frame at 1.2 s, a few frames of decoder lookahead


def test_a_start_past_the_end_is_refused_in_one_line(tmp_path, weights):
    make_clip(tmp_path / "drive.mp4", frames=20, fps=FPS)
    line = one_line(translate_cli(weights, tmp_path / "drive.mp4", "-o", tmp_path / "o.mp4", "--start", "5"))
    assert "--start 5 s is past the end of the video (0.80 s long)" in line
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("option", [("--start", "1"), ("--duration", "2"), ("--max-frames", "3")])
def test_a_slice_of_images_is_refused_in_one_line(tmp_path, weights, option):
    make_image(tmp_path / "shot.png")
    make_image_tree(tmp_path / "frames", files=("a.png", "b.png"))
    line = one_line(translate_cli(weights, tmp_path / "shot.png", "-o", tmp_path / "o.png", *option))
    assert f"{option[0]} take part of a video; an image has no time to slice" in line
    line = one_line(translate_cli(weights, tmp_path / "frames", "-o", tmp_path / "out", *option))
    assert "a folder of images has no time to slice" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, words", [(("--duration", "0"), "--duration must be above 0"),
                                           (("--start", "1:2:3:4"), "give seconds (90, 1.5) or HH:MM:SS")])
def test_a_bad_slice_is_refused_in_one_line(tmp_path, weights, option, words):
    make_clip(tmp_path / "drive.mp4", frames=5)
    assert words in one_line(translate_cli(weights, tmp_path / "drive.mp4", "-o", tmp_path / "o.mp4", *option))


def test_max_frames_below_one_is_a_usage_error_in_translate_and_eval_fidelity(tmp_path, weights):
    make_clip(tmp_path / "drive.mp4", frames=5)
    assert translate_cli(weights, tmp_path / "drive.mp4", "-o", tmp_path / "o.mp4", "--max-frames", "0").exit_code == 2
    fidelity = CliRunner().invoke(cli, ["eval", "fidelity", str(tmp_path / "drive.mp4"), "--teacher", str(weights),
                                        "--student", str(weights), "--max-frames", "0"])
    assert fidelity.exit_code == 2 and "--max-frames" in fidelity.output


def test_a_preview_of_a_video_is_input_beside_translation_without_the_video(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=40, size=(64, 48), fps=FPS, keyint=10)
    result = translate_cli(weights, clip, "-o", tmp_path / "look.png", "--preview", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("translated 4 frames") and "-> " + str(tmp_path / "look.png") in result.stdout
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "look.png")), cv2.COLOR_BGR2RGB)
    assert sheet.shape == (4 * 48, 2 * 64, 3)
    with open_source(clip) as source:
        frames = [f.image for f in source]
    translator = Translator(weights, backend="torch")
    for row, index in enumerate([5, 15, 25, 35]):  # the middles of 4 equal stretches
        left, right = sheet[48 * row:48 * (row + 1), :64], sheet[48 * row:48 * (row + 1), 64:]
        np.testing.assert_array_equal(left, frames[index])
        np.testing.assert_array_equal(right, translator(left))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.mp4", "g.safetensors", "look.png"]


def test_a_preview_spreads_over_a_slice_and_over_a_folder(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=40, size=(64, 48), fps=FPS, keyint=10)
    assert translate_cli(weights, clip, "-o", tmp_path / "a.png", "--preview", "2", "--start", "0.8",
                         "--duration", "0.4").exit_code == 0
    with open_source(clip) as source:
        frames = [f.image for f in source]
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "a.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sheet[:48, :64], frames[22])  # frames 2 and 7 of the slice's 10
    np.testing.assert_array_equal(sheet[48:, :64], frames[27])
    images = make_image_tree(tmp_path / "frames", files=tuple(f"{i}.png" for i in range(6)))
    assert translate_cli(weights, tmp_path / "frames", "-o", tmp_path / "b.png", "--preview", "3").exit_code == 0
    sheet = cv2.cvtColor(cv2.imread(str(tmp_path / "b.png")), cv2.COLOR_BGR2RGB)
    assert sheet.shape == (3 * 30, 2 * 40, 3)
    for row, name in enumerate(["1.png", "3.png", "5.png"]):
        np.testing.assert_array_equal(sheet[30 * row:30 * (row + 1), :40], images[PurePosixPath(name)])


def test_a_preview_must_be_a_png_and_never_replaces_a_file(tmp_path, weights):
    make_clip(tmp_path / "drive.mp4", frames=5)
    line = one_line(translate_cli(weights, tmp_path / "drive.mp4", "-o", tmp_path / "o.mp4", "--preview", "2"))
    assert "with --preview, -o names the preview picture; name it .png" in line
    (tmp_path / "look.png").write_bytes(b"mine")
    line = one_line(translate_cli(weights, tmp_path / "drive.mp4", "-o", tmp_path / "look.png", "--preview", "2"))
    assert "already exists; pass --overwrite" in line and (tmp_path / "look.png").read_bytes() == b"mine"
