"""What the kernel tests share: the CPU path's colour conversion (engine/colour.py, i.e. swscale),
error statistics in 8-bit levels, and frames to convert (synthetic always, real when present).

Tests import it as ``from kernel_cases import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from media import patches

from gtacity.engine.media.colour import VideoColour
from gtacity.images import decode_rgb


def _real_data() -> Path:
    """``$GTACITY_REAL_DATA``, else ``shared/data/real`` beside the checkout or one level up (a
    worktree); never copied into the repository."""
    if "GTACITY_REAL_DATA" in os.environ:
        return Path(os.environ["GTACITY_REAL_DATA"])
    root = Path(__file__).resolve().parents[1]
    candidates = [parent / "shared" / "data" / "real" for parent in root.parents[:2]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


REAL_DATA = _real_data()
# One frame of each real kind: GTA5 (960x540 class) and Cityscapes (2048x1024).
REAL_FRAMES = (
    "gta5",
    "cityscapes/leftImg8bit",
)
# The AVColorSpace tags of the two matrices, and the kernels' names for them.
MATRIX_TAGS = {"bt601": 6, "bt709": 1}


def colour(matrix: str, full_range: bool, width: int, height: int) -> VideoColour:
    """The engine's colour for a stream tagged with ``matrix`` and range."""
    return VideoColour.from_tags(
        matrix=MATRIX_TAGS[matrix],
        range=2 if full_range else 1,
        primaries=2,
        transfer=2,
        width=width,
        height=height,
    )


def cpu_encode(rgb: np.ndarray, matrix: str, full_range: bool) -> np.ndarray:
    """``(H, W, 3)`` RGB -> yuv420p ``(H * 3 // 2, W)`` the way the video sink converts it."""
    h, w = rgb.shape[:2]
    frame = colour(matrix, full_range, w, h).from_rgb(rgb, "yuv420p", VideoReformatter())
    return frame.to_ndarray()


def cpu_decode(yuv: np.ndarray, matrix: str, full_range: bool, pix_fmt: str = "yuv420p"):
    """yuv420p / nv12 ``(H * 3 // 2, W)`` -> ``(H, W, 3)`` RGB as the video source converts it."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv), format=pix_fmt)
    return colour(matrix, full_range, frame.width, frame.height).to_rgb(frame, VideoReformatter())


def to_nv12(yuv: np.ndarray) -> np.ndarray:
    """yuv420p ``(H * 3 // 2, W)`` -> NV12 ``(H * 3 // 2, W)`` (U and V interleaved)."""
    rows, w = yuv.shape
    h = rows * 2 // 3
    u = yuv[h : h + h // 4].reshape(h // 2, w // 2)
    v = yuv[h + h // 4 :].reshape(h // 2, w // 2)
    return np.concatenate([yuv[:h], np.stack([u, v], -1).reshape(h // 2, w)])


def level_errors(got: np.ndarray, want: np.ndarray) -> tuple[int, float]:
    """Max and mean absolute difference in 8-bit levels."""
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    return int(diff.max()), float(diff.mean())


def synthetic_frames(width: int, height: int) -> dict[str, np.ndarray]:
    """Frames that stress the conversion: flat saturated patches, uniform noise (every chroma
    sample differs from its neighbours), and a full-range ramp (clipping at both ends)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    ramp[..., 1] = ramp[..., 1][:, ::-1]
    return {
        "patches": patches(width, height),
        "noise": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "ramp": ramp.round().astype(np.uint8),
    }


def real_frames(crop: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The first frame of each :data:`REAL_FRAMES` folder (empty when the data is absent),
    centre-cropped to ``crop`` (height, width) when given; sides are made even for 4:2:0."""
    found = {}
    for folder in REAL_FRAMES:
        files = sorted(p for p in (REAL_DATA / folder).rglob("*.png"))
        if not files:
            continue
        rgb = decode_rgb(files[0])
        h, w = rgb.shape[:2]
        if crop is not None:
            top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
            rgb = rgb[top : top + crop[0], left : left + crop[1]]
        found[folder] = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
    return found
