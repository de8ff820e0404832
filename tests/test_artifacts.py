"""The checkerboard check: high for a generator built to draw one, about 1 for the identity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from kernel_cases import REAL_DATA
from torch import nn

from gtacity.artifacts import ArtifactSummary, artifact_score, peak_prominence
from gtacity.images import decode_rgb


def natural_frame(h: int = 120, w: int = 200, seed: int = 0) -> np.ndarray:
    """Smooth shapes and gradients with a little noise: a spectrum without period-2/4 peaks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + 80 * xx / w, 90 + 60 * yy / h, 140 + 40 * np.sin(xx / 17.0)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 30)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


class Checkerboard(nn.Module):
    """Down by 2 twice, then up by 2 twice with stride-2 3x3 transposed convolutions of box kernels:
    the uneven overlap Odena et al. describe, so every output carries a period-2 and period-4 grid."""

    def __init__(self):
        super().__init__()
        self.ups = nn.ModuleList(nn.ConvTranspose2d(3, 3, 3, stride=2, padding=1, output_padding=1, groups=3,
                                                    bias=False) for _ in range(2))
        for up in self.ups:
            nn.init.constant_(up.weight, 1.0)

    def forward(self, x):
        x = nn.functional.avg_pool2d(x, 4)
        for up in self.ups:
            x = up(x) / 2.25  # 2.25 taps on average: keeps the brightness
        return x


def run(net: nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y = net(x)
    return y[0].permute(1, 2, 0).clamp(0, 255).round().byte().numpy()


def test_identity_scores_one_and_natural_frames_have_no_peaks():
    frame = natural_frame()
    assert artifact_score(frame, frame).score == pytest.approx(1.0)
    assert peak_prominence(frame) < 3


def test_a_checkerboard_generator_scores_high():
    frame = natural_frame()
    out = run(Checkerboard(), frame)
    assert out.shape == frame.shape
    score = artifact_score(frame, out)
    assert score.score > 10 and score.output_peaks > 10


def test_smooth_upsampling_scores_low():
    frame = natural_frame()
    smooth = nn.Sequential(nn.AvgPool2d(4), nn.Upsample(scale_factor=4, mode="bilinear"))
    assert artifact_score(frame, run(smooth, frame)).score < 2


def test_a_faint_grid_on_a_real_frame_is_caught():
    path = REAL_DATA / "gta5" / "epe_00373.png"
    if not path.is_file():
        pytest.skip("no real frames (shared/data/real)")
    frame = decode_rgb(path)
    grid = np.zeros(frame.shape[:2])
    grid[::2, ::2] = 2.0  # +2 levels on every other pixel of every other row: barely visible
    out = np.clip(frame + grid[..., None], 0, 255).astype(np.uint8)
    assert artifact_score(frame, out).score > 3
    assert artifact_score(frame, frame).score == pytest.approx(1.0)


def test_summary_names_the_worst_frame_and_skips_tiny_ones():
    frame = natural_frame()
    scores = [artifact_score(frame, frame), artifact_score(frame, run(Checkerboard(), frame)),
              artifact_score(frame[:8, :8], frame[:8, :8])]
    summary = ArtifactSummary.of(scores)
    assert summary.frames == 2 and summary.worst_frame == 1 and summary.worst > 10
    assert "worst frame" in summary.line()
    assert ArtifactSummary.of([scores[2]]) is None


def test_the_torch_bin_prominence_is_the_checks_measure_bin_by_bin():
    from gtacity.artifacts import bin_prominence

    rng = np.random.default_rng(3)
    for h, w in ((64, 96), (131, 250)):
        image = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3)).astype(np.uint8), (0, 0), 2)
        image[::4, ::4] = 255  # and a grid
        ratios = bin_prominence(torch.from_numpy(image).permute(2, 0, 1)[None].double())
        assert ratios.shape == (1, 15)
        assert ratios.mean().item() == pytest.approx(peak_prominence(image), rel=1e-4)
