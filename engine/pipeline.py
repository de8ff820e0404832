"""The stage graph: decode -> batch -> preprocess -> infer -> postprocess -> encode.

Decoding and encoding run on their own threads (PyAV and OpenCV release the GIL while they work),
inference on the calling thread, with bounded queues between them so memory stays flat however
long the video is. One thread does all the batching and inference, so frames leave in the order
they came. Frames of any size go in: the batch is reflect-padded to a multiple of 4 and the
result cropped back, so output size == input size, always.

Every stage's busy time is measured: the report says which stage bounds the run.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from gtacity import kernels
from gtacity.engine.backends import Backend
from gtacity.engine.frames import Frame, FrameSink, FrameSource
from gtacity.nets import SIZE_MULTIPLE

STAGES = ("decode", "preprocess", "infer", "postprocess", "encode")
_END = object()


@dataclass
class StageTimes:
    """Seconds each stage spent working (not waiting on a queue), and the run's wall time."""

    busy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0
    frames: int = 0

    @property
    def bound_by(self) -> str:
        """The stage that worked longest: speeding anything else up cannot make the run faster."""
        return max(self.busy, key=self.busy.get)

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0


def to_batch(
    frames: list[Frame], device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``N`` frames ``(H, W, 3)`` uint8 -> ``(N, 3, Hp, Wp)`` ``dtype`` in [-1, 1] on ``device``.

    The upload is uint8 (4x less traffic than float); scaling, HWC -> CHW, reflect-padding to a
    multiple of 4 and the cast happen on the device, in one Triton pass on CUDA
    (:func:`gtacity.kernels.to_model_input`).
    """
    pixels = torch.from_numpy(np.stack([f.image for f in frames]))  # (N, H, W, 3) uint8
    if device.type == "cuda":
        pixels = pixels.pin_memory().to(device, non_blocking=True)
    return kernels.to_model_input(pixels, dtype=dtype, multiple=SIZE_MULTIPLE)


def to_frames(y: torch.Tensor, frames: list[Frame]) -> list[Frame]:
    """``(N, 3, Hp, Wp)`` in [-1, 1] -> the input frames carrying ``(H, W, 3)`` uint8 translations.

    Cropping, rounding, CHW -> HWC and the cast to uint8 happen where ``y`` is (one Triton pass on
    CUDA, :func:`gtacity.kernels.from_model_output`), so only bytes are downloaded.
    """
    h, w = frames[0].image.shape[:2]
    pixels = kernels.from_model_output(y, h, w).cpu().numpy()  # (N, H, W, 3)
    return [f.with_image(img) for f, img in zip(frames, pixels)]


def batches(frames: Iterable[Frame], max_batch: int) -> Iterator[list[Frame]]:
    """Consecutive frames of equal size, up to ``max_batch`` at a time (a size change flushes)."""
    batch: list[Frame] = []
    for frame in frames:
        if batch and (len(batch) == max_batch or frame.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


class _Worker(threading.Thread):
    """A stage on its own thread; an exception is kept and re-raised where the pipeline waits."""

    def __init__(self, name: str, target: Callable[[], None]):
        super().__init__(name=f"gtacity-{name}", daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = e


def run_pipeline(
    source: FrameSource,
    sink: FrameSink,
    backend: Backend,
    *,
    batch_size: int = 1,
    queue_frames: int = 8,
    on_frames: Callable[[int], None] | None = None,
) -> StageTimes:
    """Translate every frame of ``source`` into ``sink`` with ``backend``; returns stage timings.

    The sink is closed (its output appears under the final name) only when every frame went
    through; on any error or interrupt it is aborted and the error re-raised.

    Args:
        batch_size: frames per inference call (a backend's best value depends on the device).
        queue_frames: frames buffered between stages; bounds memory (each 1080p frame is ~6 MB).
        on_frames: called with the number of frames just written (progress bars).
    """
    times = StageTimes()
    decoded: queue.Queue = queue.Queue(maxsize=max(queue_frames, batch_size))
    translated: queue.Queue = queue.Queue(maxsize=max(queue_frames, batch_size))
    stop = threading.Event()

    def decode() -> None:
        it = iter(source)
        try:
            while not stop.is_set():
                t = time.perf_counter()
                frame = next(it, _END)
                times.busy["decode"] += time.perf_counter() - t
                _put(decoded, frame, stop)
                if frame is _END:
                    return
        finally:
            _put(decoded, _END, stop)

    def encode() -> None:
        while True:
            try:
                frame = translated.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if frame is _END:
                return
            t = time.perf_counter()
            sink.write(frame)
            times.busy["encode"] += time.perf_counter() - t
            times.frames += 1
            if on_frames:
                on_frames(1)

    decoder, encoder = _Worker("decode", decode), _Worker("encode", encode)
    start = time.perf_counter()
    decoder.start()
    encoder.start()
    try:
        for batch in batches(_drain(decoded, decoder), batch_size):
            for frame in _translate(batch, backend, batch_size, times):
                _put(translated, frame, stop, watch=encoder)
        _put(translated, _END, stop, watch=encoder)
        encoder.join()
        if encoder.error:
            raise encoder.error
        sink.close()
    except BaseException:
        stop.set()
        encoder.join(timeout=10)
        sink.abort()
        raise
    finally:
        stop.set()
        decoder.join(timeout=10)
        times.wall = time.perf_counter() - start
    return times


def _translate(batch: list[Frame], backend: Backend, max_batch: int, times: StageTimes) -> list[Frame]:
    t0 = time.perf_counter()
    x = to_batch(batch, backend.device)
    backend.prepare(max_batch, x.shape[-2], x.shape[-1])  # cached after the first batch of a size
    t1 = time.perf_counter()
    y = backend.infer(x)
    if y.device.type == "cuda":
        torch.cuda.current_stream(y.device).synchronize()
    t2 = time.perf_counter()
    out = to_frames(y, batch)
    t3 = time.perf_counter()
    times.busy["preprocess"] += t1 - t0
    times.busy["infer"] += t2 - t1
    times.busy["postprocess"] += t3 - t2
    return out


def _drain(q: queue.Queue, producer: _Worker) -> Iterator[Frame]:
    while (item := q.get()) is not _END:
        yield item
    producer.join()
    if producer.error:
        raise producer.error


def _put(q: queue.Queue, item, stop: threading.Event, watch: _Worker | None = None) -> None:
    """Put without blocking forever: give up when the pipeline stops, or raise if the consumer died."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                return
            if watch is not None and not watch.is_alive():
                raise watch.error or RuntimeError(f"{watch.name} stopped")
