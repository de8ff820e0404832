"""How an output file comes into being: a lock beside it, a recognisable partial file, a rename.

Every sink writes through these three rules, so a job that is killed in any way (an exception,
Ctrl-C, SIGTERM, even SIGKILL) never leaves a file that looks finished, and the next job to the
same output can tell what is debris:

- **Lock**: ``OutputLock(final)`` takes an exclusive ``fcntl.flock`` on ``.NAME.lock`` beside the
  final path (the lock file holds the writer's pid). A second job to the same output is refused in
  one line while the first runs. The kernel drops the lock when its process dies, however it dies.
- **Partial**: data is written to ``partial_path(final)`` = ``.NAME.partial-PID-XXXXXXXX.EXT``
  beside the final path, then moved onto the final path with :func:`os.replace`
  (:mod:`gtacity.files`, which every file the project writes goes through).
- **Cleanup**: ``remove_stale_partials(final)`` (a file) and ``remove_stale_partials_under(root)``
  (a folder output) delete partial files whose writer pid is no longer running (left by a SIGKILL
  or a power cut); sinks run it after taking the lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from gtacity.errors import GtacityError
from gtacity.files import write_error


class OutputBusyError(GtacityError):
    """Another job holds the output's lock."""


def lock_path(final: Path) -> Path:
    """The lock file of ``final`` (a file or a folder output)."""
    return final.with_name(f".{final.name}.lock")


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

    def acquire(self, wait: bool = False) -> OutputLock:
        """Take the lock, or refuse at once (``wait``: wait for its holder to release it).

        Raises:
            OutputBusyError: another live job is writing the same output.
            WriteError: the lock file cannot be written (a read-only folder, a full disk); no
                lock file is left behind.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._open(wait)
        except OSError as e:
            raise write_error(e, self.final) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:
            self.path.unlink(missing_ok=True)  # held by us: nobody else is using this file
            os.close(fd)
            raise write_error(e, self.final) from None
        self._fd = fd
        return self

    def _open(self, wait: bool) -> int:
        """The locked file descriptor of the lock file at :attr:`path` (created if missing)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
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
                return fd
            os.close(fd)  # unlinked by its previous holder while we waited: lock the new one

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
