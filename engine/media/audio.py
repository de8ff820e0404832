"""A video's audio, copied packet by packet into the translated video (only the slice's, moved to its start)."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av

from gtacity.engine.frames import SinkError
from gtacity.engine.media.window import Window

# Audio codecs each container takes as a plain copy (Matroska takes anything). Checked up front:
# a misfit stream (PCM in .mp4) is only refused when the trailer is written, after all the work.
_PCM = {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le"}
_COPYABLE_AUDIO = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac"} | _PCM,
}



class AudioCopy:
    """Remuxes every audio stream of the input into the output, packet by packet, never decoding.

    Packets are written as the video catches up with them (``write_until``), so memory stays flat
    and the file is interleaved the way players expect.
    """

    def __init__(self, input_path: Path, output: av.container.OutputContainer, out_path: Path,
                 window: Window | None = None):
        self._input = av.open(str(input_path))
        self._output = output
        self._pending: av.Packet | None = None
        self._map = {}
        self._window = window or Window()
        copyable = _COPYABLE_AUDIO.get(out_path.suffix.lower())
        streams = list(self._input.streams.audio)
        for stream in streams:
            name = stream.codec_context.codec.canonical_name  # "mp3", not the decoder "mp3float"
            if copyable is not None and name not in copyable:
                self._input.close()
                raise SinkError(
                    f"{out_path}: the input's {name} audio cannot be copied into "
                    f"{out_path.suffix.lower()}; name the output .mkv"
                )
            self._map[stream.index] = output.add_stream_from_template(stream)
        self._streams = streams
        self._packets = None  # demuxed from the first write on: a slice's start is known by then

    def _demux(self):
        if self._streams and not self._window.whole and self._window.first is not None:
            with contextlib.suppress(av.FFmpegError):  # a slice: from just before it, not from the start
                self._input.seek(int(self._window.first * av.time_base), backward=True)
        # demux() of no streams would mean every stream, the video included.
        return self._input.demux(self._streams) if self._streams else iter(())

    def write_until(self, seconds: Fraction | None) -> None:
        """Mux input audio packets up to ``seconds`` of the output (all remaining ones for None)."""
        if self._packets is None:
            self._packets = self._demux()
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if packet.size == 0:  # the demuxer's end-of-stream marker, not data
                self._pending = None
                continue
            stamp = packet.dts if packet.dts is not None else packet.pts
            if not self._in_window(packet):
                self._pending = None
                if self._window.end is not None and stamp is not None and \
                        stamp * packet.time_base >= self._window.end:
                    return  # past the slice: the rest is not wanted
                continue
            if seconds is not None and stamp is not None and stamp * packet.time_base - self._window.shift > seconds:
                return
            self._move(packet)
            packet.stream = self._map[packet.stream.index]
            self._output.mux(packet)
            self._pending = None

    def _in_window(self, packet: av.Packet) -> bool:
        """Whether an audio packet belongs to the video's slice (always, for the whole video)."""
        if packet.pts is None or self._window.whole or self._window.first is None:
            return True
        start = packet.pts * packet.time_base
        end = self._window.end
        return start >= self._window.first and (end is None or start < end)

    def _move(self, packet: av.Packet) -> None:
        """Move a slice's audio back in time with its video."""
        offset = round(self._window.shift / packet.time_base)
        packet.pts, packet.dts = (None if t is None else t - offset for t in (packet.pts, packet.dts))

    def close(self) -> None:
        self._input.close()
