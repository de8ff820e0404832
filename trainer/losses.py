"""The CycleGAN losses and the image pool (Zhu et al., ICCV 2017, sections 3 and 4).

LSGAN replaces the log-likelihood of the original GAN objective with least squares (Mao et al.):
the generator minimises ``E[(D(G(x)) - 1)^2]`` and the discriminator
``E[(D(y) - 1)^2] + E[D(G(x))^2]`` (halved, as in the paper, to slow D down relative to G).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean squared distance of PatchGAN scores to 1 (real) or 0 (fake), computed in FP32."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction.float(), target.float())


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference in FP32 (the cycle and identity terms)."""
    return F.l1_loss(a.float(), b.float())


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
