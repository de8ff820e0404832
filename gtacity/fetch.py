"""Fetch one file over HTTP(S): resumable, size- and SHA-256-checked, never half there.

What the dataset download and the Inception weights of ``gtacity eval realism`` share. Only
:mod:`urllib` is used: a ``NAME.partial`` file beside the destination grows until its size matches
the server's, an interrupted transfer resumes it with an HTTP ``Range`` request (a server that
ignores the range sends the whole file, which then starts over), and only a complete file whose
size and SHA-256 are right is renamed to the destination. A wrong checksum deletes the partial
file: resuming it could never make it right.

::

    from gtacity.fetch import fetch_file
    path = fetch_file(url, cache / "weights.pth", sha256="6726825d...", progress=True)
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from gtacity import __version__
from gtacity.errors import GtacityError

_CHUNK = 1 << 20

_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class DownloadError(GtacityError):
    """A file could not be fetched: network, HTTP status, size, checksum or disk space."""


@dataclass(frozen=True)
class Advice:
    """What a failed transfer tells the user to do, in the words of the command that fetched.

    Attributes:
        other_source: ends "check your connection or ..." and "check the URL or ..." (e.g. "pass
            --url to a mirror").
        other_disk: ends "free some space or ..." (e.g. "pass --to another disk").
        check_source: follows a file of the wrong size or checksum, which was deleted.
    """

    other_source: str = "fetch it from another address"
    other_disk: str = "write it to another disk"
    check_source: str = "check the address"


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout_s: float = 30.0,
    advice: Advice = Advice(),
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.partial`` if an earlier transfer left one.

    Args:
        url: an http(s) address.
        dest: the file to create; its folder is created. An existing ``dest`` is returned as it
            is (check it yourself if it may be stale).
        sha256: the file's expected SHA-256 (hex); None checks none.
        size: the file's expected size in bytes; None trusts the server's ``Content-Length``.
        progress: show a tqdm bar (bytes, rate, ETA) on stderr.
        timeout_s: seconds a connection may stay silent before the transfer fails.
        advice: the command's own words for what to do after a failure.

    Returns:
        ``dest``, complete and checked.

    Raises:
        DownloadError: unreachable server, HTTP error, short or oversized transfer, wrong size or
            checksum, or a full disk. A broken transfer keeps the partial file for the next call.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _grow(url, partial, progress, timeout_s, advice)
    got = partial.stat().st_size
    if size is not None and got != size:
        partial.unlink()
        raise DownloadError(f"{url} served {got} bytes but {dest.name} is {size} bytes; "
                            f"the partial file was deleted, {advice.check_source}")
    if sha256 is not None:
        digest = file_sha256(partial)
        if digest != sha256.lower():
            partial.unlink()
            raise DownloadError(f"{url} served a file with SHA-256 {digest[:16]}..., but {dest.name} has "
                                f"{sha256[:16]}...; the partial file was deleted, {advice.check_source}")
    partial.replace(dest)
    return dest


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, hex, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _grow(url: str, partial: Path, progress: bool, timeout_s: float, advice: Advice) -> None:
    """Grow ``partial`` to the server's full file, resuming what is already there."""
    start = partial.stat().st_size if partial.exists() else 0
    resp, offset, total = _open(url, start, timeout_s, advice)
    if resp is not None:
        if total is not None:
            ensure_space(partial.parent, total - offset, url, advice)
        with resp, open(partial, "ab" if offset else "wb") as out:
            with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=partial.name.removesuffix(".partial"), disable=not progress) as bar:
                _copy(resp, out, bar, url, partial, advice)
    got = partial.stat().st_size
    if total is not None and got > total:
        partial.unlink()
        raise DownloadError(f"{url} sent {got} bytes, more than the {total} it announced; run again to start over")
    if total is not None and got < total:
        raise DownloadError(
            f"download of {url} stopped at {got} of {total} bytes; run the same command again to resume"
        )


def _open(url: str, start: int, timeout_s: float, advice: Advice):
    """Open ``url`` from byte ``start``; returns (response or None, body offset, total size or None).

    A ``None`` response means the partial file is already the whole file (HTTP 416 whose total
    equals ``start``). An offset of 0 after asking for ``start > 0`` means the server sent the whole
    file (it ignored the Range header, or the partial did not fit): the caller starts over.
    """
    headers = {"User-Agent": f"gtacity/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and start:
                total = _parse_content_range(e.headers.get("Content-Range"))[1]
                if total == start:
                    return None, start, total
                return _open(url, 0, timeout_s, advice)
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL or {advice.other_source}") from e
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot reach {url} ({reason}); check your connection or {advice.other_source}") from e
    if resp.status == 206:
        first, total = _parse_content_range(resp.headers.get("Content-Range"))
        if first == start:
            return resp, start, total
        resp.close()
        return _open(url, 0, timeout_s, advice)
    length = resp.headers.get("Content-Length")
    return resp, 0, int(length) if length and length.isdigit() else None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 10-99/100`` -> (10, 100); ``bytes */100`` -> (None, 100); unparsable -> (None, None)."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        return None, None
    first, total = m.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _copy(resp, out, bar: tqdm, url: str, partial: Path, advice: Advice) -> None:
    """Stream the body into ``out``; a broken connection keeps what arrived, for the next resume."""
    while True:
        try:
            chunk = resp.read(_CHUNK)
        except (OSError, http.client.HTTPException) as e:
            out.flush()
            raise DownloadError(
                f"download of {url} broke off at {partial.stat().st_size} bytes ({e}); "
                "run the same command again to resume"
            ) from e
        if not chunk:
            return
        try:
            out.write(chunk)
        except OSError as e:
            raise_if_disk_full(e, partial, advice)
            raise
        bar.update(len(chunk))


def ensure_space(folder: Path, need: int, what: str, advice: Advice = Advice()) -> None:
    """Fail before writing when the disk holding ``folder`` cannot take ``need`` more bytes."""
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DownloadError(
            f"{what} needs {need / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free; "
            f"free some space or {advice.other_disk}"
        )



def raise_if_disk_full(e: OSError, path: Path, advice: Advice = Advice()) -> None:
    """A full disk is the user's to fix, so it becomes one line; other write errors keep their traceback."""
    if e.errno == errno.ENOSPC:
        raise DownloadError(f"disk full while writing {path}; free some space or {advice.other_disk}") from e
