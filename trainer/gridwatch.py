"""Training's checkerboard watch: how much grid the generators add to whole frames, at every sample step.

A generator can learn a period-2/4 grid while it trains, even one whose decoder resizes instead of
using transposed convolutions (README, "Training"), and the grid comes and goes over a run. It shows
far more on whole frames than on training crops: a run scored 4.3x on whole frames where 128 px
crops of the same frames gave 1.7x. So at every sample step ``train`` translates the first
:data:`WATCH_FRAMES` readable training frames of each domain whole, scaled to the run's load size
(the size training crops them from), at most :data:`MAX_WIDTH` px wide, and scores each translation
against its input with :func:`gtacity.artifacts.artifact_score`: about 1 means no grid was added,
over :data:`VISIBLE` a grid shows. These are training frames (a run has no held-out ones): a score
here is a warning, not the held-out check of ``gtacity eval realism --inputs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from gtacity.artifacts import artifact_score
from gtacity.images import decode_rgb
from gtacity.nets import SIZE_MULTIPLE
from gtacity.trainer.data import Preprocess, to_tensor

WATCH_FRAMES = 2
MAX_WIDTH = 1024
VISIBLE = 2.0


def watch_frames(files: Sequence[Path], preprocess: Preprocess, count: int = WATCH_FRAMES) -> list[np.ndarray]:
    """The first ``count`` readable ``files`` as whole ``(H, W, 3)`` uint8 RGB frames.

    Scaled as training scales them before it crops (to ``load_size`` wide, keeping the aspect; a
    ``resize_and_crop`` run's square resize is not copied, since stretching moves the spectrum's
    peaks off the grid's bins), then to at most :data:`MAX_WIDTH` wide; sides cut to a multiple of 4.
    ``crop`` and ``none`` runs see frames at their own size.
    """
    frames = []
    for path in files:
        image = decode_rgb(path)
        if image is None:
            continue
        h, w = image.shape[:2]
        width = w if preprocess.mode in ("crop", "none") else preprocess.load_size
        width = min(width, MAX_WIDTH)
        if width != w:
            interpolation = cv2.INTER_AREA if width < w else cv2.INTER_CUBIC
            image = cv2.resize(image, (width, max(SIZE_MULTIPLE, round(h * width / w))), interpolation=interpolation)
        h, w = image.shape[:2]
        frames.append(np.ascontiguousarray(image[: h - h % SIZE_MULTIPLE, : w - w % SIZE_MULTIPLE]))
        if len(frames) == count:
            break
    return frames


@torch.no_grad()
def grid_score(generator: nn.Module, frames: Sequence[np.ndarray], precision, device: torch.device) -> float | None:
    """Mean artifact score of ``generator``'s translations of ``frames`` (None: nothing scorable).

    One frame at a time (a whole frame can be large), under the run's autocast; the generator's
    train/eval mode is left as it was (it has no dropout, and instance norm keeps no statistics).
    """
    scores = []
    for image in frames:
        with precision.autocast():
            out = generator(to_tensor(image)[None].to(device))
        out = out[0].float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        scores.append(artifact_score(image, out).score)
    finite = [s for s in scores if math.isfinite(s)]
    return float(np.mean(finite)) if finite else None


def warning(step: int, direction: str, score: float, frames: int) -> str:
    """The line ``train`` prints when a direction's outputs carry a visible grid."""
    return (f"step {step}: {direction}'s translations of {frames} whole training frame(s) have {score:.1f}x "
            f"their inputs' period-2/4 spectral peaks (over {VISIBLE:g} shows as a grid; README, 'Training')")
