"""What a bulk job's output folder remembers: the manifest, which items are done, who is running.

Layout inside the output folder::

    .gtacity-job/manifest.json  the manifest: what defines the result (weights file's SHA-256,
                                direction, backend, precision, gtacity version, dataset options)
                                + a token
    .gtacity-job/RUNID.journal  one per run: "token T", then 'done "KEY"' per finished item

Everything else in the output folder is the mirrored input (and a failures list when something
failed). Jobs of earlier versions kept the manifest at the top as ``gtacity-job.json``; it is moved
into the state folder the first time such a job is resumed.

A run holds an exclusive ``flock`` on its own journal while it lives, and writes every file through
:func:`gtacity.files.written_whole` with the owner ``runRUNID`` in its partial name. So the next run (or a shard running beside it) can
tell a dead run's leftovers (lock free) from a live run's files in flight (lock held) and delete
only the former, on a local disk or on NFS alike. Journals are appended one line per finished item
and never rewritten: a SIGKILL can lose only the line of an item being finished, which is then
redone (its output is replaced atomically, never duplicated).

The token changes only when ``--overwrite`` replaces a manifest with different settings; journals of
an older token no longer count, so outputs made with the old settings are redone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

from gtacity.errors import GtacityError
from gtacity.files import partial_of, partial_path, run_owner, writer_alive, written_whole

STATE_DIR = ".gtacity-job"
MANIFEST = f"{STATE_DIR}/manifest.json"
_OLD_MANIFEST = "gtacity-job.json"


class JobStateError(GtacityError):
    """An output folder that holds another job's results, or a manifest that cannot be read."""


def open_job(root: Path, settings: dict[str, str], overwrite: bool) -> RunJournal:
    """Start a run in output folder ``root``: its locked journal, under the manifest's token.

    The manifest is written if there is none. Shards starting together race to create it: exactly
    one wins (a hard link never replaces), the others read the winner's and must agree with it.
    The journal is locked before any file is written, so even a kill in the middle of writing the
    manifest leaves only files the next run recognises as a dead run's.

    Raises:
        JobStateError: the manifest records different settings (without ``overwrite``), or the
            folder holds files but no manifest (not a gtacity job; never mixed into without
            ``overwrite``). Nothing is left in ``root`` then.
    """
    path = root / MANIFEST
    _move_old_manifest(root)
    if not overwrite and _read_manifest(path) is None and _has_user_files(root):
        raise JobStateError(
            f"{root}: already holds files but no {MANIFEST} (not a gtacity job folder); "
            "choose an empty or new output folder, or pass --overwrite to translate into it"
        )
    journal = RunJournal(root)
    try:
        journal.start(_manifest_token(path, settings, overwrite, journal.run_id))
    except BaseException:
        journal.discard()
        raise
    return journal


def _move_old_manifest(root: Path) -> None:
    """An earlier version's top-level manifest goes into the state folder, where it lives now."""
    old = root / _OLD_MANIFEST
    if old.is_file() and not (root / MANIFEST).exists() and _read_manifest(old) is not None:
        (root / STATE_DIR).mkdir(exist_ok=True)
        os.replace(old, root / MANIFEST)


def _manifest_token(path: Path, settings: dict[str, str], overwrite: bool, run_id: str) -> str:
    existing = _read_manifest(path)
    if existing is None:
        token = secrets.token_hex(8)
        if _create_once(path, {**settings, "token": token}, run_id):
            return token
        existing = _read_manifest(path)
    differences = [k for k in sorted(set(settings) | set(existing) - {"token"})
                   if settings.get(k) != existing.get(k)]
    if not differences:
        return existing["token"]
    if not overwrite:
        what = "; ".join(f"{k} was {existing.get(k)!r}, now {settings.get(k)!r}" for k in differences)
        raise JobStateError(
            f"{path.parent}: was made with other settings ({what}); rerun with the same ones to "
            "resume, choose another output folder, or pass --overwrite to redo it with these"
        )
    token = secrets.token_hex(8)
    with written_whole(path, run_owner(run_id)) as partial:
        _write_json(partial, {**settings, "token": token})
    return token


def _has_user_files(root: Path) -> bool:
    # A shard starting beside another may see that one's journal folder and unfinished manifest;
    # empty folders (what a killed job leaves once its partial files are gone) hold nothing.
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != STATE_DIR]
        if any(partial_of(name) is None for name in names):
            return True
    return False


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and "token" in data:
        return data
    raise JobStateError(f"{path}: is not a gtacity job manifest; move it away or choose another output folder")


def _create_once(path: Path, data: dict, run_id: str) -> bool:
    """Create ``path`` with ``data`` unless it exists (atomically); False when another run won."""
    temp = _write_json(partial_path(path, run_owner(run_id)), data)
    try:
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


class RunJournal:
    """This run's record of finished items, locked for as long as the run lives.

    Attributes:
        run_id: 16 hex digits.
        owner: what every partial file this run writes carries in its name
            (:func:`gtacity.files.run_owner`).
        token: the manifest token the records belong to.
    """

    def __init__(self, root: Path):
        self.run_id = secrets.token_hex(8)
        self.owner = run_owner(self.run_id)
        self.token: str | None = None
        folder = root / STATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{self.run_id}.journal"
        self._file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._lock = threading.Lock()  # items finish on several writer threads
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def start(self, token: str) -> None:
        """Say which manifest token the records that follow belong to (the journal's first line)."""
        self.token = token
        self._write(f"token {token}")

    def done(self, key: str) -> None:
        """Record that every output of item ``key`` is in place under its final name."""
        self._write(f"done {json.dumps(key)}")  # quoted: a file name may hold a newline

    def _write(self, line: str) -> None:
        # One write() per line: a kill lands before or after it, never inside another line.
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Release the lock: from now on this run counts as finished (or dead)."""
        self._file.close()

    def discard(self) -> None:
        """Close and delete the journal of a run that never started (refused settings)."""
        self.close()
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the state folder goes too if this run made it
            self.path.parent.rmdir()


def done_keys(root: Path, token: str) -> set[str]:
    """Keys recorded done, by any run of this token (live or dead, any shard)."""
    done: set[str] = set()
    for journal in (root / STATE_DIR).glob("*.journal"):
        lines = _complete_lines(journal)
        if lines[:1] == [f"token {token}"]:
            done.update(json.loads(line[5:]) for line in lines[1:] if line.startswith("done "))
    return done


def _complete_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]  # the last piece lacks its newline: a line cut off by a kill


def is_alive(root: Path, run_id: str) -> bool:
    """Whether run ``run_id`` still holds its journal's lock (here or on another machine)."""
    try:
        # Opened for writing (never created): NFS emulates flock with POSIX locks, and those need
        # write access for LOCK_EX.
        fd = os.open(root / STATE_DIR / f"{run_id}.journal", os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False


def clean_leftovers(root: Path, token: str, walk: Iterable[Path] | None = None) -> int:
    """Delete temporary files of dead runs and journals of older tokens; return the files deleted.

    Args:
        root: the output folder.
        token: the current manifest token; dead runs' journals of other tokens are removed.
        walk: the folders to search (default: the whole output tree).
    """
    alive: dict[str, bool] = {}
    removed = 0

    def run_alive(run_id: str) -> bool:
        if run_id not in alive:
            alive[run_id] = is_alive(root, run_id)
        return alive[run_id]

    folders = walk if walk is not None else (Path(f) for f, _, _ in os.walk(root))
    for folder in folders:
        if folder.name == STATE_DIR:
            continue
        for entry in os.scandir(folder):
            found = partial_of(entry.name) if entry.name.startswith(".") else None
            if found is None or not entry.is_file(follow_symlinks=False):
                continue
            if not writer_alive(found[1], run_alive):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    for journal in (root / STATE_DIR).glob("*.journal"):
        old = _complete_lines(journal)[:1] != [f"token {token}"]
        if old and not is_alive(root, journal.stem):
            journal.unlink(missing_ok=True)
    return removed
