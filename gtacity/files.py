"""Files that appear whole or not at all: written under a partial name beside the final one, then renamed.

A partial file is ``.NAME.partial-PID-XXXXXXXX.EXT`` beside the final path: hidden, carrying the
writer's pid (so the next writer can tell a dead writer's debris from a live one's work), with the
real extension last (FFmpeg, OpenCV and ONNX pick the format from it). :func:`os.replace` moves it
onto the final name in one step, so a reader sees the old file, the new one, or none; never half of
one. ``remove_stale_partials`` deletes what a writer killed by SIGKILL or a power cut left; only
that exact name pattern matches, so nothing else is ever touched. A partial whose pid was reused by
an unrelated live process stays until a later run finds that pid gone.

Used by every file the project writes: outputs of translate (with the lock of
:mod:`gtacity.engine.outputs`), generator files, checkpoints, ONNX files, engines, demo clips.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path


def partial_path(final: Path) -> Path:
    """A fresh unfinished-file name beside ``final``, carrying this process's pid."""
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}.partial-{os.getpid()}-{token}{final.suffix}")


@contextlib.contextmanager
def written_whole(final: str | Path) -> Iterator[Path]:
    """A partial path beside ``final`` for the block to write; ``final`` appears only if the block returns.

    ``final``'s folder is created if missing, and partial files a dead writer left for ``final``
    are removed first. On success the file gets a
    normal file's mode (some writers create private 0600 files) and replaces ``final``; if the
    block raises (an error, Ctrl-C), the partial file is deleted and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    partial = partial_path(final)
    try:
        yield partial
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o666 & ~umask)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def write_json(final: str | Path, data: dict) -> Path:
    """``data`` as indented JSON at ``final``, written whole (see :func:`written_whole`)."""
    with written_whole(final) as partial:
        partial.write_text(json.dumps(data, indent=2) + "\n")
    return Path(final)


_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>\d+)-[0-9a-f]{8}(?P<ext>\.[^.]+)?")


def _stale_writer_of(name: str) -> str | None:
    """The final name a partial file called ``name`` was for, if it is one and its writer is gone."""
    match = _PARTIAL.fullmatch(name)
    if match is None or not match["name"].endswith(match["ext"] or ""):
        return None
    return None if _running(int(match["pid"])) else match["name"]


def remove_stale_partials(final: Path) -> int:
    """Delete the partial files a dead writer left for the file ``final``; returns how many."""
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return 0
    stale = [n for n in names if _stale_writer_of(n) == final.name]
    for name in stale:
        (final.parent / name).unlink(missing_ok=True)
    return len(stale)


def remove_stale_partials_under(root: Path) -> int:
    """Delete every partial file a dead writer left anywhere under the folder ``root``."""
    removed = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if _stale_writer_of(name) is not None:
                (Path(folder) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
