r"""One distillation update: a small student learns to reproduce a trained teacher generator.

The teacher (any generator file) translates a batch of source-domain images ``x``; the student ``S``
learns the pairs ``(x, T(x))``. Student objective:

.. math::

    L_S = \lambda_{L1} \|S(x) - T(x)\|_1
        + \lambda_{feat} \frac{1}{K} \sum_k \|P_k(S_k(x)) - T_k(x)\|_2^2
        + \lambda_{GAN} E[(D(x, S(x)) - 1)^2]
        + \lambda_{grid} \, grid(S(x), x)

* L1 to the teacher's output (REGEN, pix2pix): what the student must match;
* feature distillation (GAN Compression, Li et al. 2020): ``S_k`` / ``T_k`` are the outputs of the
  residual blocks that end each third of the bottleneck, ``P_k`` a learned 1x1 conv from the
  student's channels to the teacher's; it hands the student the teacher's intermediate structure,
  not only its pixels;
* a conditional LSGAN (pix2pix): ``D`` judges (input, output) pairs, the teacher's as real and the
  student's as fake, and punishes the blur that L1 alone settles for;
* the spectral grid term (:func:`~gtacity.trainer.losses.spectral_grid_loss`, as ``train
  --grid-term spectral``): the student's period-2/4 spectral peaks over its input's. A small
  student can draw a checkerboard its teacher does not (the bundled city2gta student of the second
  demo version: held-out peaks 4.2x its input's, its teacher's 1.8x; ``benchmarks/RESULTS.md``);
  L1 to the teacher barely sees a faint grid, this term sees nothing else.

``D`` then minimises :math:`\tfrac12(E[(D(x, T(x)) - 1)^2] + E[D(x, S(x))^2])`. Any weight set to 0
drops its term (and, for the GAN, the discriminator and its step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gtacity.nets import N_DOWNSAMPLING, PatchDiscriminator, build_generator, init_weights, residual_blocks
from gtacity.trainer.losses import l1, lsgan_loss, spectral_grid_loss
from gtacity.trainer.step import Precision


@dataclass(frozen=True)
class DistillLosses:
    """Loss weights and optimiser settings.

    Attributes:
        lambda_l1: weight of the L1 distance to the teacher's output.
        lambda_feat: weight of the feature-distillation term (0 = off).
        lambda_gan: weight of the conditional GAN term (0 = no discriminator).
        lambda_grid: weight of the spectral grid term on the student's output against its input
            (0 = off).
        ndf: discriminator width (pix2pix's 64 costs more than a small student; 32 is plenty to
            judge sharpness).
        lr, beta1: Adam settings for student, projections and discriminator (beta2 0.999).
    """

    lambda_l1: float = 10.0
    lambda_feat: float = 1.0
    lambda_gan: float = 1.0
    lambda_grid: float = 0.0
    ndf: int = 32
    lr: float = 2e-4
    beta1: float = 0.5


class _Taps:
    """Collects the outputs of chosen modules on every forward (forward hooks)."""

    def __init__(self, modules: list[nn.Module]):
        self.outputs: list[torch.Tensor] = []
        for m in modules:
            m.register_forward_hook(lambda _m, _inp, out: self.outputs.append(out))

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out


def tap_indices(n_blocks: int, taps: int) -> list[int]:
    """Indices of the blocks that end each of ``taps`` equal parts of ``n_blocks`` blocks."""
    return [math.ceil(n_blocks * (k + 1) / taps) - 1 for k in range(taps)]


class Distiller(nn.Module):
    """Teacher (frozen), student, feature projections, discriminator and the two optimisers."""

    def __init__(self, teacher: nn.Module, arch: str, ngf: int, n_blocks: int, losses: DistillLosses,
                 upsample: str = "transpose"):
        super().__init__()
        self.losses = losses
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = init_weights(build_generator(arch, ngf, n_blocks, upsample))
        n_taps = min(3, n_blocks, teacher.n_blocks)
        t_blocks, s_blocks = residual_blocks(teacher), residual_blocks(self.student)
        t_ch, s_ch = teacher.ngf * 2**N_DOWNSAMPLING, ngf * 2**N_DOWNSAMPLING  # bottleneck channels
        self.projections = nn.ModuleList(nn.Conv2d(s_ch, t_ch, kernel_size=1) for _ in range(n_taps))
        init_weights(self.projections)
        self._teacher_taps = _Taps([t_blocks[i] for i in tap_indices(len(t_blocks), n_taps)])
        self._student_taps = _Taps([s_blocks[i] for i in tap_indices(len(s_blocks), n_taps)])
        self.D = init_weights(PatchDiscriminator(losses.ndf, in_channels=6)) if losses.lambda_gan > 0 else None
        betas = (losses.beta1, 0.999)
        params = [*self.student.parameters(), *self.projections.parameters()]
        self.opt_G = torch.optim.Adam(params, lr=losses.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=losses.lr, betas=betas) if self.D else None

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.opt_G, self.opt_D) if opt is not None]

    @torch.no_grad()
    def teach(self, source: torch.Tensor, prec: Precision) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's translation of ``source`` and its tapped features (no gradients)."""
        with prec.autocast():
            target = self.teacher(source)
        return target.float(), [f.float() for f in self._teacher_taps.take()]

    def translate(self, source: torch.Tensor, prec: Precision) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The student's translation of ``source`` and its tapped features."""
        with prec.autocast():
            out = self.student(source)
        return out, self._student_taps.take()


def distill_step(d: Distiller, source: torch.Tensor, prec: Precision) -> dict[str, torch.Tensor]:
    """One update of the student (and discriminator); returns every loss term, detached.

    Args:
        source: ``(B, 3, H, W)`` source-domain images in [-1, 1].
    """
    w = d.losses
    target, t_feats = d.teach(source, prec)  # (B, 3, H, W), K x (B, 4 ngf_T, H/4, W/4)
    if d.D is not None:
        d.D.requires_grad_(False)
    d.opt_G.zero_grad(set_to_none=True)
    student, s_feats = d.translate(source, prec)
    with prec.autocast():
        losses = {"l1": l1(student, target) * w.lambda_l1}
        if w.lambda_feat > 0:
            feat = [F.mse_loss(p(s).float(), t) for p, s, t in zip(d.projections, s_feats, t_feats)]
            losses["feat"] = sum(feat) / len(feat) * w.lambda_feat
        if d.D is not None:
            losses["gan"] = lsgan_loss(d.D(torch.cat([source, student], 1)), True) * w.lambda_gan
        if w.lambda_grid > 0:
            losses["grid"] = spectral_grid_loss(student, source) * w.lambda_grid
    loss_G = sum(losses.values())
    prec.backward(loss_G)
    prec.step(d.opt_G)
    if d.D is not None:
        d.D.requires_grad_(True)
        d.opt_D.zero_grad(set_to_none=True)
        with prec.autocast():
            real = lsgan_loss(d.D(torch.cat([source, target], 1)), True)
            fake = lsgan_loss(d.D(torch.cat([source, student.detach()], 1)), False)
            losses["D"] = 0.5 * (real + fake)
        prec.backward(losses["D"])
        prec.step(d.opt_D)
    if prec.scaler:
        prec.scaler.update()
    losses["S_total"] = loss_G
    return {k: v.detach() for k, v in losses.items()}
