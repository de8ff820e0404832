"""The checkerboard check: how much a translation strengthens the period-2 and period-4 frequencies.

A generator that upsamples with stride-2 transposed convolutions gives its output pixels unequal
numbers of kernel taps (Odena, Dumoulin and Olah, "Deconvolution and Checkerboard Artifacts",
Distill 2016), so a faint grid repeats every 2 pixels after the last upsampling and every 4 after
the two of a CycleGAN generator. In the spectrum such a grid is a set of sharp peaks at the
frequencies ``(a/4, b/4)`` cycles per pixel, ``a, b`` in 0..3, (0, 0) left out.

:func:`peak_prominence` measures, on an image's power spectrum (the three channels' spectra summed,
a Hann window against the frame's edges), how many times stronger each of those 15 bins is than
the median of the spectrum around it, and averages them. Natural frames have some of it too (JPEG's
8x8 blocks put energy at multiples of 1/8, and edges along the axes), so a translation is judged
against its own input: :func:`artifact_score` is the output's prominence divided by the input's.
About 1 means the generator added no grid; the bundled demo generators, with visible
checkerboards, score around 10 or more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

# Half-width of the square of bins around a peak whose median is "the spectrum around it",
# as a fraction of the smaller side, and never under 3 bins. The 3x3 core is left out: the
# window spreads a peak's own energy into its direct neighbours.
_SURROUND = 1 / 64
MIN_SIDE = 16  # the smallest side the check (and the spectral grid term) measures


def peak_prominence(image: np.ndarray) -> float:
    """Mean over the period-2/period-4 bins of (power there / median power around it).

    Args:
        image: ``(H, W, 3)`` uint8 or uint16 RGB (or ``(H, W)`` grey), any size; it is cropped to
            a multiple of 4 so that the peaks fall on exact bins.

    Returns:
        The prominence (about 1-5 for natural frames), or NaN for frames under 16 px a side.
    """
    img = np.asarray(image, dtype=np.float64)
    if image.dtype == np.uint16:
        img = img / 257.0
    if img.ndim == 2:
        img = img[..., None]
    if min(img.shape[0] - img.shape[0] % 4, img.shape[1] - img.shape[1] % 4) < MIN_SIDE:
        return float("nan")
    return float(bin_prominence(torch.from_numpy(img).permute(2, 0, 1)[None]).mean())


def bin_prominence(images: torch.Tensor, floor: float | torch.Tensor = 0.0) -> torch.Tensor:
    """:func:`peak_prominence`'s 15 ratios, bin by bin, for a batch, in torch and differentiable.

    Args:
        images: ``(B, C, H, W)``, any scale (a ratio of powers does not depend on it), at least 16 px
            a side; cropped to multiples of 4.
        floor: power added to every bin (units of ``images`` squared, summed over channels, per unit
            of the window's energy): the noise floor of a quantised frame, below which no grid is
            seen (:func:`quantisation_floor`); a ``(B,)`` tensor gives each image its own. 0: the
            powers as they are.

    Returns:
        ``(B, 15)``, FP64 for FP64 images (what :func:`peak_prominence` passes), else FP32: each
        period-2/4 bin's power over the median power around it (the mean of the 15 is
        :func:`peak_prominence` of the same image). Training's spectral grid term
        (``gtacity.trainer.losses.spectral_grid_loss``) reads it too.
    """
    x = images if images.dtype == torch.float64 else images.float()
    h, w = x.shape[-2] - x.shape[-2] % 4, x.shape[-1] - x.shape[-1] % 4
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"bin_prominence needs at least {MIN_SIDE} px a side, got {h}x{w}")
    x = x[..., :h, :w]
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    window = torch.outer(torch.hann_window(h, periodic=False, dtype=x.dtype, device=x.device),
                         torch.hann_window(w, periodic=False, dtype=x.dtype, device=x.device))
    power = (torch.fft.fft2(x * window).abs() ** 2).sum(dim=1)  # (B, h, w)
    floor = torch.as_tensor(floor, dtype=power.dtype, device=power.device).reshape(-1, 1, 1)  # one, or one an image
    power = power + floor * (window**2).sum()
    r = max(3, int(min(h, w) * _SURROUND))
    offsets = torch.arange(-r, r + 1, device=x.device)
    ring = (offsets.abs()[:, None] > 1) | (offsets.abs()[None, :] > 1)  # (2r+1, 2r+1), core out
    ratios = []
    for a in range(4):
        for b in range(4):
            if a == b == 0:
                continue
            cy, cx = a * h // 4, b * w // 4
            rows, cols = (cy + offsets) % h, (cx + offsets) % w
            around = power[:, rows][:, :, cols][:, ring]  # (B, ring bins)
            ratios.append(power[:, cy, cx] / torch.quantile(around, 0.5, dim=1).clamp_min(1e-12))
    return torch.stack(ratios, dim=1)


def quantisation_floor(value_range: float, channels: int = 3, levels: int = 256) -> float:
    """The power per unit of window energy that rounding to ``levels`` levels adds to every bin.

    Rounding adds noise uniform over one step, of variance ``step**2 / 12`` per pixel and channel,
    white, so each bin of :func:`bin_prominence` gets ``channels * step**2 / 12`` per unit of the
    window's energy. A grid under it is what rounding to 8 bits hides (``value_range``: 2 for
    images in [-1, 1]).
    """
    step = value_range / (levels - 1)
    return channels * step**2 / 12


@dataclass(frozen=True)
class ArtifactScore:
    """One translation against its input.

    Attributes:
        score: output prominence / input prominence, each floored at 1 (1: nothing added).
        output_peaks: the output's prominence (times the spectrum around the peaks).
        input_peaks: the input's prominence.
    """

    score: float
    output_peaks: float
    input_peaks: float


def artifact_score(input_image: np.ndarray, output_image: np.ndarray) -> ArtifactScore:
    """Score ``output_image`` (a translation) against ``input_image`` (what it translated)."""
    return score_from(peak_prominence(input_image), peak_prominence(output_image))


def score_from(input_peaks: float, output_peaks: float) -> ArtifactScore:
    """An :class:`ArtifactScore` from prominences already measured (an input scored once, many outputs).

    Both prominences are floored at 1 (a spectrum without peaks) before dividing: below 1 is the
    noise of a median, and dividing by it would inflate the score of a frame that has no grid.
    """
    return ArtifactScore(max(output_peaks, 1.0) / max(input_peaks, 1.0), output_peaks, input_peaks)


@dataclass(frozen=True)
class ArtifactSummary:
    """A set of translations' scores.

    Attributes:
        mean, worst: mean and largest score over the frames.
        worst_frame: index (in input order) of the largest.
        output_peaks: mean output prominence (times the spectrum around the peaks).
        frames: frames scored (those under 16 px a side are left out).
    """

    mean: float
    worst: float
    worst_frame: int
    output_peaks: float
    frames: int

    @classmethod
    def of(cls, scores: Sequence[ArtifactScore]) -> ArtifactSummary | None:
        """Summarise per-frame scores; None when no frame could be scored."""
        values = np.array([s.score for s in scores], dtype=np.float64)
        ok = np.isfinite(values)
        if not ok.any():
            return None
        worst = int(np.nanargmax(np.where(ok, values, np.nan)))
        return cls(float(values[ok].mean()), float(values[worst]), worst,
                   float(np.mean([s.output_peaks for s, good in zip(scores, ok) if good])), int(ok.sum()))

    def line(self) -> str:
        """One line for the report."""
        return (f"artifacts  {self.mean:.2f}x the input's period-2/4 spectral peaks (worst frame "
                f"{self.worst:.2f}x, #{self.worst_frame}); peaks {self.output_peaks:.1f}x the spectrum "
                f"around them; ~1 = no checkerboard, over 2 = visible")

    def to_dict(self) -> dict:
        return asdict(self)
