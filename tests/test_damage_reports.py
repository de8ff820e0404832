"""Damage FFmpeg patches up quietly, and an mp4 cut off before its index: clips made and damaged
here, through `gtacity translate` (exit code, the one line) and the decoder-log reader beneath it."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import av.logging
import numpy as np
from click.testing import CliRunner
from media import make_clip, truncate, video_info

from gtacity.cli import cli
from gtacity.engine.media.damage import Damage
from gtacity.engine.media.decodelog import DecoderLog
from gtacity.engine.media.sources import open_source


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


_DROP_WHILE_DECODING = """
import gc, sys, faulthandler
sys.path.insert(0, {tests!r})
import av
from media import corrupt_packet, make_clip
from gtacity.engine.media.decodelog import watch
from gtacity.engine.media.sources import park_decoder

faulthandler.dump_traceback_later(30, exit=True)  # a deadlock ends the process, with its stack
make_clip("clip.mp4", frames=60, size=(640, 360))
for index in range(5, 60, 3):
    corrupt_packet("clip.mp4", index, seed=index)
watch()  # FFmpeg's error lines into Python, as every gtacity run that reads a video has them
for attempt in range(40):
    container = av.open("clip.mp4")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threads, as the video source decodes
    for count, packet in enumerate(container.demux(stream)):
        try:
            packet.decode()
        except av.FFmpegError:
            pass
        if count == 6 + attempt:
            break
    if {park}:
        park_decoder(stream.codec_context)
    del container, stream, packet  # freed at once, while frame threads may hold damaged packets
    gc.collect()
print("freed", attempt + 1)
"""


def test_a_decoder_dropped_while_its_threads_decode_damage_is_freed_without_deadlock(tmp_path):
    """FFmpeg's frame threads log damaged packets into Python, which takes the GIL; PyAV frees a
    decoder holding the GIL and FFmpeg then waits for those threads. Without parking the decoder
    first this script deadlocks on its first drop (PyAV 18.1, seen on this project's machines)."""
    script = _DROP_WHILE_DECODING.format(tests=str(Path(__file__).parent), park=True)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "freed 40" in done.stdout, done.stderr[-3000:]


def test_a_video_source_parks_its_decoder_when_closed_or_collected(tmp_path):
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=30, size=(96, 64))
    with open_source(clip) as source:
        next(iter(source))
        park = source._park
        assert park.alive
    assert not park.alive  # closing parked it
    source = open_source(clip)
    next(iter(source))
    park = source._park
    del source
    gc.collect()
    assert not park.alive  # collected unclosed: parked before its decoder could be freed
