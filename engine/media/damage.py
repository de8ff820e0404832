"""What a damaged video lost: decoder errors, concealed frames, an early end.

FFmpeg keeps going through damage: a packet it cannot decode is dropped, a frame it could only
patch up is flagged corrupt and returned, and a file cut short after its index (a "faststart" mp4,
Matroska) just ends early with no error at all. :class:`Damage` counts all three while a
:class:`~gtacity.engine.media.sources.VideoSource` decodes, so a job can say exactly what its output is
missing instead of finishing as if nothing happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import av

_SHOWN = 4  # timestamps listed per kind; the count says how many there are in all


@dataclass
class Damage:
    """Damage found while decoding; empty (falsy) for a healthy video.

    Attributes:
        errors: how many packets the decoder rejected.
        lost: seconds of each frame whose packet was read but which never came out of the
            decoder (rejected, or dropped with a lost reference): not in the output.
        damaged: seconds of each frame the decoder flagged corrupt (in the output, patched up).
        stopped: why the demuxer stopped early (unreadable data), or None.
        missing: (decoded end, the container's end) in seconds when the decoded video ends
            more than a frame and a half before the file says it does, else None.
        missing_frames: about how many frames fit in that gap, at the stream's rate.
    """

    errors: int = 0
    lost: list[float] = field(default_factory=list)
    damaged: list[float] = field(default_factory=list)
    stopped: str | None = None
    missing: tuple[float, float] | None = None
    missing_frames: int = 0

    def __bool__(self) -> bool:
        return bool(self.errors or self.lost or self.damaged or self.stopped or self.missing)

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
