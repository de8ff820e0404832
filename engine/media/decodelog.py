"""FFmpeg's error lines while a video decodes: damage the decoder patches up without saying so elsewhere.

A damaged H.264 slice is often decoded anyway: FFmpeg logs ``error while decoding MB 23 12`` (or
``Reference 2 >= 2``, ``cabac decode of qscale diff failed``), patches the picture up and returns
it, sometimes without flagging the frame corrupt and without any error from the decode call. The
log line is then the only trace. PyAV drops FFmpeg's log unless asked, so :func:`watch` asks, once
per process, for lines at ERROR level and above, and keeps them out of the terminal (they belong in
the damage report, not between progress bars); each :class:`DecoderLog` then sees the lines logged
since it last looked.

FFmpeg's log is one stream per process: lines cannot be told apart by the file they came from,
only by the component that logged them (the decoder's name, e.g. ``h264``). A video decoding while
another one of the same codec decodes in another thread of the same process may be blamed for the
other's errors; gtacity decodes the videos of one job one after another.
"""

from __future__ import annotations

import threading

import av.logging

_lock = threading.Lock()
_state: dict = {"lines": None, "taken": 0, "readers": 0}


def watch() -> None:
    """Route FFmpeg's ERROR lines into gtacity's buffer (once per process; idempotent).

    A level the application chose itself (``av.logging.set_level``) is kept; PyAV's default (no
    log at all) becomes ERROR.
    """
    with _lock:
        if _state["lines"] is not None:
            return
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
        capture = av.logging.Capture(local=False)
        _state["lines"] = capture.__enter__()  # for the life of the process: nothing to leave
        _state["capture"] = capture


class DecoderLog:
    """The error lines one decoder (by name) logs while a video decodes.

    Args:
        decoder: the component name FFmpeg logs under (the codec context's name, e.g. ``h264``).
    """

    def __init__(self, decoder: str):
        watch()
        self.decoder = decoder
        with _lock:
            if _state["readers"] == 0:  # lines nobody was reading: from before this video
                _state["taken"] += len(_state["lines"])
                del _state["lines"][:]
            _state["readers"] += 1
            self._seen = _state["taken"] + len(_state["lines"])

    def new_lines(self) -> list[str]:
        """The decoder's error lines logged since the last call (or since this log was made)."""
        with _lock:
            lines, taken = _state["lines"], _state["taken"]
            fresh = lines[max(0, self._seen - taken):]
            self._seen = taken + len(lines)
            if _state["readers"] == 1 and lines:  # the only reader has seen all: let them go
                _state["taken"] += len(lines)
                del lines[:]
        return [text.strip() for level, name, text in fresh
                if name == self.decoder and level <= av.logging.ERROR]

    def close(self) -> None:
        """Stop reading; the buffer is emptied once no reader is left."""
        with _lock:
            _state["readers"] -= 1
            if _state["readers"] == 0:
                _state["taken"] += len(_state["lines"])
                del _state["lines"][:]
