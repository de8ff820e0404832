"""Files that appear whole or not at all: written under a partial name beside the final one, then renamed.

A partial file is ``.NAME.partial-OWNER-XXXXXXXX.EXT`` beside the final path: hidden, carrying its
writer (so the next writer can tell a dead writer's debris from a live one's work), with the
real extension last (FFmpeg, OpenCV and ONNX pick the format from it). :func:`os.replace` moves it
onto the final name in one step, so a reader sees the old file, the new one, or none; never half of
one. The owner is the writing process's pid, or, for a folder job, ``run`` + the run's id: a pid
means nothing on another host sharing the output folder, so a job run's liveness is the lock on its
journal (:mod:`gtacity.engine.jobs.journal`), which the job asks for through :func:`writer_alive`.
``remove_stale_partials`` deletes what a writer killed by SIGKILL or a power cut left; only
that exact name pattern matches, so nothing else is ever touched. A partial whose pid was reused by
an unrelated live process stays until a later run finds that pid gone.

Used by every file the project writes: outputs of translate (with the lock of
:mod:`gtacity.engine.media.lock`), generator files, checkpoints, ONNX files, engines, demo clips.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from gtacity.errors import GtacityError

# Write errors no retry of the next file avoids: a job stops on them instead of failing file by file.
STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space (or choose an output on another disk) and rerun",
    errno.EDQUOT: "the disk quota is used up; free some space (or choose an output on another disk) and rerun",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
    errno.EACCES: "no permission to write there; choose another output folder or change its permissions",
    errno.EPERM: "no permission to write there; choose another output folder or change its permissions",
}


class WriteError(GtacityError):
    """A file the machine will not let us write: a full disk, a read-only mount, no permission.

    Attributes:
        errno: the system's error number (``errno.ENOSPC`` ...).
    """

    def __init__(self, message: str, number: int | None = None):
        super().__init__(message)
        self.errno = number

    @property
    def stopping(self) -> bool:
        """Whether every later write would fail the same way (full disk, read-only mount)."""
        return self.errno in STOPPING_ERRNOS


def write_error(error: OSError, path: str | Path) -> WriteError:
    """``error`` (from writing ``path``: the file as the user knows it, not its partial name) as one
    line: the file, the system's words, what to do."""
    advice = _ADVICE.get(error.errno, "check the folder is writable and the disk has free space")
    return WriteError(f"{path}: cannot be written ({error.strerror}); {advice}", error.errno)


def partial_path(final: Path, owner: str | None = None) -> Path:
    """A fresh unfinished-file name beside ``final``, carrying its writer: ``owner`` (a folder job
    run's ``run<RUNID>``), else this process's pid."""
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}.partial-{owner or os.getpid()}-{token}{final.suffix}")


def run_owner(run_id: str) -> str:
    """The owner a folder job's run ``run_id`` (16 hex digits) writes its partial files under."""
    return f"run{run_id}"


@contextlib.contextmanager
def written_whole(final: str | Path, owner: str | None = None) -> Iterator[Path]:
    """A partial path beside ``final`` for the block to write; ``final`` appears only if the block returns.

    ``final``'s folder is created if missing. Without ``owner`` the partial carries this process's
    pid and partial files a dead writer left for ``final`` are removed first; a folder job passes
    its run's owner and sweeps its whole tree once at start instead (per file, that listing would
    cost a folder scan for every image). On success the file gets a normal file's mode (some
    writers create private 0600 files) and replaces ``final``; if the block raises (an error,
    Ctrl-C), the partial file is deleted and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if owner is None:
        remove_stale_partials(final)
    partial = partial_path(final, owner)
    try:
        yield partial
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o666 & ~umask)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def write_json(final: str | Path, data, **dump_options) -> Path:
    """Write ``data`` as indented UTF-8 JSON to ``final``, whole or not at all."""
    final = Path(final)
    with written_whole(final) as partial:
        partial.write_text(json.dumps(data, indent=2, **dump_options) + "\n", encoding="utf-8")
    return final


_PARTIAL = re.compile(r"\.(?P<name>.+)\.partial-(?P<owner>\d+|run[0-9a-f]{16})-[0-9a-f]{8}(?P<ext>\.[^.]+)?")


def partial_of(name: str) -> tuple[str, str] | None:
    """``(final name, owner)`` if ``name`` is a partial file's name, else None."""
    match = _PARTIAL.fullmatch(name)
    if match is None or not match["name"].endswith(match["ext"] or ""):
        return None
    return match["name"], match["owner"]


def writer_alive(owner: str, run_alive: Callable[[str], bool] | None = None) -> bool:
    """Whether the writer ``owner`` may still be writing: a pid that runs, or a job run that
    ``run_alive(run_id)`` says holds its lock (without ``run_alive``, a run counts as alive)."""
    if owner.startswith("run"):
        return run_alive is None or run_alive(owner[3:])
    return _running(int(owner))


def _stale_writer_of(name: str) -> str | None:
    """The final name a partial file called ``name`` was for, if it is one and its writer is gone."""
    found = partial_of(name)
    if found is None or writer_alive(found[1]):
        return None
    return found[0]


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
