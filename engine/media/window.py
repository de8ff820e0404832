"""A slice of a video: from ``start`` seconds, for ``duration`` seconds, at most ``max_frames`` frames.

``gtacity translate --start/--duration/--max-frames`` tries a long video on a piece first. The
video source seeks to the key frame at or before ``start`` (no decoding from the beginning where
the container can seek) and drops the few frames before ``start``; the kept frames are moved back
in time so that the slice starts where the video does (usually 0), and the video sink copies the
audio of the same stretch, moved by the same amount, so picture and sound stay together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from gtacity.errors import GtacityError


class WindowError(GtacityError):
    """A slice that cannot be taken as asked."""


_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")


def parse_time(text: str, option: str = "time") -> Fraction:
    """``"90"``, ``"1.5"``, ``"01:30"`` or ``"1:02:03.250"`` -> seconds.

    Raises:
        WindowError: anything else, or a negative time.
    """
    text = text.strip()
    clock = _CLOCK.fullmatch(text)
    try:
        if clock:
            hours, minutes, seconds = clock.groups()
            if Fraction(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
                raise ValueError(text)
            value = Fraction(int(hours or 0) * 3600 + int(minutes) * 60) + Fraction(seconds)
        else:
            value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise WindowError(f"{option} {text!r}: give seconds (90, 1.5) or HH:MM:SS(.ms) (00:01:30.5)") from None
    if value < 0:
        raise WindowError(f"{option} {text!r}: must not be negative")
    return value


@dataclass
class Window:
    """Which frames of a video a job keeps, and (filled in while decoding) where they were.

    Attributes:
        start: seconds into the video (its own timestamps, from its first frame) of the first frame kept.
        duration: seconds kept from ``start``; None: to the end.
        max_frames: at most this many frames; None: no limit.
        shift: seconds taken off every kept timestamp (video and audio), so the slice starts where
            the video starts; set at the first kept frame.
        first, end: input seconds of the first kept frame and of the end of the last one (None
            until known).
    """

    start: Fraction = Fraction(0)
    duration: Fraction | None = None
    max_frames: int | None = None
    shift: Fraction = Fraction(0)
    first: Fraction | None = None
    end: Fraction | None = None

    def __post_init__(self):
        if self.duration is not None and self.duration <= 0:
            raise WindowError(f"--duration must be above 0 seconds, got {float(self.duration):g}")
        if self.max_frames is not None and self.max_frames < 1:
            raise WindowError(f"--max-frames must be at least 1, got {self.max_frames}")

    @property
    def whole(self) -> bool:
        """Whether the window is the whole video."""
        return self.start == 0 and self.duration is None and self.max_frames is None

    def before(self, seconds: Fraction) -> bool:
        """Whether a frame at ``seconds`` (from the video's first frame) comes before the slice."""
        return seconds < self.start

    def past(self, seconds: Fraction, kept: int) -> bool:
        """Whether a frame at ``seconds``, after ``kept`` kept frames, is beyond the slice."""
        if self.max_frames is not None and kept >= self.max_frames:
            return True
        return self.duration is not None and seconds >= self.start + self.duration

    def frames(self, total: int, rate: Fraction) -> int:
        """How many frames the slice of a ``total``-frame video at ``rate`` holds (an estimate)."""
        count = max(0, total - round(self.start * rate)) if total else 0
        if self.duration is not None:
            count = min(count, round(self.duration * rate)) if total else round(self.duration * rate)
        if self.max_frames is not None:
            count = min(count, self.max_frames) if count else self.max_frames
        return count
