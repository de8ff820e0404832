"""Optical flow on the CPU, without weights: OpenCV's DIS flow, warping, occlusion masks, scene cuts.

What the flicker metric (:mod:`gtacity.engine.measure.flicker`) and the temporal remedies
(:mod:`gtacity.engine.temporal.remedies`) share. Flow is always computed on the *input* frames (the
translation is what we judge, so it must not steer the motion estimate), on grey levels.

Conventions: a flow field is ``(H, W, 2)`` float32 in pixels, ``flow[y, x] = (dx, dy)``, and maps a
pixel of the frame it was computed *from* to where it is in the other frame. :func:`warp` samples the
other frame there, so ``warp(next_frame, flow(frame -> next_frame))`` looks like ``frame``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# DIS presets by name: "medium" for measuring (about 0.3 s per 1024x512 pair on one core), "fast"
# for the remedy, which works on small thumbnails anyway.
PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Bins per colour channel of the cut detector's histograms.
HIST_BINS = 16
# Sundaram et al. / Ruder et al. forward-backward test: |fw + bw|^2 < A (|fw|^2 + |bw|^2) + B.
_FB_RELATIVE, _FB_ABSOLUTE = 0.01, 0.5


def grey(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 luma, what DIS works on."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class FlowPair:
    """Forward and backward DIS flow between two grey frames, and which pixels to trust.

    One DIS instance per object: OpenCV's DIS keeps scratch buffers, so it is not shared between
    threads.

    Args:
        preset: a key of :data:`PRESETS`.
    """

    def __init__(self, preset: str = "medium"):
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])

    def __call__(self, frame: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flow ``frame -> other`` and the mask of pixels of ``frame`` it maps reliably.

        Args:
            frame, other: ``(H, W)`` uint8 grey frames of one size.

        Returns:
            ``(flow, reliable)``: ``(H, W, 2)`` float32 and ``(H, W)`` bool. A pixel is reliable when
            the backward flow brings it back where it started (it is not occluded in ``other``) and
            its target lies inside the frame.
        """
        forward = self._dis.calc(frame, other, None)
        backward = self._dis.calc(other, frame, None)
        return forward, consistent(forward, backward)


def sampling_grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The absolute ``(map_x, map_y)`` float32 coordinates ``x + flow`` that cv2.remap takes."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at ``x + flow(x)`` (bilinear; outside the frame repeats the border)."""
    map_x, map_y = sampling_grid(flow)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: forward-backward consistent pixels whose target is inside the frame.

    ``backward`` (other -> frame) is sampled where ``forward`` lands; for a visible pixel the two
    cancel. The tolerance grows with the motion, as in Ruder et al. (2016), the test Lai et al.
    (2018) use for their occlusion masks.
    """
    h, w = forward.shape[:2]
    map_x, map_y = sampling_grid(forward)
    back = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gap = np.square(forward + back).sum(-1)
    scale = np.square(forward).sum(-1) + np.square(back).sum(-1)
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return (gap < _FB_RELATIVE * scale + _FB_ABSOLUTE) & inside


def colour_histograms(x: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] -> ``(N, 3 * HIST_BINS)`` per-channel histograms, each summing to 1.

    Computed on a 32x32 thumbnail with ``scatter_add`` (no host synchronisation, so it can run on a
    CUDA stream inside a backend call).
    """
    n = x.shape[0]
    thumb = F.adaptive_avg_pool2d(x.float(), (32, 32)).flatten(2)  # (N, 3, 1024)
    bins = ((thumb + 1) * (HIST_BINS / 2)).long().clamp_(0, HIST_BINS - 1)
    hist = torch.zeros(n, 3, HIST_BINS, device=x.device)
    hist.scatter_add_(2, bins, torch.full_like(thumb, 1.0 / thumb.shape[-1]))
    return hist.flatten(1)


def thumbnail_histograms(thumb: np.ndarray) -> np.ndarray:
    """The histograms of :func:`colour_histograms` (up to rounding at bin edges) for one ``(H, W, 3)`` uint8 RGB image, in numpy:
    ``(3 * HIST_BINS,)``. For the CPU side of the pipeline, where torch's thread pool would compete
    with inference for every tiny call."""
    small = cv2.resize(thumb, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
    bins = np.clip(((small + 1) * (HIST_BINS / 2)).astype(np.int64), 0, HIST_BINS - 1)  # (32, 32, 3)
    counts = [np.bincount(bins[..., c].ravel(), minlength=HIST_BINS) for c in range(3)]
    return (np.concatenate(counts) / (32 * 32)).astype(np.float32)


def histogram_distance(a, b):
    """Total-variation distance of histogram rows (torch or numpy), averaged over channels: 0..1."""
    return abs(a - b).sum(-1) / 6
