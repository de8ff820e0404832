"""One timed pass of the whole pipeline for ``gtacity bench --e2e``: bounded, with a progress bar.

A long video at the paper's generator size takes many minutes on a CPU, so the pass reads the
input only until ``e2e_frames`` frames or until the run would end after ``e2e_seconds``: the frames
already in flight (decoded, not yet written) are projected at the rate so far, and no new frame
is read once that projection reaches the limit, so the pass ends near it, not a queue's worth of
frames later. A pass over a few hundred frames measures the same shares as a pass over all of them:
after the first batches the pipeline is in its steady state.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from gtacity.engine.backends import Backend
from gtacity.engine.frames import Frame, FrameSink
from gtacity.engine.media.planes import use_planes
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.imagepool import default_workers, pool_stage_times, pooled_folder_io
from gtacity.engine.stream.pipeline import run_with_progress
from gtacity.engine.stream.stages import StageTimes
from gtacity.images import VIDEO_EXTENSIONS


class Limit:
    """Stops a pass after ``frames`` frames, or when the run would end after ``seconds``.

    :meth:`frames_of` wraps the source (called on the decoding thread); :meth:`written` counts the
    frames the sink took (on the encoding thread).
    """

    def __init__(self, frames: int | None, seconds: float | None):
        self.frames, self.seconds = frames, seconds
        self.read = self.done = 0
        self.stopped_by: str | None = None
        self._lock = threading.Lock()
        self._start = time.perf_counter()

    def written(self, count: int) -> None:
        with self._lock:
            self.done += count

    def frames_of(self, source: Iterable[Frame]) -> Iterator[Frame]:
        """``source``'s frames until the limit (the pipeline's decode stage iterates this)."""
        self._start = time.perf_counter()
        for frame in source:
            reason = self._reached()
            if reason:
                self.stopped_by = reason
                return
            self.read += 1
            yield frame

    def _reached(self) -> str | None:
        if self.frames is not None and self.read >= self.frames:
            return f"--frames {self.frames}"
        with self._lock:
            done = self.done
        if self.seconds is None or done == 0:
            return None
        elapsed = time.perf_counter() - self._start
        # frames in flight finish at the rate so far; the next one read adds one more frame's time
        projected = elapsed + (self.read - done + 1) * elapsed / done
        return f"--seconds {self.seconds:g}" if projected > self.seconds else None


def timed_pass(backend: Backend, path: Path, batch: int, streams: int | None, limit: Limit,
               progress: bool) -> tuple[StageTimes, int]:
    """Translate ``path`` (a video, image folder or image) into a throw-away output as
    ``translate`` would, within ``limit``; (stage times, frames the input holds)."""
    desc = f"e2e {backend.name} {backend.precision} batch {batch}"
    with tempfile.TemporaryDirectory(prefix="gtacity-bench-") as tmp:
        if path.is_dir():  # as a folder job runs: images decoded and encoded on a thread pool
            workers = default_workers()
            with pooled_folder_io(path, Path(tmp) / "out", workers) as (src, sink):
                total = _total(len(src), limit)
                times = _run(limit.frames_of(src), sink, backend, limit, progress, desc, total,
                             batch_size=batch, streams=streams, queue_frames=2 * workers)
                pool_stage_times(times, src, sink, workers)
                return times, len(src)
        with open_source(path, planes=use_planes(backend.device, "off")) as src:  # as translate
            sink = open_sink(_output_path(src, Path(tmp)), src)
            times = _run(limit.frames_of(src), sink, backend, limit, progress, desc,
                         _total(len(src), limit), batch_size=batch, streams=streams)
            return times, len(src)


def _run(frames: Iterator[Frame], sink: FrameSink, backend: Backend, limit: Limit, progress: bool, desc: str,
         total: int, **options) -> StageTimes:
    counting = _Counting(sink, limit)
    return run_with_progress(frames, counting, backend, total=total, progress=progress, desc=desc,
                             **options)


def _total(frames_in_input: int, limit: Limit) -> int:
    return frames_in_input if limit.frames is None else min(frames_in_input, limit.frames)


class _Counting:
    """A sink that tells the limit about every frame written (what the time projection needs)."""

    def __init__(self, sink: FrameSink, limit: Limit):
        self._sink, self._limit = sink, limit
        self.path = sink.path

    def write(self, frame: Frame) -> None:
        self._sink.write(frame)
        self._limit.written(1)

    def close(self) -> None:
        self._sink.close()

    def abort(self) -> None:
        self._sink.abort()


def _output_path(source, folder: Path) -> Path:
    """A throw-away output of the kind ``source`` makes: a video, an image folder or an image."""
    if source.kind == "images":
        return folder / "out"
    suffix = source.path.suffix.lower()
    if source.kind == "video" and suffix not in VIDEO_EXTENSIONS:
        suffix = ".mp4"
    return folder / f"out{suffix}"
