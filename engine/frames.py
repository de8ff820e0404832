"""What travels between the engine's stages: frames, and the source/sink protocols.

A frame's pixels are ``(H, W, 3)`` uint8 RGB in a numpy array (uint16 for a 16-bit image, so
its depth survives); batches stack them to ``(N, H, W, 3)``. A video frame on its way to and from a
GPU may instead carry the codec's own 4:2:0 :class:`Planes`, whose colour is converted on the device
(see :mod:`gtacity.engine.media.planes`). An image's alpha plane rides beside the pixels, untouched by
the generator, and the sink puts it back. Whatever a sink needs to put a translated frame back
where its input came from (a video timestamp, an image's relative path) rides along in
``Frame.meta`` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from gtacity.errors import GtacityError


@dataclass(frozen=True)
class Planes:
    """A video frame's 4:2:0 planes as the decoder gives them or the encoder takes them.

    Carried instead of RGB so that the colour conversion runs fused into the generator's layout on
    the GPU (:mod:`gtacity.kernels.yuv`) and swscale never runs on the CPU; the copies each way
    also shrink from 3 bytes a pixel to 1.5.

    Attributes:
        data: ``(H * 3 // 2, W)`` uint8 in PyAV's layout (``VideoFrame.to_ndarray``): ``H`` luma
            rows, then yuv420p's U and V planes (two ``W/2``-sample rows to a row) or NV12's
            interleaved U/V rows. Both sides are even.
        pix_fmt: ``"yuv420p"`` or ``"nv12"``.
        matrix: the video's YUV <-> RGB matrix, a :data:`gtacity.kernels.MATRICES` name.
        full_range: YUV uses 0-255 rather than 16-235/240.
        chroma_left: chroma samples sit on the even columns (H.264's default siting) rather than
            centred between two; the encoder gets them centred, as swscale writes them.
    """

    data: np.ndarray
    pix_fmt: str
    matrix: str
    full_range: bool
    chroma_left: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        rows, width = self.data.shape
        return rows * 2 // 3, width


@dataclass(frozen=True)
class Frame:
    """One image on its way through the pipeline.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, or uint16 for 16-bit images; None when ``planes`` carry
            the pixels.
        index: position in the source, from 0; output order follows it.
        meta: source-specific and opaque to the pipeline (video: pts and time base; image folders:
            the relative path). Sinks read it; nothing else does.
        alpha: ``(H, W)`` transparency of the same dtype as ``image``, or None; carried, never
            translated.
        planes: a video frame's YUV planes instead of ``image`` (only where a source was asked
            for them), or None.
    """

    image: np.ndarray | None
    index: int
    meta: Any = None
    alpha: np.ndarray | None = None
    planes: Planes | None = None

    @property
    def pixels(self) -> np.ndarray:
        """The array the pixels are in: ``image``, or the planes' ``data``."""
        return self.image if self.planes is None else self.planes.data

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels, whichever form they take."""
        return self.image.shape[:2] if self.planes is None else self.planes.size

    @property
    def form(self) -> str:
        """What the pixels are: the RGB depth (``"uint8"``, ``"uint16"``) or the planes' format;
        frames batched together share it."""
        return str(self.image.dtype) if self.planes is None else self.planes.pix_fmt

    def with_image(self, image: np.ndarray) -> "Frame":
        """The same frame (index, meta, alpha) carrying translated RGB pixels."""
        return replace(self, image=image, planes=None)

    def with_planes(self, planes: Planes) -> "Frame":
        """The same frame (index, meta) carrying translated planes."""
        return replace(self, image=None, planes=planes)

    def with_pixels(self, pixels: np.ndarray) -> "Frame":
        """The same frame in the same form, its pixel array replaced (e.g. by a copy)."""
        if self.planes is None:
            return replace(self, image=pixels)
        return replace(self, planes=replace(self.planes, data=pixels))


class FrameSource(Protocol):
    """Frames in input order. ``len()`` is the expected frame count for progress (may be an estimate
    for video); iteration yields :class:`Frame` objects and stops at the end."""

    kind: str  # "video" | "images" | "image"
    path: Path

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Takes translated frames in input order. ``close()`` finishes the output and only then makes it
    appear under its final name; ``abort()`` removes everything partial."""

    path: Path

    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class SourceContext:
    """``with source:`` closes the source however the block ends."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SinkError(GtacityError):
    """An output that cannot or must not be written; the message names the file and what to do."""


class SinkContext:
    """``with sink:`` finishes the output when the block succeeds and aborts it when it raises,
    so an exception never leaves a finished-looking file behind."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
