"""What a damaged video lost: decoder errors, concealed frames, an early end.

FFmpeg keeps going through damage: a packet it cannot decode is dropped, a frame it could only
patch up is flagged corrupt and returned, and a file cut short after its index (a "faststart" mp4,
Matroska) just ends early with no error at all. :class:`Damage` counts all three while a
:class:`~gtacity.engine.media.sources.VideoSource` decodes, so a job can say exactly what its output is
missing instead of finishing as if nothing happened.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

_SHOWN = 4  # timestamps listed per kind; the count says how many there are in all
# Top-level box types an ISO base media file (mp4, mov, m4v, 3gp) starts with.
_ISO_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}
_RESCUE = ("copy the complete file again from where it came from (a cut-off recording can only be rescued by "
           "a tool that rebuilds the index, such as untrunc, from a healthy clip of the same camera)")


@dataclass
class Damage:
    """Damage found while decoding; empty (falsy) for a healthy video.

    Attributes:
        errors: how many packets the decoder rejected.
        lost: seconds of each frame whose packet was read but which never came out of the
            decoder (rejected, or dropped with a lost reference): not in the output.
        damaged: seconds of each frame the decoder flagged corrupt (in the output, patched up).
        reported: seconds near which the decoder logged errors in frames it returned neither
            flagged nor dropped (patched up: damage a player shows without a word); times are of
            the packet being decoded when the line came, so "near": threads decode ahead.
        stopped: why the demuxer stopped early (unreadable data), or None.
        missing: (decoded end, the container's end) in seconds when the decoded video ends
            more than a frame and a half before the file says it does, else None.
        missing_frames: about how many frames fit in that gap, at the stream's rate.
    """

    errors: int = 0
    lost: list[float] = field(default_factory=list)
    damaged: list[float] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)
    stopped: str | None = None
    missing: tuple[float, float] | None = None
    missing_frames: int = 0

    def __bool__(self) -> bool:
        return bool(self.errors or self.lost or self.damaged or self.reported or self.stopped or self.missing)

    def settle(self, window: float) -> None:
        """Drop log reports within ``window`` seconds of a frame already counted lost or damaged:
        the same damage, seen twice."""
        counted = self.lost + self.damaged
        self.reported = [t for t in self.reported if all(abs(t - c) > window for c in counted)]

    def check_end(self, decoded_end: Fraction | None, stream: av.video.stream.VideoStream,
                  rate: Fraction) -> None:
        """Compare where decoding ended with where the container says the video ends."""
        expected = expected_end(stream)
        if expected is None or decoded_end is None:
            return
        if expected - decoded_end > Fraction(3, 2) / rate:
            self.missing = (float(decoded_end), float(expected))
            self.missing_frames = round((expected - decoded_end) * rate)
            # A frame cut in half at the end is part of the missing stretch, not counted twice.
            self.lost = [t for t in self.lost if t < self.missing[0]]

    def describe(self) -> str:
        """One clause per kind of damage, e.g. ``1 decode error, 2 frames lost (at 1.20 s,
        1.24 s), 36 frames missing from 1.48 s to 3.00 s (the file ends early)``."""
        parts = []
        if self.errors:
            parts.append(f"{self.errors} decode error{'s' * (self.errors != 1)}")
        if self.lost:
            parts.append(f"{_frames(len(self.lost))} lost ({_at(self.lost)})")
        if self.damaged:
            parts.append(f"{_frames(len(self.damaged))} decoded damaged ({_at(self.damaged)})")
        if self.reported:
            places = len(self.reported)
            parts.append(f"decoder errors patched up in {places} place{'s' * (places != 1)} "
                         f"(near {_at(self.reported)[3:]})")
        if self.stopped:
            parts.append(f"unreadable data stopped decoding ({self.stopped})")
        if self.missing:
            start, end = self.missing
            parts.append(f"{_frames(self.missing_frames)} missing from {start:.2f} s to "
                         f"{end:.2f} s (the file ends early)")
        return ", ".join(parts)


def expected_end(stream: av.video.stream.VideoStream) -> Fraction | None:
    """Where the video stream should end, in seconds, by what its container says: Matroska's
    DURATION tag (the end time of the track), else the stream's duration after its start (mp4,
    mov); None when the file does not say."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", (stream.metadata or {}).get("DURATION", ""))
    if match:
        hours, minutes, seconds = match.groups()
        return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
    if stream.duration:
        return (Fraction(stream.start_time or 0) + stream.duration) * stream.time_base
    return None


def _frames(count: int) -> str:
    return f"{count} frame{'s' * (count != 1)}"


def _at(seconds: list[float]) -> str:
    shown = ", ".join(f"{s:.2f} s" for s in seconds[:_SHOWN])
    return f"at {shown}{', ...' if len(seconds) > _SHOWN else ''}"


def missing_index(path: Path) -> str | None:
    """Why an mp4/mov FFmpeg cannot open is unreadable, when that is its missing index, else None.

    An mp4 written the usual way keeps its index (the ``moov`` box: where every frame is, and the
    codec's setup) after the media data; a copy cut short, or a recording that was never
    finished, lacks it, and FFmpeg only says "Invalid data found when processing input". Walking
    the file's top-level boxes tells the two apart: a box announcing more bytes than the file
    has means the file is cut off.
    """
    boxes = _top_level_boxes(path)
    if not boxes or boxes[0][0] not in _ISO_FIRST_BOXES:
        return None
    size = os.path.getsize(path)
    ends = {kind: start + length for kind, start, length in boxes}
    announced = max(ends.values())
    if b"moov" in ends and ends[b"moov"] <= size:
        return None  # the index is whole: something else is wrong
    if announced > size:
        where = "inside its index (moov box)" if b"moov" in ends else (
            "and the index an mp4 keeps after its media data (the moov box) is in the missing part")
        return (f"the file is cut off: it ends after {_bytes(size)} of the {_bytes(announced)} it announces, "
                f"{where}, so no frame can be located; {_RESCUE}")
    return (f"has no index (moov box): the recording or copy that wrote it never finished, so no frame can "
            f"be located; {_RESCUE}")


def _top_level_boxes(path: Path) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level ISO box, up to the end of the file or the first
    header that cannot be one; a size of 0 means "to the end of the file"."""
    boxes, offset = [], 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while offset + 8 <= size:
            f.seek(offset)
            length, kind = struct.unpack(">I4s", f.read(8))
            if length == 1:  # a 64-bit size follows the type
                if offset + 16 > size:
                    break
                (length,) = struct.unpack(">Q", f.read(8))
            elif length == 0:
                length = size - offset
            if length < 8 or not kind.isascii() or not kind.decode("ascii").isprintable():
                break
            boxes.append((kind, offset, length))
            offset += length
    return boxes


def _bytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.1f} kB"
