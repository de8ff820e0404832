"""The stage graph: decode -> batch + preprocess -> infer -> postprocess -> encode, batches in flight.

Every stage runs on its own thread, so they all work at once: decoding (PyAV releases the GIL),
batching and preprocessing (stacking frames, upload, normalising, padding), inference (the calling
thread, the only one that calls the backend), postprocessing (denormalising, download, cropping)
and encoding (libx264 with its own threads). Between them frames travel through bounded queues
and batches through a fixed pool of slots (:mod:`gtacity.engine.stream.slots`), so memory stays flat
however long the video is: at most ``streams`` batches plus two queues of ``queue_frames`` frames
exist at any time. Every queue is first in, first out and every stage has one thread, so frames
leave in the order they came.

On CUDA each slot is a CUDA stream with pinned upload/download buffers: ``streams`` batches are in
flight on the GPU at once, the copies of one overlap the compute of another, and the host waits
only for a batch's download event, never for the device as a whole. The backend runs on the slot's
stream (``backend.infer`` is called inside ``torch.cuda.stream(slot)``) and does not synchronise.

Frames of any size and depth go in: the batch is reflect-padded to a multiple of 4 and the result
cropped back (frames below the generator's minimum and 16-bit frames take the general path of
:mod:`gtacity.engine.stream.convert`), so output size == input size, always.

Every stage's busy time is measured (host seconds; on CUDA plus the GPU seconds of its work on the
slot's stream, from CUDA events; inference there is GPU time alone): the report says which stage
bounds the run.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from gtacity.engine.backends.base import Backend
from gtacity.engine.frames import Frame, FrameSink, FrameSource
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.stream.slots import Slot, SlotPool
from gtacity.engine.stream.stages import DEFAULT_STREAMS, StageTimes

_END = object()
_POLL_S = 0.1


def batches(frames: Iterable[Frame], max_batch: int) -> Iterator[list[Frame]]:
    """Consecutive frames of equal size and form (depth, or plane format), up to ``max_batch`` at a
    time (a change flushes).

    A full batch leaves at once, without waiting for the next frame: a source that fails on its
    next frame must not hold back the frames already read.
    """
    batch: list[Frame] = []
    for frame in frames:
        first = batch[0] if batch else None
        if batch and (frame.pixels.shape != first.pixels.shape or frame.form != first.form):
            yield batch
            batch = []
        batch.append(frame)
        if len(batch) == max_batch:
            yield batch
            batch = []
    if batch:
        yield batch


class _Stopped(Exception):
    """Raised inside a stage when the pipeline stops (another stage failed, or it was interrupted)."""


class _Run:
    """One pipeline run's shared state: queues, slot pool, timings, the stop flag and first error."""

    def __init__(self, backend: Backend, batch_size: int, streams: int, queue_frames: int):
        self.backend, self.batch_size = backend, batch_size
        self.pool = SlotPool(streams, backend.device)
        depth = max(queue_frames, batch_size)
        self.decoded: queue.Queue = queue.Queue(maxsize=depth)  # frames
        self.prepared: queue.Queue = queue.Queue()  # slots: bounded by the pool
        self.inferred: queue.Queue = queue.Queue()  # slots
        self.translated: queue.Queue = queue.Queue(maxsize=depth)  # frames
        self.times = StageTimes(streams=streams)
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        """Keep the first error and stop every stage."""
        with self._lock:
            if self.error is None:
                self.error = error
        self.stop.set()

    def put(self, q: queue.Queue, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def items(self, q: queue.Queue) -> Iterator:
        """What ``q`` carries, up to the end marker."""
        while (item := self.get(q)) is not _END:
            yield item

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.times.busy[stage] += seconds


class _Worker(threading.Thread):
    """A stage on its own thread; an exception stops the run and is re-raised by the caller."""

    def __init__(self, run: _Run, name: str, target: Callable[[], None]):
        super().__init__(name=f"gtacity-{name}", daemon=True)
        self._run_state, self._target_fn = run, target

    def run(self) -> None:
        try:
            self._target_fn()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._run_state.fail(e)


def run_pipeline(
    source: FrameSource,
    sink: FrameSink,
    backend: Backend,
    *,
    batch_size: int = 1,
    streams: int | None = None,
    queue_frames: int = 8,
    on_frames: Callable[[int], None] | None = None,
) -> StageTimes:
    """Translate every frame of ``source`` into ``sink`` with ``backend``; returns stage timings.

    The sink is closed (its output appears under the final name) only when every frame went
    through; on any error or interrupt it is aborted and the error re-raised.

    Args:
        batch_size: frames per inference call (a backend's best value depends on the device).
        streams: batches in flight at once (on CUDA, each on its own CUDA stream); None =
            :data:`DEFAULT_STREAMS`. Memory grows with it: each batch holds its frames and, on a
            GPU, its activations.
        queue_frames: frames buffered before and after the batches; bounds memory (each 1080p
            frame is ~6 MB).
        on_frames: called with the number of frames just written (progress bars).
    """
    run = _Run(backend, batch_size, DEFAULT_STREAMS if streams is None else streams, queue_frames)
    stages = {
        "decode": lambda: _decode(run, source),
        "preprocess": lambda: _preprocess(run),
        "postprocess": lambda: _postprocess(run),
        "encode": lambda: _encode(run, sink, on_frames),
    }
    workers = [_Worker(run, name, target) for name, target in stages.items()]
    start = time.perf_counter()
    try:
        # Started inside the try: a signal (Ctrl-C, SIGTERM) arriving between two starts must
        # still stop the threads already running, or they outlive the run and crash the exit.
        for worker in workers:
            worker.start()
        try:
            _infer(run)
        except _Stopped:
            pass
        workers[-1].join()  # the encoder ends after the last frame, or when the run stops
        if run.error is not None:
            raise run.error
        sink.close()
    except BaseException as e:
        run.fail(e)
        _join(workers)
        sink.abort()
        raise
    finally:
        run.stop.set()
        _join(workers)
        run.times.wall = time.perf_counter() - start
    return run.times


def run_with_progress(frames: Iterable[Frame], sink: FrameSink, backend: Backend, *, total: int,
                      progress: bool, desc: str, **options) -> StageTimes:
    """:func:`run_pipeline` over one video (or image) with a progress bar of ``total`` frames on
    stderr (none for a single frame, or when ``progress`` is False); ``options`` go to it."""
    with tqdm(total=total, unit="frame", disable=not progress or total < 2, dynamic_ncols=True,
              desc=desc) as bar:
        return run_pipeline(frames, sink, backend, on_frames=bar.update, **options)


def _join(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.ident is not None:  # started (join refuses a thread that never was)
            worker.join(timeout=10)


def _decode(run: _Run, source: FrameSource) -> None:
    it = iter(source)
    while True:
        t = time.perf_counter()
        frame = next(it, _END)
        run.add("decode", time.perf_counter() - t)
        run.put(run.decoded, frame)
        if frame is _END:
            return


def _preprocess(run: _Run) -> None:
    """Batch frames, take a free slot for each batch and queue its upload + normalisation there."""
    for frames in batches(run.items(run.decoded), run.batch_size):
        slot = _take(run)
        t = time.perf_counter()
        host, _ = slot.staging(run.batch_size, frames[0].pixels.shape)
        with slot.on_stream():
            slot.mark("upload")
            slot.x = to_batch(frames, slot.device, host=host)
            slot.mark("uploaded")
        slot.frames = frames
        slot.host_seconds["preprocess"] = time.perf_counter() - t
        run.put(run.prepared, slot)
    run.put(run.prepared, _END)


def _take(run: _Run) -> Slot:
    while True:
        if run.stop.is_set():
            raise _Stopped
        try:
            return run.pool.take(timeout=_POLL_S)
        except queue.Empty:
            continue


def _infer(run: _Run) -> None:
    """On the calling thread: the backend's ``prepare`` and ``infer``, one slot after another."""
    backend = run.backend
    for slot in run.items(run.prepared):
        t = time.perf_counter()
        with slot.on_stream():
            # Cached after the first batch of a size; on CUDA it may capture a graph for the stream.
            backend.prepare(run.batch_size, slot.x.shape[-2], slot.x.shape[-1])
            slot.mark("infer")
            slot.y = backend.infer(slot.x)
            slot.mark("inferred")
        slot.host_seconds["infer"] = time.perf_counter() - t
        run.put(run.inferred, slot)
    run.put(run.inferred, _END)


def _postprocess(run: _Run) -> None:
    """Queue each slot's download, wait for it, hand the frames on in order, free the slot."""
    for slot in run.items(run.inferred):
        t = time.perf_counter()
        _, host = slot.staging(run.batch_size, slot.frames[0].pixels.shape)
        with slot.on_stream():
            slot.mark("download")
            frames = to_frames(slot.y, slot.frames, host)
            slot.mark("downloaded")
        waited = time.perf_counter()
        device_seconds = slot.wait()
        t_copy = time.perf_counter()
        if slot.cuda:  # the pixels are views of the slot's buffer, which the next batch reuses
            frames = [f.with_pixels(f.pixels.copy()) for f in frames]
        host = slot.host_seconds | {"postprocess": (waited - t) + (time.perf_counter() - t_copy)}
        _account(run, slot.cuda, host, device_seconds)
        run.pool.give_back(slot)
        for frame in frames:
            run.put(run.translated, frame)
    run.put(run.translated, _END)


def _account(run: _Run, cuda: bool, host: dict[str, float], device: dict[str, float]) -> None:
    """Add one batch's seconds: host time per stage plus the GPU time of its work on the stream.

    On CUDA inference counts its GPU time alone: the host only queues it.
    """
    for stage in ("preprocess", "infer", "postprocess"):
        seconds = device.get(stage, 0.0)
        if not (cuda and stage == "infer"):
            seconds += host.get(stage, 0.0)
        run.add(stage, seconds)


def _encode(run: _Run, sink: FrameSink, on_frames: Callable[[int], None] | None) -> None:
    for frame in run.items(run.translated):
        t = time.perf_counter()
        sink.write(frame)
        run.add("encode", time.perf_counter() - t)
        run.times.frames += 1
        run.times.planes += frame.planes is not None
        if on_frames:
            on_frames(1)
