"""Bulk folder jobs on a Ray cluster: ``gtacity translate FOLDER -o OUT --ray local|auto|ADDRESS``.

The same job as :mod:`gtacity.engine.jobs.folder` (same items, outputs, manifest, journal, failures
file and resume), with the work spread over a Ray cluster by Ray Data::

    images: rows -> map_batches(_read)        CPU tasks decode
                 -> map_batches(_Translator)   a pool of actors, each loading the generator once
                                               (one GPU each on GPU nodes), translate
                 -> map_batches(_write)        CPU tasks write labels and images, renamed into place
                 -> the driver                 journals each item, counts failures
    videos: rows -> map_batches(_VideoTranslator, one video per call) -> the driver

Ray schedules, streams and retries: Ray Data retries a task whose worker died and restarts a dead
actor, retrying its calls (its defaults: ``max_retries=-1`` for tasks, ``max_restarts=-1`` and
``max_task_retries=-1`` for actors); nothing here schedules work itself. An error a task raises
(not a death) is not retried: it fails the job, as it would a plain run.

Records: the driver alone holds the run's journal (one ``flock``, as a plain run). A row reaches
the driver only after its writer task renamed every file of the item into place, and only then is
the item journalled. A killed driver (its lock released) loses the items in flight, which the next
run redoes; the next run also deletes the dead run's partial files, whatever node wrote them. A
killed worker's task is retried by Ray under fresh partial names; the partial files the killed
worker left carry this run's owner and are deleted when the run has finished. Every path travels
absolute, so the output must live on a filesystem every node sees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gtacity.engine.backends import Backend
from gtacity.engine.frames import Frame, SinkContext, SourceContext
from gtacity.engine.jobs.folder import (
    FolderJob,
    JobSummary,
    add_times,
    damage_failure,
    failure_text,
    open_run,
    report_failure,
    translate_video,
    write_item,
)
from gtacity.engine.jobs.journal import STATE_DIR
from gtacity.engine.media.damage import Damage
from gtacity.engine.media.sources import PixelLimit, read_image
from gtacity.engine.media.trees import Item
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.engine.stream.stages import StageTimes
from gtacity.errors import GtacityError
from gtacity.files import partial_of
from gtacity.hardware import usable_cores

RAY_MISSING = 'the --ray option needs Ray, which is not installed here; pip install "gtacity[ray]"'
# Attempts Ray makes at the backend probe after its worker dies (a node lost) before giving up.
RETRIES = 3
_MOST_IMAGES_PER_TASK = 16
# Decoding and writing tasks wait on the disk part of the time: two share a CPU. Asking other
# resources than the actors also keeps Ray Data from fusing decoding into the actors, where it
# would take turns with the model instead of running beside it.
_IO_CPUS = 0.5

# Makes a backend, its batch size and the pixel limit in a Ray actor: picklable (a module-level
# function bound to a frozen config), so every actor builds the same backend the plain job would.
BackendRecipe = Callable[[], tuple[Backend, int, PixelLimit]]


class RayError(GtacityError):
    """Ray is missing, the cluster cannot be reached or cannot run the job as asked."""


@dataclass(frozen=True)
class ResolvedBackend:
    """What the actors run (the manifest's backend and precision) and the largest image a worker
    node's memory can translate, found by a probe on the cluster."""

    name: str
    precision: str
    limit: PixelLimit


def _import_ray():
    try:
        import ray
        import ray.data  # Ray without its data extra (pandas, pyarrow) lacks this
    except ImportError:
        raise RayError(RAY_MISSING) from None
    return ray


class RayCluster:
    """The Ray cluster one job runs on: ``with RayCluster("local", None, "auto") as cluster``.

    Args:
        address: ``local`` (a cluster of this machine for this job, stopped after it), ``auto``
            (``RAY_ADDRESS`` or a cluster ``ray start`` made on this node) or a cluster's address.
        workers: translating actors; None: one per GPU of the cluster, or half its CPUs.
        device: the job's ``--device``: ``cpu`` keeps the actors off GPUs, ``cuda`` needs them.
    """

    def __init__(self, address: str, workers: int | None, device: str):
        if workers is not None and workers < 1:
            raise RayError(f"--ray-workers must be at least 1, got {workers}")
        self.address, self.workers, self.device = address, workers, device
        self.gpus = 0
        self._ray = _import_ray()

    def __enter__(self) -> RayCluster:
        ray = self._ray
        # A script that joined a cluster itself keeps it: the job runs there and leaves it joined.
        self._joined = not ray.is_initialized()
        if self._joined:
            self._join(ray)
        try:
            self._size(ray.cluster_resources())
        except BaseException:
            self.__exit__()
            raise
        # Neither a line per dataset started nor Ray's own traceback of a failed task: the job's
        # error says what failed in one line (Ray's logs on the head node keep the rest).
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the job's own bar counts files
        context.execution_options.preserve_order = False
        return self

    def __exit__(self, *exc) -> None:
        if self._joined:
            self._ray.shutdown()

    def _join(self, ray) -> None:
        try:
            if self.address == "local":
                # CPU actors take a CPU each; decoding and writing need one more.
                cpus = max(usable_cores(), (self.workers or 1) + 1)
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise RayError(f"--ray {self.address}: cannot join a Ray cluster there ({' '.join(str(e).split())[:200]}); "
                           "start one with `ray start --head`, set RAY_ADDRESS, or use --ray local (a cluster "
                           "with token authentication also needs RAY_AUTH_MODE=token here)") from None

    def _size(self, resources: dict[str, float]) -> None:
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if self.device.startswith("cuda") and not gpus:
            raise RayError(f"--device {self.device}: the Ray cluster has no GPUs; use --device auto or cpu")
        self.gpus = 1 if gpus and self.device != "cpu" else 0
        if self.workers is None:
            self.workers = gpus if self.gpus else max(1, cpus // 2)
        if not self.gpus and self.workers >= cpus:
            raise RayError(f"--ray-workers {self.workers}: the Ray cluster has {cpus} CPUs; each CPU actor "
                           f"takes one and decoding and writing need at least one more; use at most {cpus - 1}")

    def probe(self, recipe: BackendRecipe) -> ResolvedBackend:
        """The backend and precision the actors will run, from one built where they will be."""
        remote = self._ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=RETRIES)(_resolve)
        return self._get(lambda: self._ray.get(remote.remote(recipe)))

    def run(self, job: FolderJob, items: list[Item], recipe: BackendRecipe) -> JobSummary:
        """Translate this shard's unfinished ``items`` on the cluster, as ``run_folder_job`` would."""
        with open_run(job, items) as (journal, summary, pending):
            images = [i for i in pending if i.kind == "image"]
            videos = [i for i in pending if i.kind == "video"]
            start = time.perf_counter()
            with tqdm(total=len(pending), unit="file", disable=not job.progress, dynamic_ncols=True,
                      desc=f"ray x{self.workers}") as bar:
                collect = _Collector(job, journal, summary, bar)
                if images:
                    self._get(lambda: collect.rows(self._images(job, images, recipe, journal.owner)))
                if videos:
                    self._get(lambda: collect.rows(self._videos(job, videos, recipe, journal.owner)))
            summary.times.wall = time.perf_counter() - start
            # Every task of this run has ended: what carries its owner now is a killed worker's.
            _remove_partials(job.output, journal.owner)
        return summary

    def _images(self, job: FolderJob, items: list[Item], recipe: BackendRecipe, owner: str):
        per_task = max(1, min(_MOST_IMAGES_PER_TASK, math.ceil(len(items) / (4 * self.workers))))
        rows = self._ray.data.from_items(_rows(items), override_num_blocks=math.ceil(len(items) / per_task))
        return (rows.map_batches(_read, batch_size=per_task, fn_kwargs={"limit": job.limit}, num_cpus=_IO_CPUS)
                .map_batches(_Translator, batch_size=per_task, fn_constructor_args=(recipe, job.streams),
                             **self._actors(math.ceil(len(items) / per_task), max_calls=2))
                .map_batches(_write, batch_size=per_task, fn_kwargs={"owner": owner}, num_cpus=_IO_CPUS))

    def _videos(self, job: FolderJob, items: list[Item], recipe: BackendRecipe, owner: str):
        rows = self._ray.data.from_items(_rows(items), override_num_blocks=len(items))
        # One video per call and per actor: a queued second video would wait behind a long first one.
        quiet = dataclasses.replace(job, log=_ignore, progress=False)
        return rows.map_batches(_VideoTranslator, batch_size=1, fn_constructor_args=(recipe, quiet, owner),
                                **self._actors(len(items), max_calls=1))

    def _actors(self, calls: int, max_calls: int) -> dict:
        """A pool of ``--ray-workers`` actors (no more than there are ``calls`` to make)."""
        pool = self._ray.data.ActorPoolStrategy(size=min(self.workers, calls), max_tasks_in_flight_per_actor=max_calls)
        return {"compute": pool, "num_gpus": self.gpus, "num_cpus": 1}

    def _get(self, call: Callable):
        """``call()``, with a failure on the cluster turned into the error it carries (one line)."""
        try:
            return call()
        except self._ray.exceptions.RayError as e:
            raise _cause(e) from None


def _cause(error: BaseException) -> GtacityError:
    seen = error
    while seen is not None:
        if isinstance(seen, GtacityError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    first = " ".join(str(error).split())[:300]
    return RayError(f"the Ray job failed ({type(error).__name__}: {first}); finished files are recorded, "
                    "rerun the same command to finish the job (Ray's logs: /tmp/ray/session_latest/logs "
                    "on the head node)")


def _resolve(recipe: BackendRecipe) -> ResolvedBackend:
    backend, _, limit = recipe()
    return ResolvedBackend(backend.name, backend.precision, limit)


def _ignore(line: str) -> None:
    """A worker's log: failures reach the driver with their rows and are logged there."""


@dataclass
class _Row:
    """One item on its way through the cluster (pickled: rows carry ragged, any-depth pixels)."""

    item: Item
    image: np.ndarray | None = None
    alpha: np.ndarray | None = None
    error: str | None = None
    times: StageTimes = field(default_factory=StageTimes)
    damage: Damage | None = None


def _rows(items: list[Item]) -> list[dict[str, bytes]]:
    return [{"row": pickle.dumps(_Row(item), protocol=5)} for item in items]


def _encode(rows: list[_Row]) -> dict[str, np.ndarray]:
    blobs = np.empty(len(rows), dtype=object)
    blobs[:] = [pickle.dumps(row, protocol=5) for row in rows]
    return {"row": blobs}


def _decode(batch: dict[str, np.ndarray]) -> list[_Row]:
    return [pickle.loads(blob) for blob in batch["row"]]


def _read(batch: dict[str, np.ndarray], limit: PixelLimit | None) -> dict[str, np.ndarray]:
    """CPU task: decode each image; an unreadable one (or one above ``limit``) carries its reason
    instead of pixels."""
    rows = _decode(batch)
    for row in rows:
        start = time.perf_counter()
        try:
            row.image, row.alpha = read_image(row.item.source, limit=limit)
        except GtacityError as e:
            row.error = str(e)
        row.times.busy["decode"] = time.perf_counter() - start
    return _encode(rows)


class _Translator:
    """Actor: loads the generator once, then translates batches of rows with the plain pipeline."""

    def __init__(self, recipe: BackendRecipe, streams: int | None):
        self.backend, self.batch_size, _ = recipe()
        self.streams = streams

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _decode(batch)
        good = [row for row in rows if row.error is None]
        if not good:
            return batch
        frames = [Frame(image=row.image, index=i, meta=row, alpha=row.alpha) for i, row in enumerate(good)]
        sink = _Collect()
        times = run_pipeline(_Frames(frames), sink, self.backend, batch_size=self.batch_size,
                             streams=self.streams, queue_frames=2 * self.batch_size)
        for frame in sink.frames:
            frame.meta.image = frame.image
        for row in good:  # the batch's model time, shared over its images
            for stage in ("preprocess", "infer", "postprocess"):
                row.times.busy[stage] = times.busy[stage] / len(good)
            row.times.frames = 1
        return _encode(rows)


class _Frames(SourceContext):
    kind = "images"
    path = Path(".")

    def __init__(self, frames: list[Frame]):
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self):
        return iter(self._frames)

    def close(self) -> None:
        pass


class _Collect(SinkContext):
    path = Path(".")

    def __init__(self):
        self.frames: list[Frame] = []

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.frames.clear()


def _write(batch: dict[str, np.ndarray], owner: str) -> dict[str, np.ndarray]:
    """CPU task: each item's files renamed into place (under the run's owner); pixels go no further."""
    rows = _decode(batch)
    for row in rows:
        if row.error is None:
            start = time.perf_counter()
            try:
                write_item(row.item, Frame(image=row.image, index=0, alpha=row.alpha), owner)
            except (GtacityError, OSError) as e:
                row.error = failure_text(e, row.item)  # a full disk or read-only mount stops the job
            row.times.busy["encode"] = time.perf_counter() - start
        row.image = row.alpha = None
    return _encode(rows)


class _VideoTranslator:
    """Actor: loads the generator once, then translates one whole video per call."""

    def __init__(self, recipe: BackendRecipe, job: FolderJob, owner: str):
        self.backend, self.batch_size, _ = recipe()
        self.job, self.owner = job, owner

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = _decode(batch)
        for row in rows:
            try:
                row.times, row.damage = translate_video(self.job, row.item, self.backend, self.batch_size,
                                                        self.owner, progress=False)
            except GtacityError as e:
                row.error = str(e)
        return _encode(rows)


class _Collector:
    """The driver's end: journals finished items, records failures, adds up the stage times."""

    def __init__(self, job: FolderJob, journal, summary: JobSummary, bar: tqdm):
        self.job, self.journal, self.summary, self.bar = job, journal, summary, bar

    def rows(self, dataset) -> None:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for row in _decode(batch):
                self._one(row)
                self.bar.update(1)

    def _one(self, row: _Row) -> None:
        wall = self.summary.times.wall
        add_times(self.summary, row.times)
        self.summary.times.wall = wall  # the run's wall time is the driver's, set at the end
        why = row.error if row.error is not None else damage_failure(self.job, row.damage)
        if why is not None:
            report_failure(self.job, self.summary, row.item, why)
            return
        self.journal.done(row.item.key)
        self.summary.translated += 1


def _remove_partials(root: Path, owner: str) -> int:
    """Delete partial files carrying ``owner`` under ``root``; returns how many."""
    removed = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != STATE_DIR]
        for name in names:
            found = partial_of(name) if name.startswith(".") else None
            if found is not None and found[1] == owner:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed
