"""Options that take part of an input: the frame limit ``translate`` shares with ``eval fidelity``, and
``translate``'s slice (``--start``, ``--duration``) and ``--preview``.

Times stay text here: the engine parses them (seconds or ``HH:MM:SS.ms``,
:func:`gtacity.engine.media.window.parse_time`), so the Python API takes the same spellings.
"""

from __future__ import annotations

from collections.abc import Callable

import click


def max_frames_option(help_text: str) -> Callable:
    """``--max-frames N`` (N >= 1), one spelling for every command that stops after N frames."""
    return click.option("--max-frames", type=click.IntRange(min=1), default=None, metavar="N", help=help_text)


def slice_options(command: Callable) -> Callable:
    """``translate``'s ``--start``, ``--duration``, ``--max-frames`` and ``--preview``."""
    for option in reversed((
        click.option("--start", default=None, metavar="T",
                     help="Video: begin at T (seconds, or HH:MM:SS.ms); the output starts at 0, its audio with it."),
        click.option("--duration", default=None, metavar="T", help="Video: translate T (seconds, or HH:MM:SS.ms)."),
        max_frames_option("Video: translate at most N frames (from --start)."),
        click.option("--preview", type=int, default=None, metavar="N",
                     help="Write N frames spread over the input (or its slice), input | translation side by "
                          "side, into the PNG named by -o, instead of translating everything."),
    )):
        command = option(command)
    return command
