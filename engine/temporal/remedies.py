"""``translate --temporal``: remedies for the flicker of frame-by-frame translation.

Translated one frame at a time, a CycleGAN video flickers (measured by ``gtacity eval flicker``,
:mod:`gtacity.engine.measure.flicker`). Two remedies, each keeping the streaming design (frames in order,
one frame of state, bounded memory):

- ``stats`` (:func:`smooth_norm_stats`): the generator's InstanceNorm layers normalise every frame
  with that frame's own per-channel mean and variance, so a small change in the picture moves the
  colours of all of it. The layers are swapped for ones that use an exponential moving average of
  the statistics over the frames, reset at scene cuts. Torch backend only: the others run a
  converted graph that cannot carry state from one call to the next, and refuse.
- ``flow`` (:class:`FlowBlend`): the previous output is warped along the optical flow of the inputs
  (DIS, on a small grey thumbnail) and blended into the current output where that flow is reliable
  (forward-backward consistent, and the inputs agree there). It wraps the source and the sink, so it
  works with every backend.

Costs and effects, measured on real driving footage: README "Video without flicker" and
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import collections
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gtacity.engine.backends import BACKENDS, Backend, TorchBackend
from gtacity.engine.frames import Frame, FrameSink, FrameSource
from gtacity.engine.temporal.optical_flow import (
    FlowPair,
    colour_histograms,
    histogram_distance,
    thumbnail_histograms,
    warp,
)
from gtacity.errors import GtacityError
from gtacity.nets import InstanceNorm2dFP32

TEMPORAL_MODES = ("off", "stats", "flow")
# Histogram distance (0..1) between consecutive inputs above which a new shot starts. Measured on
# the real frames in ../shared/data/real: consecutive frames of the driving Cityscapes sequence stay
# below 0.07; a cut from it to a GTA5 frame is 0.38-0.81, to another Cityscapes street 0.14-0.43
# (so a cut between two very similar streets can pass unseen; the flow remedy's photometric check
# still keeps their pixels apart).
CUT_THRESHOLD = 0.2
_STATS_REFUSAL = (
    "--temporal stats needs the torch backend (it swaps the generator's InstanceNorm layers for ones "
    "that remember past frames); the {name} backend runs a converted graph that cannot: "
    "pass --backend torch, or use --temporal flow"
)


class TemporalError(GtacityError):
    """A temporal remedy that cannot run as asked."""


def check_mode(mode: str, folder: bool = False) -> None:
    """Raises TemporalError for anything but off, stats or flow, and for a remedy on a folder job
    (whose files are translated independently, several at a time: no frame order to follow)."""
    if mode not in TEMPORAL_MODES:
        raise TemporalError(f"unknown --temporal {mode!r}; choose {', '.join(TEMPORAL_MODES)}")
    if folder and mode != "off":
        raise TemporalError(
            f"--temporal {mode} needs one video (its frames in order); a folder is translated file "
            "by file: run it on each video"
        )


def backend_for(mode: str, backend: str) -> str:
    """The backend to create for ``mode``: ``auto`` means torch for ``stats``, the one that supports it.

    Raises:
        TemporalError: ``stats`` with a backend that cannot carry state (before it is built).
    """
    if mode != "stats":
        return backend
    if backend == "auto":
        return "torch"
    if backend in BACKENDS and not issubclass(BACKENDS[backend], TorchBackend):
        raise TemporalError(_STATS_REFUSAL.format(name=backend))
    return backend


def tile_setting(mode: str, tile: int | None) -> int | None:
    """The ``--tile`` setting to use: ``stats`` never tiles (each tile would feed the average its
    own statistics), so it turns automatic tiling off and refuses an explicit ``--tile N``.

    Raises:
        TemporalError: ``stats`` with ``tile`` above 0.
    """
    if mode != "stats":
        return tile
    if tile:
        raise TemporalError(
            "--temporal stats cannot run on tiles (each tile would feed the average its own "
            "statistics); drop --tile, or use --temporal flow"
        )
    return 0


class _Cuts:
    """Per batch in flight: how much of the past each frame keeps; shared by every smoothed layer.

    ``keep[n]`` is the moving average's momentum, or 0 where frame ``n`` starts a new shot.
    """

    def __init__(self, momentum: float, threshold: float):
        self.momentum, self.threshold = momentum, threshold
        self.keep: torch.Tensor | None = None  # (N,) float
        self._last: torch.Tensor | None = None  # (1, bins) histogram of the previous frame
        self._shape: tuple[int, int] | None = None

    def observe(self, x: torch.Tensor) -> None:
        """Weigh the past for batch ``x`` ``(N, 3, H, W)``; the first frame and a new size are cuts."""
        hist = colour_histograms(x)  # (N, bins)
        if self._last is None or self._shape != tuple(x.shape[-2:]):
            self._last = torch.full_like(hist[:1], float("inf"))
        before = torch.cat([self._last, hist[:-1]])
        cut = histogram_distance(hist, before) > self.threshold
        self.keep = torch.where(cut, 0.0, self.momentum)
        self._last, self._shape = hist[-1:], tuple(x.shape[-2:])

    def forget(self) -> None:
        """The next frame starts a new shot (after a warm-up batch that was no real frame)."""
        self._last = None


class SmoothedInstanceNorm(nn.Module):
    """InstanceNorm (no affine) whose statistics are an exponential moving average over frames.

    For frame ``t`` of the stream, per channel: ``m_t = a * m_{t-1} + (1 - a) * mean_t`` and the same
    for the variance, with ``a`` the momentum, or 0 at a cut (see :class:`_Cuts`); the frame is
    normalised with ``(m_t, v_t)``. Within a batch the average runs in frame order; everything stays
    on the device (no host synchronisation), in fp32 like :class:`~gtacity.nets.InstanceNorm2dFP32`.
    The normalisation itself is one fused ``batch_norm`` call with the averaged statistics.

    Args:
        eps: the replaced layer's epsilon.
        cuts: the shared per-frame weights of the batch in flight.
    """

    def __init__(self, eps: float, cuts: _Cuts):
        super().__init__()
        self.eps, self._cuts = eps, cuts
        self._mean: torch.Tensor | None = None  # (C,) of the previous frame
        self._var: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), correction=0)  # (N, C)
        keep = self._cuts.keep
        if keep is None:  # a warm-up batch (``prepare`` on CUDA, after it cleared the weights): no past
            keep = torch.zeros(n, device=x.device)
        means, variances = [], []
        m, v = self._mean, self._var
        for i in range(n):
            if m is None or m.shape != mean[i].shape:
                m, v = mean[i], var[i]
            else:
                m = torch.lerp(mean[i], m, keep[i])  # keep * m + (1 - keep) * mean
                v = torch.lerp(var[i], v, keep[i])
            means.append(m)
            variances.append(v)
        self._mean, self._var = m, v
        # Frames side by side as channels of one sample: one fused pass for the whole batch.
        y = F.batch_norm(xf.reshape(1, n * c, h, w), torch.cat(means), torch.cat(variances), eps=self.eps)
        return y.reshape(n, c, h, w).to(x.dtype)


class _SmoothedStats:
    """A torch backend whose generator carries InstanceNorm statistics from frame to frame.

    Behaves as the backend it wraps (``name``, ``device``, ``precision``, ``describe``...);
    ``prepare`` forgets the state when the backend ran a warm-up batch of its own. With batches in
    flight on several CUDA streams, each batch waits on the GPU for the stream of the one before:
    the average is a recurrence, so smoothed batches run one after another.
    """

    def __init__(self, backend: TorchBackend, cuts: _Cuts):
        self._backend, self._cuts = backend, cuts
        self._stream = None  # the CUDA stream that last updated the averages

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def prepare(self, max_batch: int, height: int, width: int) -> None:
        builds = self._backend.builds
        self._cuts.keep = None  # a warm-up batch the backend may run is no frame of the stream
        self._backend.prepare(max_batch, height, width)
        if self._backend.builds != builds:
            self._cuts.forget()

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.device.type == "cuda":
            # Batches in flight on several streams: this one reads the averages the previous batch
            # wrote on its own stream, so it waits for that stream on the GPU (the host never waits).
            stream = torch.cuda.current_stream(batch.device)
            if self._stream is not None and self._stream != stream:
                stream.wait_stream(self._stream)
            self._stream = stream
        self._cuts.observe(batch)
        return self._backend.infer(batch)


def smooth_norm_stats(
    backend: Backend, momentum: float = 0.8, cut_threshold: float = CUT_THRESHOLD
) -> Backend:
    """``backend`` with its generator's InstanceNorm statistics averaged over time (``--temporal stats``).

    The torch backend's own copy of the generator gets :class:`SmoothedInstanceNorm` layers in
    place of its :class:`~gtacity.nets.InstanceNorm2dFP32` ones (the caller's net is untouched).
    The result keeps state: one backend per video, frames in order.

    The backend runs eagerly: CUDA graphs are switched off for it (a replayed graph would not carry
    the average along), and a compiled one is refused.

    Args:
        backend: a :class:`TorchBackend`, not yet prepared.
        momentum: weight of the past in the moving average (0.8: about 5 frames of memory).
        cut_threshold: histogram distance of consecutive inputs that resets the average.

    Raises:
        TemporalError: any other backend (it cannot carry state between calls), a compiled torch
            backend, or a generator without InstanceNorm layers.
    """
    if not isinstance(backend, TorchBackend):
        raise TemporalError(_STATS_REFUSAL.format(name=backend.name))
    if getattr(backend.config, "compile", None) is not None:
        raise TemporalError(
            "--temporal stats runs the generator eagerly: its layers keep state between calls, which "
            "a compiled graph would not replay; drop the torch compile option"
        )
    # A captured CUDA graph replays the kernels, not the Python that carries the average from one
    # call to the next (and it pads short batches with frames that would enter the average): eager.
    if getattr(backend, "cuda_graphs", False):
        backend.cuda_graphs = False
    cuts = _Cuts(momentum, cut_threshold)
    swapped = 0
    for module in list(backend.net.modules()):
        for name, child in module.named_children():
            if isinstance(child, InstanceNorm2dFP32):
                setattr(module, name, SmoothedInstanceNorm(child.eps, cuts))
                swapped += 1
    if not swapped:
        raise TemporalError("--temporal stats: this generator has no InstanceNorm layers to smooth")
    return _SmoothedStats(backend, cuts)  # type: ignore[return-value]


class FlowBlend:
    """``--temporal flow``: blend the previous output, warped along the inputs' flow, into the current.

    For output frame ``t`` (``O_t``, what the generator made) and the previous *blended* frame
    ``B_{t-1}``::

        B_t = O_t + strength * w_t * (warp(B_{t-1}, flow_{t -> t-1}) - O_t)

    with the flow computed by DIS between small grey thumbnails of input frames ``t`` and ``t-1``
    (longest side ``thumb_side``), scaled up to the frame, and the weight ``w_t`` in [0, 1]: zero
    where the flow fails the forward-backward test (occlusions, the frame border) and fading out
    where the warped previous input differs from the current one by more than ``tolerance`` grey
    levels (lighting changes, flow errors). A scene cut (see :data:`CUT_THRESHOLD`) or a new frame
    size starts afresh with ``B_t = O_t``.

    The state is one blended frame plus one thumbnail. :meth:`watch` wraps the source (to keep a
    thumbnail of each input as it is decoded) and :meth:`wrap` the sink (to blend each translated
    frame as it is written); the pipeline's queues bound how many thumbnails wait in between.
    Blending runs on the encoding thread, alongside inference.

    Args:
        strength: weight of the past where the flow is fully reliable (0: no change).
        thumb_side: longest side of the thumbnails the flow is computed on.
        tolerance: grey-level difference of the inputs at which the weight has fallen to 1/e.
        cut_threshold: histogram distance of consecutive inputs that starts a new shot.
    """

    def __init__(
        self,
        strength: float = 0.7,
        thumb_side: int = 320,
        tolerance: float = 10.0,
        cut_threshold: float = CUT_THRESHOLD,
    ):
        self.strength, self.thumb_side, self.tolerance = strength, thumb_side, tolerance
        self.cut_threshold = cut_threshold
        # (index, grey thumbnail, histogram) of inputs decoded and not yet written; deque's append
        # and popleft are thread-safe (decode thread in, encode thread out).
        self._pending: collections.deque = collections.deque()
        self._flow = FlowPair("medium")
        self._previous: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def watch(self, source: FrameSource) -> FrameSource:
        """``source`` as it is, keeping a thumbnail of each frame for :meth:`blend`."""
        return _Watched(source, self)

    def wrap(self, sink: FrameSink) -> FrameSink:
        """``sink`` writing blended frames instead of the translated ones it is given."""
        return _Blending(sink, self)

    def remember(self, frame: Frame) -> None:
        """Keep what :meth:`blend` needs of input ``frame``: its grey thumbnail and histogram."""
        h, w = frame.image.shape[:2]
        scale = min(1.0, self.thumb_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        thumb = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)  # (h, w, 3)
        self._pending.append((frame.index, cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY), thumbnail_histograms(thumb)))

    def blend(self, frame: Frame) -> Frame:
        """Translated ``frame`` blended with the past; frames must come in input order."""
        index, thumb, hist = self._pending.popleft()
        if index != frame.index:
            raise RuntimeError(f"--temporal flow got frame {frame.index} where frame {index} was due")
        out = frame.image.astype(np.float32)  # (H, W, 3)
        if self._continues(thumb, hist, out):
            out = self._blend(thumb, out)
        self._previous = (thumb, hist, out)
        return frame.with_image(np.clip(np.rint(out), 0, 255).astype(np.uint8))

    def _continues(self, thumb: np.ndarray, hist: np.ndarray, out: np.ndarray) -> bool:
        if self._previous is None:
            return False
        last_thumb, last_hist, last_out = self._previous
        if last_out.shape != out.shape or last_thumb.shape != thumb.shape:
            return False
        return float(histogram_distance(hist, last_hist)) <= self.cut_threshold

    def _blend(self, thumb: np.ndarray, out: np.ndarray) -> np.ndarray:
        last_thumb, _, last_out = self._previous
        flow, reliable = self._flow(thumb, last_thumb)  # thumbnail t -> t-1
        mismatch = np.abs(thumb.astype(np.float32) - warp(last_thumb, flow).astype(np.float32))
        weight = reliable * np.exp(-np.square(mismatch / self.tolerance)) * self.strength
        h, w = out.shape[:2]
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow *= np.array([w / thumb.shape[1], h / thumb.shape[0]], np.float32)
        weight = cv2.resize(weight.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        return out + weight[..., None] * (warp(last_out, flow) - out)


class _Watched:
    """A source that shows each frame to a :class:`FlowBlend` on its way into the pipeline."""

    def __init__(self, source: FrameSource, blend: FlowBlend):
        self._source, self._blend = source, blend

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def __len__(self) -> int:
        return len(self._source)

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._source:
            self._blend.remember(frame)
            yield frame


class _Blending:
    """A sink that writes each translated frame after :meth:`FlowBlend.blend`."""

    def __init__(self, sink: FrameSink, blend: FlowBlend):
        self._sink, self._blend = sink, blend
        self.path = sink.path

    def __getattr__(self, name: str):
        return getattr(self._sink, name)

    def write(self, frame: Frame) -> None:
        self._sink.write(self._blend.blend(frame))

    def close(self) -> None:
        self._sink.close()

    def abort(self) -> None:
        self._sink.abort()
