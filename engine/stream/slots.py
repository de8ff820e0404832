"""Batches in flight: a fixed pool of slots, each one batch's stream, staging buffers and events.

The pipeline takes a free slot for every batch and gives it back once the batch's frames are on the
host, so ``streams`` slots bound how many batches exist at once (and so the memory they hold), and
a batch waits for a slot rather than piling up. On CUDA each slot owns

- a CUDA stream: its upload, normalisation, inference, post-processing and download run there in
  order, while other slots' batches run on theirs (copies overlap compute);
- pinned host buffers for the upload and the download (the only way a host<->device copy runs
  asynchronously), reused batch after batch and re-made only when the frame size changes;
- CUDA events: ``done`` says the download finished (the host waits for it, nothing else), and
  timing events give the GPU time of each stage for :class:`~gtacity.engine.stream.pipeline.StageTimes`.

On the CPU a slot has no stream (:meth:`Slot.on_stream` is a no-op context), no buffers and no
events, and the same bookkeeping bounds memory and keeps the order.
"""

from __future__ import annotations

import contextlib
import queue
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gtacity.engine.frames import Frame

# stage -> the timing events (recorded on a slot's stream) around its GPU work.
_SPANS = {"preprocess": ("upload", "uploaded"), "infer": ("infer", "inferred"),
          "postprocess": ("download", "downloaded")}


@dataclass(eq=False)
class Slot:
    """One batch on its way through preprocess -> infer -> postprocess.

    Attributes:
        device: where the batch is translated.
        stream: this slot's CUDA stream; None on the CPU.
        frames: the batch's frames (input pixels until postprocess, then the translations).
        x: the batch as the backend takes it, ``(N, 3, Hp, Wp)`` on ``device``.
        y: the backend's output for ``x``.
        host_seconds: stage -> host seconds spent on this batch (added to the run's totals).
    """

    device: torch.device
    stream: Any = None
    frames: list[Frame] = field(default_factory=list)
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    host_seconds: dict[str, float] = field(default_factory=dict)
    _upload: torch.Tensor | None = None
    _download: torch.Tensor | None = None
    _events: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.stream is not None

    def on_stream(self) -> contextlib.AbstractContextManager:
        """``with slot.on_stream():`` makes this slot's stream current (a no-op on the CPU)."""
        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    def staging(self, max_batch: int, frame_shape: tuple[int, ...]) -> tuple[torch.Tensor | None, ...]:
        """(upload, download) pinned ``(max_batch, *frame_shape)`` uint8 buffers (a frame's pixel
        array: ``(H, W, 3)`` RGB or ``(H*3/2, W)`` planes); (None, None) on the CPU. Kept while the
        shape stays; a new shape (or a larger batch) makes new ones."""
        if not self.cuda:
            return None, None
        shape = (max_batch, *frame_shape)
        if self._upload is None or self._upload.shape != shape:
            self._upload = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._download = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        return self._upload, self._download

    def mark(self, name: str) -> None:
        """Record the timing event ``name`` on this slot's stream (nothing on the CPU)."""
        if self.cuda:
            event = self._events.get(name)
            if event is None:
                event = self._events[name] = torch.cuda.Event(enable_timing=True)
            event.record(self.stream)

    def wait(self) -> dict[str, float]:
        """Block until everything queued on the stream is done; returns its GPU seconds per stage
        (preprocess, infer, postprocess), empty on the CPU."""
        if not self.cuda:
            return {}
        self._events["downloaded"].synchronize()
        return {
            stage: self._events[start].elapsed_time(self._events[end]) / 1000
            for stage, (start, end) in _SPANS.items()
        }

    def clear(self) -> None:
        """Drop the batch (its tensors go back to the allocator; the staging buffers stay)."""
        self.frames, self.x, self.y, self.host_seconds = [], None, None, {}


def upload(arrays: list[np.ndarray], device: torch.device, host: torch.Tensor | None) -> torch.Tensor:
    """Equal uint8 arrays -> one ``(N, ...)`` tensor on ``device``.

    Args:
        host: a pinned buffer of at least ``N`` arrays to stack them into; the upload from it is
            asynchronous on the current CUDA stream, so it must not be written again until that
            stream has passed this point. None: a fresh buffer (pinned on the way to CUDA).
    """
    if host is None:
        data = torch.from_numpy(np.stack(arrays))
        if device.type == "cuda":
            data = data.pin_memory()
    else:
        data = host[: len(arrays)]
        np.stack(arrays, out=data.numpy())
    return data.to(device, non_blocking=True) if device.type == "cuda" else data


def download(data: torch.Tensor, host: torch.Tensor | None) -> torch.Tensor:
    """``data`` on the host: queued into the pinned ``host`` buffer on the current stream (valid
    once that stream has passed this point, until the buffer is reused), or, for None, a
    synchronous copy (no copy for CPU data)."""
    if host is None:
        return data.cpu()
    return host[: len(data)].copy_(data, non_blocking=True)


class SlotPool:
    """``n`` slots for ``device``; :meth:`take` blocks while all are in flight.

    Args:
        n: batches in flight at most (at least 1).
        device: a CUDA device gives every slot its own stream; the CPU gives none.
    """

    def __init__(self, n: int, device: torch.device):
        if n < 1:
            raise ValueError(f"streams (batches in flight) must be at least 1, got {n}")
        self.size = n
        self._free: queue.Queue[Slot] = queue.Queue()
        for _ in range(n):
            stream = torch.cuda.Stream(device) if device.type == "cuda" else None
            self._free.put(Slot(device, stream))

    def take(self, timeout: float | None = None) -> Slot:
        """A free slot, waiting up to ``timeout`` seconds (``queue.Empty`` after that)."""
        return self._free.get(timeout=timeout)

    def give_back(self, slot: Slot) -> None:
        """Return ``slot`` once its frames are on the host and copied out of its buffers."""
        slot.clear()
        self._free.put(slot)
