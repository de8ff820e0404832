"""Bulk folder jobs: resumable, shardable, going on past bad files, carrying label maps.

``gtacity translate FOLDER -o OUT`` lands here. The job lists its items (images and videos under
the folder, or a GTA5 / Cityscapes tree with its label maps), keeps this shard's share, skips what
an earlier run finished, and translates the rest: images through one pipeline with decoding and
encoding on a pool of threads, videos one by one. Every output is written under a temporary name
and renamed into place, then recorded in the run's journal (:mod:`gtacity.engine.jobs.journal`), so a
job killed at any moment loses at most the items in flight, and rerunning the same command
resumes it. A file that fails is reported, listed in the failures file, and the job goes on.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from gtacity import __version__
from gtacity.checkpoint import file_sha256
from gtacity.engine.backends import Backend
from gtacity.engine.frames import Frame
from gtacity.engine.jobs.journal import MANIFEST, RunJournal, clean_leftovers, done_keys, open_job
from gtacity.engine.jobs.shards import Shard
from gtacity.engine.media.damage import Damage
from gtacity.engine.media.planes import use_planes
from gtacity.engine.media.sinks import check_folder_target, open_sink, write_image
from gtacity.engine.media.sources import PixelLimit, SourceError, open_source, read_image
from gtacity.engine.media.trees import Item, list_items, write_train_ids
from gtacity.engine.stream.imagepool import ImageTask, PooledImageSource, PooledWriter, pool_stage_times
from gtacity.engine.stream.pipeline import run_pipeline, run_with_progress
from gtacity.engine.stream.stages import STAGES, StageTimes
from gtacity.errors import GtacityError
from gtacity.files import (
    STOPPING_ERRNOS,
    WriteError,
    remove_stale_partials_under,
    run_owner,
    write_error,
    written_whole,
)

FAILURES = "gtacity-failures"


class JobFailedError(GtacityError):
    """Some items of a finished job failed (the others are done); the CLI exits 1 with this."""


@dataclass(frozen=True)
class FolderJob:
    """One folder job (see :class:`gtacity.engine.translation.TranslateConfig` for the options).

    Attributes:
        settings: what defines the result; recorded in the manifest, compared on resume.
        shard: this process's share, or None for the whole folder.
        workers: threads decoding and encoding images.
        streams: batches in flight (see :func:`gtacity.engine.stream.pipeline.run_pipeline`).
        allow_damaged: count a damaged video (decode errors, lost frames, an early end) as done;
            otherwise its output is kept but it is listed as failed, and a rerun tries it again.
        log: takes one line per failed item as it happens (and nothing else).
        limit: images with more pixels are listed as failed, never decoded.
    """

    input: Path
    output: Path
    settings: dict[str, str]
    overwrite: bool = False
    shard: Shard | None = None
    dataset: str | None = None
    labels: str = "copy"
    workers: int = 1
    crf: int = 18
    preset: str = "medium"
    progress: bool = False
    streams: int | None = None
    allow_damaged: bool = False
    log: Callable[[str], None] = lambda line: None
    limit: PixelLimit | None = None


@dataclass
class JobSummary:
    """What a folder job did, in files (``frames`` counts video frames too)."""

    output: Path
    translated: int = 0
    already_done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    times: StageTimes = field(default_factory=StageTimes)
    shard: Shard | None = None
    failures_file: Path | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        """``files: 28 translated, 10 already done, 2 failed (listed in out/gtacity-failures.txt)``."""
        text = f"files: {self.translated} translated, {self.already_done} already done, {self.failed} failed"
        if self.failures_file is not None:
            text += f" (listed in {self.failures_file})"
        return text if self.shard is None else f"shard {self.shard.label}: {text}"


def job_settings(weights: Path, direction: str, backend: Backend, dataset: str | None,
                 labels: str, has_video: bool, crf: int, preset: str) -> dict[str, str]:
    """What makes two runs' outputs the same: the manifest's fields."""
    settings = {
        "gtacity_version": __version__,
        "weights_sha256": file_sha256(weights),
        "direction": direction,
        "backend": backend.name,
        "precision": backend.precision,
        "dataset": dataset or "none",
        "labels": labels if dataset else "none",
    }
    if has_video:
        settings["video"] = f"libx264 crf {crf} preset {preset}"
    return settings


def list_job(input_root: Path, output: Path, dataset: str | None, labels: str) -> list[Item]:
    """Every item of the job (all shards), sorted; checks the output's place first.

    Raises:
        SinkError: the output folder is, lies in or contains the input folder.
        SourceError: nothing to translate under ``input_root``.
        DatasetError: a dataset tree without its folders.
    """
    # Only the location rules: a non-empty output folder is the manifest's business here.
    check_folder_target(output, input_root)
    items = list_items(input_root, output, dataset, labels)
    if not items:
        raise SourceError(f"{input_root}: no images or videos found in this folder or below; check the path")
    return items


def run_folder_job(job: FolderJob, items: list[Item], backend: Backend, batch_size: int) -> JobSummary:
    """Translate this shard's unfinished ``items`` into ``job.output``; returns what was done.

    Raises:
        JobStateError: the output folder holds another job (other settings, or no manifest).
        GtacityError: from the backend; failures of single items are recorded, not raised.
    """
    with open_run(job, items) as (journal, summary, pending):
        run = _Run(job, backend, batch_size, journal, summary)
        run.images([i for i in pending if i.kind == "image"])
        for item in (i for i in pending if i.kind == "video"):
            run.video(item)
    return summary


@contextlib.contextmanager
def open_run(job: FolderJob, items: list[Item]) -> Iterator[tuple[RunJournal, JobSummary, list[Item]]]:
    """One run of ``job``: its locked journal, its summary and this shard's items still to do.

    Items found done are counted, items with a problem found while listing are failed; the block
    translates the rest (any runner: this process's pipeline, or a Ray cluster). When the block
    returns, the failures file is written; the journal is closed however it ends.

    Raises:
        JobStateError: the output folder holds another job (other settings, or no manifest).
    """
    mine = job.shard.select(items) if job.shard else items
    if not (job.output / MANIFEST).exists():
        # Debris of a killed plain translation (dead writers' partial files) is not a user's file;
        # with no manifest yet, no shard of this job can be writing here.
        remove_stale_partials_under(job.output)
    journal = open_job(job.output, job.settings, job.overwrite, job.shard.label if job.shard else None)
    summary = JobSummary(job.output, shard=job.shard)
    try:
        clean_leftovers(job.output, journal.token)
        done = set() if job.overwrite else done_keys(job.output, journal.token)
        pending = []
        for item in mine:
            if item.key in done and all(p.exists() for p in item.outputs):
                summary.already_done += 1
            elif item.problem:
                report_failure(job, summary, item, item.problem)
            else:
                pending.append(item)
        yield journal, summary, pending
        summary.failures_file = _write_failures(job, summary, journal.run_id)
    finally:
        journal.close()


def report_failure(job: FolderJob, summary: JobSummary, item: Item, reason: str) -> None:
    """Count ``item`` as failed for ``reason`` (listed in the failures file) and log it."""
    summary.failures.append((item.key, reason))
    job.log(f"failed: {escape_name(item.key)}: {escape_name(reason)}")


def write_item(item: Item, frame: Frame, owner: str) -> None:
    """Labels, then the translated image, each renamed into place; nothing appears unless all do.

    Raises:
        GtacityError, OSError: a file could not be read or written (no output of the item moved).
    """
    with contextlib.ExitStack() as files:
        # Entered first, so renamed into place last: an item whose image exists has all
        # its labels. Nothing is renamed unless every file was written.
        image = files.enter_context(written_whole(item.output, owner))
        for label in item.labels:
            shutil.copyfile(label.source, files.enter_context(written_whole(label.output, owner)))
            if label.train_ids is not None:
                write_train_ids(label.source, files.enter_context(written_whole(label.train_ids, owner)))
        write_image(image, frame)  # alpha and depth kept


def failure_text(error: GtacityError | OSError, item: Item) -> str:
    """The failures file's reason for an item whose files raised ``error`` in :func:`write_item`.

    Raises:
        WriteError: a full disk or a read-only mount: every later file would fail too, so the job stops.
    """
    if isinstance(error, OSError):
        if error.errno in STOPPING_ERRNOS:
            raise write_error(error, item.output) from None
        return f"{error.strerror}: {error.filename}"
    if isinstance(error, WriteError) and error.stopping:
        raise error
    return str(error)


def translate_video(job: FolderJob, item: Item, backend: Backend, batch_size: int, owner: str,
                    progress: bool) -> tuple[StageTimes, Damage | None]:
    """Translate the video ``item`` into its output (renamed into place when whole).

    Returns:
        The stage times and the input's damage (None when it decoded cleanly).

    Raises:
        GtacityError: the video could not be read, translated or written.
    """
    # Videos in a folder job never blend along the flow (check_mode refuses it there).
    planes = use_planes(backend.device, "off")
    with written_whole(item.output, owner) as temp, open_source(item.source, planes=planes) as source:
        sink = open_sink(temp, source, crf=job.crf, preset=job.preset)
        times = run_with_progress(source, sink, backend, total=len(source), progress=progress,
                                  desc=item.key, batch_size=batch_size, streams=job.streams)
    return times, getattr(source, "damage", None)


def damage_failure(job: FolderJob, damage: Damage | None) -> str | None:
    """Why a translated video still counts as failed (a damaged input without --allow-damaged)."""
    if damage and not job.allow_damaged:
        return (f"damaged input: {damage.describe()}; the output is kept but incomplete; "
                "pass --allow-damaged to accept it")
    return None


class _Run:
    """The translating part of one run: images on the pool, then each video."""

    def __init__(self, job: FolderJob, backend: Backend, batch_size: int, journal: RunJournal,
                 summary: JobSummary):
        self.job, self.backend, self.batch_size = job, backend, batch_size
        self.journal, self.summary = journal, summary
        self._count = threading.Lock()  # images finish on several writer threads

    def images(self, items: list[Item]) -> None:
        if not items:
            return
        workers = self.job.workers
        tasks = [ImageTask(item.source, item) for item in items]
        read = functools.partial(read_image, limit=self.job.limit)
        with tqdm(total=len(items), unit="image", disable=not self.job.progress, dynamic_ncols=True,
                  desc=f"{self.backend.name} {self.backend.precision}") as bar:

            def unreadable(task: ImageTask, reason: str) -> None:
                report_failure(self.job, self.summary, task.meta, reason)
                bar.update(1)

            with ThreadPoolExecutor(workers, thread_name_prefix="gtacity-io") as pool, \
                    PooledImageSource(self.job.input, tasks, pool, workers, read, unreadable) as source:
                writer = PooledWriter(self.job.output, pool, workers, self._write_image)
                times = run_pipeline(source, writer, self.backend, batch_size=self.batch_size,
                                     streams=self.job.streams, queue_frames=2 * workers,
                                     on_frames=bar.update)
        add_times(self.summary, pool_stage_times(times, source, writer, workers))

    def _write_image(self, frame: Frame) -> None:
        """On a pool thread: the item's files, then the journal."""
        item: Item = frame.meta
        try:
            write_item(item, frame, self.journal.owner)
            self.journal.done(item.key)
            with self._count:
                self.summary.translated += 1
        except (GtacityError, OSError) as e:
            report_failure(self.job, self.summary, item, failure_text(e, item))

    def video(self, item: Item) -> None:
        try:
            times, damage = translate_video(self.job, item, self.backend, self.batch_size, self.journal.owner,
                                            self.job.progress)
        except GtacityError as e:
            report_failure(self.job, self.summary, item, str(e))
            return
        add_times(self.summary, times)
        if (why := damage_failure(self.job, damage)) is not None:
            report_failure(self.job, self.summary, item, why)
            return
        self.journal.done(item.key)
        self.summary.translated += 1



def add_times(summary: JobSummary, times: StageTimes) -> None:
    """Add one pipeline run's stage times and frames to the job's."""
    total = summary.times
    for stage in STAGES:
        total.busy[stage] += times.busy[stage]
    total.wall += times.wall
    total.frames += times.frames
    total.streams = times.streams
    summary.frames += times.frames


def _write_failures(job: FolderJob, summary: JobSummary, run_id: str) -> Path | None:
    """This shard's failures file, or none when nothing failed: UTF-8, one ``KEY<TAB>reason`` line
    per failed item, both fields escaped by :func:`escape_name` (see :func:`read_failures`)."""
    name = FAILURES if job.shard is None else f"{FAILURES}-shard-{job.shard.index}-of-{job.shard.count}"
    path = job.output / f"{name}.txt"
    if not summary.failures:
        path.unlink(missing_ok=True)
        return None
    lines = (f"{escape_name(key)}\t{escape_name(why.strip())}\n" for key, why in sorted(summary.failures))
    with written_whole(path, run_owner(run_id)) as partial:
        partial.write_text("".join(lines), encoding="utf-8")
    return path


# What a failures list escapes: the backslash, control characters (a newline or tab in a name would
# break the one-record-per-line format) and the bytes of a name that is not valid UTF-8 (which
# Python carries as lone surrogates U+DC80..U+DCFF and no UTF-8 file can hold).
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f\udc80-\udcff]")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_ESCAPE = re.compile(r"\\(\\|n|t|r|x[0-9a-f]{2})")


def escape_name(text: str) -> str:
    r"""``text`` as a failures list writes it: readable (any other Unicode as it is) and on one line.

    ``\\`` for a backslash, ``\n`` ``\t`` ``\r`` for those characters, ``\xNN`` for another
    control character (NN below 80) or for a byte of a name that is not valid UTF-8 (NN from 80).
    """

    def one(match: re.Match) -> str:
        char = match[0]
        code = ord(char) - 0xDC00 if char >= "\udc80" else ord(char)
        return _SHORT.get(char, f"\\x{code:02x}")

    return _UNSAFE.sub(one, text)


def unescape_name(text: str) -> str:
    """The inverse of :func:`escape_name`; an undecodable byte comes back as Python names it in a
    path (``os.fsdecode``), so the result opens the file."""

    def one(match: re.Match) -> str:
        code = match[1]
        if code[0] == "x":
            value = int(code[1:], 16)
            return chr(0xDC00 + value if value >= 0x80 else value)
        return {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}[code]

    return _ESCAPE.sub(one, text)


def read_failures(path: Path) -> list[tuple[str, str]]:
    """A failures list's ``(key, reason)`` records, names unescaped."""
    records = []
    for line in path.read_text(encoding="utf-8").split("\n")[:-1]:
        key, _, why = line.partition("\t")
        records.append((unescape_name(key), unescape_name(why)))
    return records
