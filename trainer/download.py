"""Download, resume, unpack and check the public unpaired datasets (``gtacity data download``).

One table, :data:`DATASETS`, says where each archive lives and which folders it must unpack to;
:func:`download_dataset` is the one call the command line makes. The transfer is
:func:`gtacity.fetch.fetch_file`: a ``.partial`` file grows until its size matches the server's, an
interrupted run resumes it with an HTTP ``Range`` request, and only a complete file is renamed to
``.zip``.

Which side of ``cityscapes2gta.zip`` is GTA and which is Cityscapes is not stated by its authors
(see :data:`DATASETS`), so a folder is labelled with a domain only when every image in it carries
that dataset's own file-name pattern; otherwise its domain is ``None`` and the trainer asks.
"""

from __future__ import annotations

import errno
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gtacity.fetch import Advice, DownloadError, ensure_space, fetch_file, raise_if_disk_full
from gtacity.trainer.data import domain_from_names

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("trainA", "trainB", "testA", "testB")
# The transfer's one-line errors name this command's own options.
_ADVICE = Advice(other_source="pass --url to a mirror", other_disk="pass --to another disk", check_source="check --url")


class ArchiveError(DownloadError):
    """The downloaded archive is corrupt or unsafe to unpack."""


class LayoutError(DownloadError):
    """The archive unpacked, but not into the folders the trainer expects."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where one archive lives and what it must unpack to.

    Attributes:
        name: the name the command line takes.
        url: the authors' download address (``--url`` replaces it with a mirror).
        folder: the folder under ``--to`` that holds the unpacked splits.
        size_bytes: the archive's size where a public source states it; ``None`` trusts the
            server's ``Content-Length`` alone.
        source: who publishes the archive, and what is known about its sides.
    """

    name: str
    url: str
    folder: str
    size_bytes: int | None
    source: str


DATASETS: dict[str, DatasetSpec] = {
    "cityscapes2gta": DatasetSpec(
        name="cityscapes2gta",
        url="http://efrosgans.eecs.berkeley.edu/cyclegta/cityscapes2gta.zip",
        folder="cityscapes2gta",
        size_bytes=None,
        source=(
            "Berkeley CycleGAN/CyCADA server (efrosgans.eecs.berkeley.edu/cyclegta). Neither the "
            "CycleGAN nor the CyCADA repository documents this archive's layout or which of A/B "
            "is GTA; no public source states its size or file counts."
        ),
    ),
}


@dataclass(frozen=True)
class FolderSummary:
    """One split folder: its name, how many images it holds, and its domain if the names show it."""

    name: str
    images: int
    domain: str | None


@dataclass(frozen=True)
class DatasetLayout:
    """What :func:`download_dataset` found on disk.

    Attributes:
        name: the dataset's name in :data:`DATASETS`.
        root: the folder holding trainA/trainB/testA/testB.
        folders: one summary per split, in SPLITS order.
        fetched: True when this call downloaded or unpacked anything; False when all was in place.
        zip_path: the kept archive, or ``None`` after ``keep_zip=False``.
    """

    name: str
    root: Path
    folders: tuple[FolderSummary, ...]
    fetched: bool
    zip_path: Path | None

    def summary_lines(self) -> list[str]:
        """The lines ``gtacity data download`` prints: a headline, then one line per folder."""
        if self.fetched:
            lines = [f"{self.name}: ready in {self.root}"]
        else:
            lines = [f"{self.name}: already downloaded and unpacked in {self.root} (--force fetches it again)"]
        for f in self.folders:
            domain = f"{f.domain} (from file names)" if f.domain else "unknown (not stated by the archive)"
            lines.append(f"  {f.name:<7} {f.images:>6} images  domain: {domain}")
        if any(f.domain is None for f in self.folders):
            lines.append("  which side is GTA is not documented: state it when you train")
        return lines


def download_dataset(
    name: str,
    to: Path | str = "data",
    url: str | None = None,
    force: bool = False,
    keep_zip: bool = True,
    progress: bool = True,
    timeout_s: float = 30.0,
) -> DatasetLayout:
    """Download a known dataset, resume a partial download, unpack it safely and check its layout.

    Args:
        name: a key of :data:`DATASETS`, e.g. ``"cityscapes2gta"``.
        to: the folder that receives ``<name>.zip`` and the unpacked ``<folder>/``.
        url: a mirror to fetch from instead of the authors' address.
        force: fetch and unpack again even when the dataset is already in place.
        keep_zip: keep the archive after a successful unpack.
        progress: show a tqdm bar (bytes, rate, ETA) on stderr.
        timeout_s: seconds a connection may stay silent before the download fails.

    Returns:
        The layout found on disk, with per-folder image counts and domains.

    Raises:
        DownloadError: unknown name, unreachable server, HTTP error, wrong size or a full disk.
        ArchiveError: the archive is not a valid zip, or a member would land outside ``to``.
        LayoutError: a split folder is missing or holds no images.
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    to = Path(to)
    root, zip_path = to / spec.folder, to / f"{spec.name}.zip"
    partial = zip_path.with_name(zip_path.name + ".partial")
    if force:
        shutil.rmtree(root, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    elif root.exists():
        folders = _check_layout(root, f"{root} exists but", "pass --force to fetch it again")
        return DatasetLayout(spec.name, root, folders, False, zip_path if zip_path.exists() else None)
    created = next((p for p in reversed((to, *to.parents)) if not p.exists()), None)
    to.mkdir(parents=True, exist_ok=True)
    if not zip_path.exists():
        try:
            fetch_file(url or spec.url, zip_path, size=spec.size_bytes, progress=progress, timeout_s=timeout_s,
                       advice=_ADVICE)
        except DownloadError:
            _remove_empty(to, created)  # offline: leave no empty folder behind (a partial file stays)
            raise
    _unpack(zip_path, root, spec.folder)
    folders = _check_layout(root, f"{zip_path} unpacked but", "check that the URL serves this dataset")
    if not keep_zip:
        zip_path.unlink()
    return DatasetLayout(spec.name, root, folders, True, zip_path if keep_zip else None)


def _remove_empty(folder: Path, created: Path | None) -> None:
    """Remove ``folder`` and its parents up to ``created`` (the first one this call made) while empty."""
    if created is None:
        return
    for path in (folder, *folder.parents):
        try:
            path.rmdir()  # only an empty folder goes
        except OSError:
            return
        if path == created:
            return


def _ensure_space(folder: Path, need: int, what: str) -> None:
    """Fail before writing when the disk cannot hold ``need`` more bytes."""
    ensure_space(folder, need, what, _ADVICE)


def _raise_if_disk_full(e: OSError, path: Path) -> None:
    """A full disk is the user's to fix, so it becomes one line; other write errors keep their traceback."""
    raise_if_disk_full(e, path, _ADVICE)


def _unpack(zip_path: Path, root: Path, folder: str) -> None:
    """Unpack ``zip_path`` so that the splits end up in ``root``, refusing unsafe member names.

    Everything lands in a staging folder first and is renamed into place at the end, so an
    interrupted or refused unpack never leaves a ``root`` that looks finished.
    """
    staging = root.with_name(f".{root.name}.unpacking")
    try:
        _fresh_staging(staging)
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                _refuse_unsafe(info.filename, zip_path)
            _refuse_beneath_files(members, zip_path)
            _ensure_space(root.parent, sum(i.file_size for i in members), f"unpacking {zip_path}")
            zf.extractall(staging, members)
        _layout_root(staging, folder, zip_path).replace(root)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ArchiveError(f"{zip_path} is not a valid zip archive ({e}); delete it and run again") from e
    except OSError as e:
        _raise_if_disk_full(e, root)
        denied = e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        advice = "check that folder's permissions or pass --to another folder" if denied else "check --url"
        raise DownloadError(f"cannot unpack {zip_path}: {e.strerror or e} ({e.filename or staging}); {advice}") from e
    finally:
        _remove_staging(staging)


def _fresh_staging(staging: Path) -> None:
    """An empty staging folder made by this run: whatever was left at its name is removed first.

    A symbolic link planted at the name is removed as a link (its target is never touched), and
    ``mkdir`` fails if anything appears there again, so the archive cannot be steered elsewhere.
    """
    _remove_staging(staging)
    staging.mkdir()


def _remove_staging(staging: Path) -> None:
    if staging.is_symlink() or staging.is_file():
        staging.unlink()
    else:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_unsafe(member: str, zip_path: Path) -> None:
    """Members must stay inside the target: no absolute paths, drive letters or ``..`` parts."""
    name = member.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in PurePosixPath(name).parts:
        raise ArchiveError(
            f"{zip_path}: member {member!r} points outside the target folder; refusing to unpack "
            "(delete the file and check --url)"
        )


def _refuse_beneath_files(members: list[zipfile.ZipInfo], zip_path: Path) -> None:
    """No member may lie beneath another member that is a file or a symbolic link (``a``, then
    ``a/b``): unpacking it would have to write through that file or link."""
    files = {info.filename.rstrip("/"): info for info in members if not info.is_dir()}
    for info in members:
        parts = info.filename.rstrip("/").split("/")
        for depth in range(1, len(parts)):
            parent = files.get("/".join(parts[:depth]))
            if parent is not None:
                what = "a symbolic link" if stat.S_ISLNK(parent.external_attr >> 16) else "a file"
                raise ArchiveError(
                    f"{zip_path}: member {info.filename!r} lies beneath {parent.filename!r}, which the "
                    f"archive holds as {what}; refusing to unpack (delete the file and check --url)"
                )


def _layout_root(staging: Path, folder: str, zip_path: Path) -> Path:
    """The unpacked folder that holds every split: ``<folder>/`` inside the archive, or its top."""
    for candidate in (staging / folder, staging):
        if all((candidate / s).is_dir() for s in SPLITS):
            return candidate
    base = staging / folder if (staging / folder).is_dir() else staging
    missing = [f"{s}/" for s in SPLITS if not (base / s).is_dir()]
    found = sorted(f"{p.name}/" for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    raise LayoutError(
        f"{zip_path} has no {', '.join(missing)} (found {', '.join(found) or 'no folders'}); "
        "check that the URL serves this dataset"
    )


def _check_layout(root: Path, context: str, advice: str) -> tuple[FolderSummary, ...]:
    """Count the images of every split under ``root`` and read their domain from the file names."""
    summaries = []
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise LayoutError(f"{context} has no {split}/; {advice}")
        names = [p.name for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not names:
            raise LayoutError(f"{context} {split}/ holds no images; {advice}")
        summaries.append(FolderSummary(split, len(names), domain_from_names(names)))
    return tuple(summaries)
