"""How an output file comes into being: a lock beside it, a recognisable partial file, a rename.

Every sink writes through these three rules, so a job that is killed in any way (an exception,
Ctrl-C, SIGTERM, even SIGKILL) never leaves a file that looks finished, and the next job to the
same output can tell what is debris:

- **Lock**: ``OutputLock(final)`` takes an exclusive ``fcntl.flock`` on ``.NAME.lock`` beside the
  final path (the lock file holds the writer's pid). A second job to the same output is refused in
  one line while the first runs. The kernel drops the lock when its process dies, however it dies.
- **Partial**: data is written to ``partial_path(final)`` = ``.NAME.partial-PID-XXXXXXXX.EXT``
  beside the final path (hidden; the writer's pid; the real extension last, because FFmpeg and
  OpenCV pick the format from it), then moved onto the final path with :func:`os.replace`.
- **Cleanup**: ``remove_stale_partials(final)`` (a file) and ``remove_stale_partials_under(root)``
  (a folder output) delete partial files whose writer pid is no longer running (left by a SIGKILL
  or a power cut). Only that exact name pattern matches, so nothing else is ever touched; sinks
  run it after taking the lock. A partial whose pid was reused by an unrelated live process stays
  until a later run finds that pid gone.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from pathlib import Path

from gtacity.errors import GtacityError


class OutputBusyError(GtacityError):
    """Another job holds the output's lock."""


def partial_path(final: Path) -> Path:
    """A fresh unfinished-file name beside ``final``, carrying this process's pid."""
    token = secrets.token_hex(4)
    return final.with_name(f".{final.name}.partial-{os.getpid()}-{token}{final.suffix}")


def lock_path(final: Path) -> Path:
    """The lock file of ``final`` (a file or a folder output)."""
    return final.with_name(f".{final.name}.lock")


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


class OutputLock:
    """An exclusive OS lock on one output, held from :meth:`acquire` to :meth:`release`.

    The lock file is removed on release. Because another job may have opened the file just before
    the removal, :meth:`acquire` re-checks after locking that the file it holds is still the one
    at the path, and retries otherwise; so two jobs can never both hold the lock of one output.
    """

    def __init__(self, final: Path):
        self.final = final
        self.path = lock_path(final)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock or refuse at once.

        Raises:
            OutputBusyError: another live job is writing the same output.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise OutputBusyError(
                    f"{self.final}: another gtacity job (pid {holder}) is writing this output; "
                    "wait for it to finish or choose another output"
                ) from None
            if _same_inode(fd, self.path):
                break
            os.close(fd)  # unlinked by its previous holder while we waited: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _same_inode(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
