"""What travels between the engine's stages: frames, and the source/sink protocols.

A frame's pixels are ``(H, W, 3)`` uint8 RGB in a numpy array (uint16 for a 16-bit image, so
its depth survives); batches stack them to ``(N, H, W, 3)``. An image's alpha plane rides beside
the pixels, untouched by the generator, and the sink puts it back. Whatever a sink needs to put a translated frame back where its input came from
(a video timestamp, an image's relative path) rides along in ``Frame.meta`` untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One image on its way through the pipeline.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, or uint16 for 16-bit images.
        index: position in the source, from 0; output order follows it.
        meta: source-specific and opaque to the pipeline (video: pts and time base; image folders:
            the relative path). Sinks read it; nothing else does.
        alpha: ``(H, W)`` transparency of the same dtype as ``image``, or None; carried, never
            translated.
    """

    image: np.ndarray
    index: int
    meta: Any = None
    alpha: np.ndarray | None = None

    def with_image(self, image: np.ndarray) -> "Frame":
        """The same frame (index, meta, alpha) carrying translated pixels."""
        return replace(self, image=image)


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
