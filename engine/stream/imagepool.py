"""Image decoding and encoding on a pool of threads, so many cores keep one model busy.

A 1914x1052 PNG takes tens of milliseconds to decode and more to encode (zlib), on one core each;
a GPU translates such a frame in a few milliseconds. With one decoding and one encoding thread a
folder job is bound by zlib, not the model. OpenCV releases the GIL while it decodes, converts and
encodes, so plain threads scale over cores.

:class:`PooledImageSource` reads ahead on the pool and yields frames in input order;
:class:`PooledWriter` takes finished frames and writes them on the pool. Both hold a bounded
number of frames (``2 x workers`` each), so memory stays flat however big the folder.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gtacity.engine.frames import Frame, SinkContext, SourceContext
from gtacity.engine.media.sinks import ImageFolderSink
from gtacity.engine.media.sources import SourceError, read_image
from gtacity.engine.media.trees import list_items
from gtacity.engine.stream.stages import StageTimes
from gtacity.errors import GtacityError
from gtacity.hardware import usable_cores


class _Busy:
    """Thread-seconds spent in pool tasks of one kind (summed over threads, thread-safe)."""

    def __init__(self):
        self.seconds = 0.0
        self._lock = threading.Lock()

    def timed(self, fn: Callable, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            with self._lock:
                self.seconds += time.perf_counter() - start


def default_workers() -> int:
    """Threads for image I/O: every core this process may run on."""
    return usable_cores()


@dataclass(frozen=True)
class ImageTask:
    """One image to read: its file and whatever the writer needs later (rides in ``Frame.meta``)."""

    path: Path
    meta: Any


class PooledImageSource(SourceContext):
    """Decodes ``tasks`` on ``pool``, up to ``2 x workers`` ahead, and yields them in order.

    A file that cannot be read is passed to ``on_failure(task, reason)`` and skipped; the job goes
    on. ``Frame.meta`` is the task's ``meta``. ``busy_s`` is the thread-seconds spent decoding.
    """

    kind = "images"

    def __init__(self, root: Path, tasks: Sequence[ImageTask], pool: ThreadPoolExecutor,
                 workers: int, read: Callable[[Path], tuple[np.ndarray, np.ndarray | None]],
                 on_failure: Callable[[ImageTask, str], None]):
        self.path = root
        self._tasks = tasks
        self._pool = pool
        self._ahead = 2 * workers
        self._read = read
        self._on_failure = on_failure
        self._pending: deque[tuple[ImageTask, Future]] = deque()
        self._busy = _Busy()

    @property
    def busy_s(self) -> float:
        return self._busy.seconds

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Frame]:
        queued = iter(self._tasks)
        index = 0
        while True:
            while len(self._pending) < self._ahead and (task := next(queued, None)) is not None:
                self._pending.append((task, self._pool.submit(self._busy.timed, self._read, task.path)))
            if not self._pending:
                return
            task, future = self._pending.popleft()
            try:
                image, alpha = future.result()
            except GtacityError as e:
                self._on_failure(task, str(e))
                continue
            yield Frame(image=image, index=index, meta=task.meta, alpha=alpha)
            index += 1

    def close(self) -> None:
        """Drop the frames read ahead that nobody will take (a stopped job)."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()


class PooledWriter(SinkContext):
    """Writes frames on ``pool`` with ``write(frame)`` (any thread), up to ``2 x workers`` at once.

    ``write`` here only queues; the pool calls ``write_one(frame)``, which must finish or clean up
    one output on its own and report its failures itself (a failed write never stops the others).
    ``close()`` waits for every queued write; ``abort()`` cancels the queued ones and waits for
    those already running, so no write is cut off half-way by this process. ``busy_s`` is the
    thread-seconds spent writing.
    """

    def __init__(self, root: Path, pool: ThreadPoolExecutor, workers: int,
                 write_one: Callable[[Frame], None]):
        self.path = root
        self._pool = pool
        self._limit = 2 * workers
        self._write_one = write_one
        self._running: set[Future] = set()
        self._lock = threading.Lock()
        self._busy = _Busy()

    @property
    def busy_s(self) -> float:
        return self._busy.seconds

    def write(self, frame: Frame) -> None:
        """Queue one frame; blocks while ``2 x workers`` writes are already queued."""
        with self._lock:
            while len(self._running) >= self._limit:
                done, self._running = wait(self._running, return_when=FIRST_COMPLETED)
                _raise_first(done)
            self._running.add(self._pool.submit(self._busy.timed, self._write_one, frame))

    def close(self) -> None:
        """Wait for every queued write; re-raise the first unexpected error of one."""
        with self._lock:
            done, self._running = wait(self._running), set()
        _raise_first(done.done)

    def abort(self) -> None:
        """Cancel writes not started; wait for running ones (each finishes or removes its file)."""
        with self._lock:
            for future in self._running:
                future.cancel()
            wait(self._running)
            self._running = set()


def pool_stage_times(times: StageTimes, source: PooledImageSource, writer: PooledWriter,
                     workers: int) -> StageTimes:
    """``times`` with decode and encode set to the pool's work: thread-seconds over ``workers``.

    The pipeline's own decode/encode stages only hand frames to and from the pool; the work is on
    the pool's threads. Divided by the thread count, a stage's seconds near the wall time mean the
    pool is saturated, as one thread's busy seconds near the wall time do for the other stages.
    """
    times.busy["decode"] = source.busy_s / workers
    times.busy["encode"] = writer.busy_s / workers
    return times


def _raise_first(futures) -> None:
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()


@contextlib.contextmanager
def pooled_folder_io(root: Path, output: Path, workers: int) -> Iterator[tuple[PooledImageSource, PooledWriter]]:
    """Source and sink of a plain image-folder translation on a pool of ``workers`` threads, without
    a job's records (what ``gtacity bench --e2e FOLDER`` times); an unreadable image raises."""
    items = [item for item in list_items(root, output) if item.kind == "image"]
    tasks = [ImageTask(item.source, item.output.relative_to(output)) for item in items]
    sink = ImageFolderSink(output)

    def unreadable(task: ImageTask, reason: str) -> None:
        raise SourceError(reason)

    with ThreadPoolExecutor(workers, thread_name_prefix="gtacity-io") as pool, \
            PooledImageSource(root, tasks, pool, workers, read_image, unreadable) as source:
        yield source, PooledWriter(output, pool, workers, sink.write)
