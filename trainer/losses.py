"""The CycleGAN losses and the image pool (Zhu et al., ICCV 2017, sections 3 and 4).

LSGAN replaces the log-likelihood of the original GAN objective with least squares (Mao et al.):
the generator minimises ``E[(D(G(x)) - 1)^2]`` and the discriminator
``E[(D(y) - 1)^2] + E[D(G(x))^2]`` (halved, as in the paper, to slow D down relative to G).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from gtacity.artifacts import bin_prominence, quantisation_floor


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean squared distance of PatchGAN scores to 1 (real) or 0 (fake), computed in FP32."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction.float(), target.float())


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference in FP32 (the cycle and identity terms)."""
    return F.l1_loss(a.float(), b.float())


def grid_pattern(x: torch.Tensor) -> torch.Tensor:
    """The part of ``x`` that repeats every 4 pixels: ``(B, C, 4, 4)`` phase means, overall mean out.

    The mean of the pixels at rows ``4m + p``, columns ``4n + q``, for each of the 16 phases ``(p, q)``,
    minus the mean of all 16. Its 2-D DFT is, up to a factor, the image's spectrum at the 15 frequencies
    ``(a/4, b/4)`` cycles per pixel that :mod:`gtacity.artifacts` checks: a checkerboard
    of period 2 or 4 is exactly a pattern here. ``H`` and ``W`` are cropped to multiples of 4.
    """
    b, c, h, w = x.shape
    x = x[..., : h - h % 4, : w - w % 4].float()
    phases = x.reshape(b, c, (h - h % 4) // 4, 4, (w - w % 4) // 4, 4).mean(dim=(2, 4))  # (B, C, 4, 4)
    return phases - phases.mean(dim=(2, 3), keepdim=True)


def grid_loss(output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the output's period-4 pattern and its source's (``--lambda-grid``).

    A translation may change colours and textures, not add a grid: the output should repeat every
    2 or 4 pixels no more than its input does. Cheap (one pass), differentiable, in FP32.
    """
    return F.l1_loss(grid_pattern(output), grid_pattern(source))


def _power(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B,)``: each image's mean squared deviation from its channel means."""
    return (images - images.mean(dim=(-2, -1), keepdim=True)).pow(2).mean(dim=(1, 2, 3))


def spectral_grid_loss(output: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """How far each translation's period-2/4 spectral peaks stand over its input's (``--grid-term spectral``).

    The artifact check's own measure (:func:`gtacity.artifacts.bin_prominence`: each of the 15
    period-2/4 bins' power over the median power around it, Hann window), bin by bin: the mean over
    bins and images of ``relu(log(output's) - log(max(input's, 1)))``, so only peaks the
    translation raises above its input's (and above a spectrum without peaks) cost anything. Both
    spectra get the noise floor of rounding to 8 bits (:func:`gtacity.artifacts.quantisation_floor`):
    a grid too faint to survive it is not penalised, since no saved frame would show it. The
    output's floor is scaled by its power over its input's (the floor the output would have at its
    input's contrast), so the term does not depend on the output's contrast: with a fixed floor,
    flattening a translation moved its peaks towards the floor and paid, a little (a third off at a
    quarter of the contrast; ``benchmarks/RESULTS.md``).

    Unlike :func:`grid_loss` it sees a grid whose phase or strength changes across the crop: the
    uniform phase means of a run's translations held a faint pattern that rounding erased, while
    the grid the check measured on whole frames was elsewhere (``benchmarks/RESULTS.md``). FP32.
    """
    floor = quantisation_floor(2.0, channels=output.shape[1])
    source = source.detach().float()
    gain = _power(output.float()) / _power(source).clamp_min(1e-8)
    out = bin_prominence(output, floor * gain)
    ref = bin_prominence(source, floor).clamp_min(1.0)
    return F.relu(torch.log(out) - torch.log(ref)).mean()


class ImagePool:
    """A history of generated images (Shrivastava et al.), as in the paper: size 50.

    Each generated image either goes straight to the discriminator or, with probability 1/2 once the
    pool is full, is swapped for a random older one, so D keeps seeing earlier generators' mistakes.
    Its random choices come from its own ``random.Random``, saved and restored with the pool.
    """

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` fresh fakes -> ``(B, 3, H, W)`` fakes for the discriminator (detached)."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() > 0.5:
                slot = self.rng.randint(0, self.size - 1)
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": [t.cpu() for t in self.images], "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.size = state["size"]
        self.images = [t.to(device) for t in state["images"]]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
