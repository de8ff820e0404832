"""How close one image is to another: PSNR and SSIM, shared by distillation and ``gtacity eval``.

Both take ``(B, 3, H, W)`` float tensors in [0, 1] and return one value per image. SSIM is the
standard one (Wang et al. 2004): an 11x11 Gaussian window with sigma 1.5, K1 0.01, K2 0.03, computed
per channel and averaged, over the "valid" region (no padding), as scikit-image and torchmetrics do
with ``gaussian_weights=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_WINDOW, _SIGMA = 11, 1.5
_C1, _C2 = 0.01**2, 0.03**2


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (peak 1); identical images give ``inf``."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, in [-1, 1] (1 = identical); sides must be at least 11 px."""
    a, b = a.double(), b.double()
    channels = a.shape[1]
    coords = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, _WINDOW, _WINDOW)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (var_a + var_b + _C2)
    return (num / den).flatten(1).mean(1)
