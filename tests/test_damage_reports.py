"""Damage FFmpeg patches up quietly, and an mp4 cut off before its index: clips made and damaged
here, through `gtacity translate` (exit code, the one line) and the decoder-log reader beneath it."""

from __future__ import annotations

import av.logging
import numpy as np
from click.testing import CliRunner
from media import make_clip, truncate, video_info

from gtacity.cli import cli
from gtacity.engine.media.damage import Damage
from gtacity.engine.media.decodelog import DecoderLog


def translate_cli(weights, *args):
    argv = ["translate", *map(str, args), "--weights", str(weights), "--backend", "torch", "-q"]
    return CliRunner().invoke(cli, argv)


def test_an_mp4_cut_in_half_says_it_is_cut_off_and_what_to_do(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=30, size=(96, 64))  # FFmpeg writes the index (moov) after the frames
    truncate(clip, 0.5)
    result = translate_cli(weights, clip, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {clip}: the file is cut off: it ends after "), line
    assert "the index an mp4 keeps after its media data (the moov box) is in the missing part" in line
    assert "copy the complete file again" in line
    assert not (tmp_path / "out.mp4").exists()


def test_an_mp4_cut_inside_its_index_says_so(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=30, size=(96, 64))
    clip.write_bytes(clip.read_bytes()[:-300])  # the index is last: cut into it
    line = translate_cli(weights, clip, "-o", tmp_path / "out.mp4").stderr.strip()
    assert "the file is cut off" in line and "inside its index (moov box)" in line, line


def test_2000_bytes_overwritten_in_the_middle_of_an_mp4_are_reported(tmp_path, weights):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=60, size=(256, 144), audio=None)
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(7).bytes(2000)
    clip.write_bytes(bytes(data))
    result = translate_cli(weights, clip, "-o", tmp_path / "out.mp4")
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: {clip}: damaged input: "), line
    assert "pass --allow-damaged to accept it" in line
    assert video_info(tmp_path / "out.mp4")["frames"] > 50  # kept, and it plays
    accepted = translate_cli(weights, clip, "-o", tmp_path / "o.mp4", "--allow-damaged")
    assert accepted.exit_code == 0 and "INCOMPLETE, damaged input: " in accepted.stdout


def test_the_decoder_log_reader_sees_its_decoder_s_error_lines_and_keeps_them_off_the_terminal(capfd):
    log = DecoderLog("h264")
    try:
        # A real line through FFmpeg's av_log, as the h264 decoder writes it on a damaged slice.
        av.logging.log(av.logging.ERROR, "h264", "error while decoding MB 23 12, bytestream 4008\n")
        av.logging.log(av.logging.ERROR, "aac", "Number of bands exceeds limit\n")
        assert log.new_lines() == ["error while decoding MB 23 12, bytestream 4008"]
        assert log.new_lines() == []
        other = DecoderLog("hevc")  # a second reader sees only what came after it
        av.logging.log(av.logging.ERROR, "hevc", "Could not find ref with POC 7\n")
        assert other.new_lines() == ["Could not find ref with POC 7"] and log.new_lines() == []
        other.close()
    finally:
        log.close()
    assert "error while decoding" not in capfd.readouterr().err


def test_a_patched_up_frame_is_reported_once():
    damage = Damage(damaged=[1.40], reported=[1.60, 3.00])
    damage.settle(window=0.32)  # 1.60 s is the flagged frame's own log line, seen late
    assert damage.reported == [3.00]
    assert damage.describe() == ("1 frame decoded damaged (at 1.40 s), decoder errors patched up in 1 place "
                                 "(near 3.00 s)")
    assert Damage(reported=[0.5]) and not Damage()
