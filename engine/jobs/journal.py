"""What a bulk job's output folder remembers: the manifest, which items are done, who is running.

Layout inside the output folder::

    .gtacity-job/manifest.json  the manifest: what defines the result (weights file's SHA-256,
                                direction, backend, precision, gtacity version, dataset options)
                                + a token
    .gtacity-job/RUNID.journal  one per run: "token T", 'run {"shard": "K/N" or null, "pid": P,
                                "host": H}', then 'done "KEY"' per finished item
    .gtacity-job/.start.lock    held while a run starts (reads the manifest, writes its first lines
                                and looks at the other live runs), so starts never interleave

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
an older token no longer count, so outputs made with the old settings are redone. ``--overwrite``
is refused while another run of the folder is alive: its outputs would mix with the new ones under
a manifest naming only the new settings. Live runs must be distinct shards of one split (``--shard
K/N``, the same N): a second run of the whole job, or of the same shard, is refused, as it would
redo what the first is doing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gtacity.engine.media.lock import OutputLock
from gtacity.errors import GtacityError
from gtacity.files import partial_of, partial_path, run_owner, write_error, writer_alive, written_whole

STATE_DIR = ".gtacity-job"
MANIFEST = f"{STATE_DIR}/manifest.json"
_OLD_MANIFEST = "gtacity-job.json"


class JobStateError(GtacityError):
    """An output folder that holds another job's results, or a manifest that cannot be read."""


def open_job(root: Path, settings: dict[str, str], overwrite: bool, shard: str | None = None) -> RunJournal:
    """Start a run in output folder ``root``: its locked journal, under the manifest's token.

    ``shard`` is this run's ``K/N`` (None: the whole job); it must not overlap a live run's.

    The manifest is written if there is none. Shards starting together race to create it: exactly
    one wins (a hard link never replaces), the others read the winner's and must agree with it.
    The journal is locked before any file is written, so even a kill in the middle of writing the
    manifest leaves only files the next run recognises as a dead run's.

    Raises:
        JobStateError: the manifest records different settings (without ``overwrite``, or with
            it while another run is alive), the folder holds files but no manifest (not a
            gtacity job; never mixed into without ``overwrite``), or a live run does the same
            items. Nothing is left in ``root`` then.
        WriteError: the folder is read-only or the disk full (no lock or empty manifest is left).
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
        with _starting(root):
            journal.start(_manifest_token(root, settings, overwrite, journal.run_id), shard)
            _check_company(root, journal.run_id, journal.token, shard)
    except BaseException:
        journal.discard()
        raise
    return journal


@contextlib.contextmanager
def _starting(root: Path) -> Iterator[None]:
    """Hold the folder's start lock: one run at a time reads the manifest and the live runs."""
    lock = OutputLock(root / STATE_DIR / "start").acquire(wait=True)
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class _LiveRun:
    """Another run of the folder that holds its journal's lock, as its first lines describe it."""

    token: str
    shard: str | None
    who: str
    described: bool  # False for an earlier version's run, whose journal does not say its shard


def _live_runs(root: Path, run_id: str) -> list[_LiveRun]:
    """The folder's other live runs that have started (written their token)."""
    found = []
    for journal in (root / STATE_DIR).glob("*.journal"):
        lines = _complete_lines(journal)
        if journal.stem == run_id or not lines[:1] or not lines[0].startswith("token "):
            continue
        if not is_alive(root, journal.stem):
            continue
        info = _run_line(lines[1] if len(lines) > 1 else "")
        shard = info.get("shard")
        what = f"shard {shard}" if shard else "the whole job"
        who = f"pid {info.get('pid', '?')} on {info.get('host', '?')}, {what}" if info else "of an earlier gtacity version"
        found.append(_LiveRun(lines[0][6:], shard, who, bool(info)))
    return found


def _run_line(line: str) -> dict:
    """What a journal's ``run {...}`` line says ({} for another line or a damaged one)."""
    try:
        info = json.loads(line[4:]) if line.startswith("run ") else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _check_company(root: Path, run_id: str, token: str, shard: str | None) -> None:
    """Refuse to run beside a live run of other settings, of the whole job or of an overlapping shard."""
    for other in _live_runs(root, run_id):
        if other.token != token:
            raise JobStateError(
                f"{root}: another run ({other.who}) is writing this folder with other settings; "
                "wait for it to finish or choose another output folder"
            )
        if not other.described:
            continue
        if shard is None or other.shard is None or other.shard == shard or \
                other.shard.split("/")[1] != shard.split("/")[1]:
            raise JobStateError(
                f"{root}: another run ({other.who}) is translating this job into this folder, and this one "
                f"({'shard ' + shard if shard else 'the whole job'}) would redo its files; wait for it "
                "to finish, or split the job between runs with --shard K/N (the same N, a different K each)"
            )


def _move_old_manifest(root: Path) -> None:
    """An earlier version's top-level manifest goes into the state folder, where it lives now."""
    old = root / _OLD_MANIFEST
    if old.is_file() and not (root / MANIFEST).exists() and _read_manifest(old) is not None:
        (root / STATE_DIR).mkdir(exist_ok=True)
        os.replace(old, root / MANIFEST)


def _manifest_token(root: Path, settings: dict[str, str], overwrite: bool, run_id: str) -> str:
    path = root / MANIFEST
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
    what = "; ".join(f"{k} was {existing.get(k)!r}, now {settings.get(k)!r}" for k in differences)
    if not overwrite:
        raise JobStateError(
            f"{path.parent}: was made with other settings ({what}); rerun with the same ones to "
            "resume, choose another output folder, or pass --overwrite to redo it with these"
        )
    busy = _live_runs(root, run_id)
    if busy:
        raise JobStateError(
            f"{root}: another run ({busy[0].who}) is still writing this job with its "
            f"old settings ({what}); --overwrite now would mix both in one folder; wait for every "
            "run to finish (or stop them), then rerun"
        )
    token = secrets.token_hex(8)
    try:
        with written_whole(path, run_owner(run_id)) as partial:
            _write_json(partial, {**settings, "token": token})
    except OSError as e:
        raise write_error(e, path) from None
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
    temp = partial_path(path, run_owner(run_id))
    try:
        _write_json(temp, data)
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise write_error(e, path) from None
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
        self.path = folder / f"{self.run_id}.journal"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115 - held for the run
        except OSError as e:
            raise write_error(e, folder) from None
        self._lock = threading.Lock()  # items finish on several writer threads
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def start(self, token: str, shard: str | None = None) -> None:
        """Say which manifest token the records that follow belong to (the journal's first line),
        and who this run is: its shard ``K/N`` (None: the whole job), pid and host."""
        self.token = token
        self._write(f"token {token}")
        self._write("run " + json.dumps({"shard": shard, "pid": os.getpid(), "host": socket.gethostname()}))

    def done(self, key: str) -> None:
        """Record that every output of item ``key`` is in place under its final name."""
        self._write(f"done {json.dumps(key)}")  # quoted: a file name may hold a newline

    def _write(self, line: str) -> None:
        # One write() per line: a kill lands before or after it, never inside another line.
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as e:
                raise write_error(e, self.path) from None

    def close(self) -> None:
        """Release the lock: from now on this run counts as finished (or dead)."""
        # A line a full disk refused is still buffered; closing retries it, and fails the same way.
        with contextlib.suppress(OSError):
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
