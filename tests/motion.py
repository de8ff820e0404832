"""Clips with known motion for the flicker tests: textures optical flow can follow, pans, blinks.

Tests import it as ``from motion import pan`` (pytest puts ``tests/`` on the path). Every maker
returns the RGB frames it made, ``(H, W, 3)`` uint8.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np


def texture(width: int, height: int, seed: int = 0, blur: float = 2.0) -> np.ndarray:
    """Smooth colour noise: detail at every place, so DIS flow locks on everywhere."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    lo, hi = np.percentile(smooth, (1, 99))
    return np.clip((smooth - lo) * (200 / (hi - lo)) + 28, 0, 255).astype(np.uint8)


def pan(width: int, height: int, frames: int, step: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """A camera panning over a still texture by ``step = (dx, dy)`` pixels per frame."""
    dx, dy = step
    big = texture(width + abs(dx) * frames, height + abs(dy) * frames, seed)
    x0 = 0 if dx >= 0 else abs(dx) * frames
    y0 = 0 if dy >= 0 else abs(dy) * frames
    return [big[y0 + i * dy : y0 + i * dy + height, x0 + i * dx : x0 + i * dx + width].copy() for i in range(frames)]


def blinking(frames: list[np.ndarray], side: int, seed: int = 0) -> list[np.ndarray]:
    """``frames`` with a corner square of a new random flat colour in every frame (a blinking sign):
    a change in a small part of the picture that moves every frame's colour statistics."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        frame = frame.copy()
        frame[:side, :side] = rng.integers(0, 256, 3)
        out.append(frame)
    return out


def write_frames(folder: str | Path, frames: Sequence[np.ndarray]) -> Path:
    """An image folder of lossless PNGs ``00000.png ...`` (what an image-folder source reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


def write_video(
    path: str | Path, frames: Sequence[np.ndarray], fps: int = 25, pts: Sequence[int] | None = None
) -> Path:
    """An H.264 (crf 8, 4:4:4) video of ``frames``; ``pts`` in 1/fps units (default 0, 1, 2 ...)."""
    height, width = frames[0].shape[:2]
    stamps = list(range(len(frames))) if pts is None else list(pts)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "8", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, fps)
        for frame, stamp in zip(frames, stamps, strict=True):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv444p")
            picture.pts, picture.time_base = stamp, Fraction(1, fps)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return Path(path)
