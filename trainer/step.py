r"""One CycleGAN update, in the paper's notation mapped to domain names.

Paper (Zhu et al. 2017)           here
  X, Y                            gta, city
  G : X -> Y,  F : Y -> X         G_gta2city, G_city2gta
  D_Y, D_X                        D_city, D_gta

Generator objective (minimised by both generators at once):

.. math::

    L_G = \underbrace{E[(D_{city}(G(x)) - 1)^2] + E[(D_{gta}(F(y)) - 1)^2]}_{\text{LSGAN}}
        + \lambda \underbrace{(\|F(G(x)) - x\|_1 + \|G(F(y)) - y\|_1)}_{\text{cycle}}
        + \lambda \lambda_{id} \underbrace{(\|G(y) - y\|_1 + \|F(x) - x\|_1)}_{\text{identity}}

with :math:`\lambda = 10`, :math:`\lambda_{id} = 0.5`. Each discriminator then minimises
:math:`\tfrac12(E[(D(y) - 1)^2] + E[D(\text{pool}(G(x)))^2])`.

The order follows the official ``optimize_parameters``: generators forward, G step with the
discriminators frozen, then the D step on pooled fakes.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from gtacity import hardware
from gtacity.nets import D_ANTIALIAS, PatchDiscriminator, ResnetGenerator, init_weights
from gtacity.trainer.data import DataError
from gtacity.trainer.losses import ImagePool, grid_loss, l1, lsgan_loss, spectral_grid_loss

GRID_TERMS = {"spectral": spectral_grid_loss, "phase": grid_loss}  # --grid-term


@dataclass(frozen=True)
class StepConfig:
    """Loss weights and optimiser settings (the paper's defaults).

    Attributes:
        lambda_cycle: weight of both cycle terms (paper: 10).
        lambda_identity: identity weight relative to ``lambda_cycle`` (paper: 0.5; 0 disables it
            and saves two generator passes per step).
        lr: Adam learning rate for all four nets (paper: 2e-4), before the linear decay.
        beta1: Adam beta1 (paper: 0.5; beta2 is 0.999).
        pool_size: fakes remembered for the discriminators (paper: 50; 0 = no pool).
        lambda_grid: weight of the grid term on each translation against its input (not in the
            paper: 0 leaves it out). Against the period-2/4 grid that training was measured to teach
            a generator even with resize upsampling.
        grid_term: which grid term: ``"spectral"``
            (:func:`~gtacity.trainer.losses.spectral_grid_loss`: the artifact check's own spectral
            peaks, bin by bin) or ``"phase"`` (:func:`~gtacity.trainer.losses.grid_loss`: the crop's
            uniform period-4 phase means, the first version). Configs of runs from before the
            choice read as ``"phase"``.
        cycle_noise: standard deviation (in [-1, 1] units) of Gaussian noise added to each translation
            before it is translated back for the cycle loss (not in the paper: 0 leaves it out). A
            generator can hide what the other needs for the reconstruction in a faint high-frequency
            signal (Chu et al., 2017); noise makes that channel useless (Bashkirova et al., NeurIPS 2019).
        d_antialias: how both discriminators downsample (not in the paper; see
            :class:`~gtacity.nets.PatchDiscriminator`): ``"off"`` (the paper's strided convs),
            ``"blur"`` (a blur before each: no grid moves a score, nor does fine detail) or
            ``"blurpool"`` (dense conv, rectifier, blur, subsample: detail counts, its phase does
            not). ``True``/``False`` (the configs of runs from before the choice) read as
            ``"blur"``/``"off"``.
    """

    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    lr: float = 2e-4
    beta1: float = 0.5
    pool_size: int = 50
    lambda_grid: float = 0.0
    cycle_noise: float = 0.0
    d_antialias: str = "off"
    grid_term: str = "spectral"

    def __post_init__(self):
        kind = {False: "off", True: "blur"}.get(self.d_antialias, self.d_antialias)
        if kind not in D_ANTIALIAS:
            raise ValueError(f"unknown d_antialias {self.d_antialias!r}; known: {', '.join(D_ANTIALIAS)}")
        object.__setattr__(self, "d_antialias", kind)
        if self.grid_term not in GRID_TERMS:
            raise ValueError(f"unknown grid_term {self.grid_term!r}; known: {', '.join(GRID_TERMS)}")


class CycleGAN(nn.Module):
    """The four networks, two optimisers and two image pools of one training run."""

    def __init__(self, ngf: int, n_blocks: int, ndf: int, cfg: StepConfig, seed: int = 0,
                 upsample: str = "transpose"):
        super().__init__()
        self.cfg = cfg
        self.G_gta2city = init_weights(ResnetGenerator(ngf, n_blocks, upsample=upsample))
        self.G_city2gta = init_weights(ResnetGenerator(ngf, n_blocks, upsample=upsample))
        self.D_city = init_weights(PatchDiscriminator(ndf, antialias=cfg.d_antialias))
        self.D_gta = init_weights(PatchDiscriminator(ndf, antialias=cfg.d_antialias))
        gens = itertools.chain(self.G_gta2city.parameters(), self.G_city2gta.parameters())
        discs = itertools.chain(self.D_city.parameters(), self.D_gta.parameters())
        self.opt_G = torch.optim.Adam(gens, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_D = torch.optim.Adam(discs, lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.pool_city = ImagePool(cfg.pool_size, seed=seed * 2 + 1)  # fakes judged by D_city
        self.pool_gta = ImagePool(cfg.pool_size, seed=seed * 2 + 2)

    def generators(self) -> tuple[nn.Module, nn.Module]:
        return self.G_gta2city, self.G_city2gta

    def discriminators(self) -> tuple[nn.Module, nn.Module]:
        return self.D_city, self.D_gta


@dataclass
class Precision:
    """How a step runs its forward passes: autocast dtype (None = FP32) and an optional grad scaler."""

    device_type: str = "cpu"
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(opt)
        else:
            opt.step()


def _noisy(x: torch.Tensor, std: float) -> torch.Tensor:
    """``x`` plus Gaussian noise of ``std`` (from torch's generator, saved with checkpoints), or ``x``."""
    return x + torch.randn_like(x) * std if std > 0 else x


def train_step(
    model: CycleGAN, gta: torch.Tensor, city: torch.Tensor, prec: Precision
) -> dict[str, torch.Tensor]:
    """One update of all four nets on a batch of unpaired images; returns every loss term, detached.

    Args:
        gta: ``(B, 3, H, W)`` GTA5 images in [-1, 1].
        city: ``(B, 3, H, W)`` Cityscapes images in [-1, 1].
    """
    cfg = model.cfg
    G, F, D_city, D_gta = model.G_gta2city, model.G_city2gta, model.D_city, model.D_gta
    with prec.autocast():
        fake_city = G(gta)  # (B, 3, H, W)
        rec_gta = F(_noisy(fake_city, cfg.cycle_noise))
        fake_gta = F(city)
        rec_city = G(_noisy(fake_gta, cfg.cycle_noise))

    # --- generators, discriminators frozen ---
    _requires_grad((D_city, D_gta), False)
    model.opt_G.zero_grad(set_to_none=True)
    with prec.autocast():
        losses = {
            "G_gta2city": lsgan_loss(D_city(fake_city), True),
            "G_city2gta": lsgan_loss(D_gta(fake_gta), True),
        }
        losses["cycle_gta"] = l1(rec_gta, gta) * cfg.lambda_cycle
        losses["cycle_city"] = l1(rec_city, city) * cfg.lambda_cycle
        if cfg.lambda_identity > 0:
            weight = cfg.lambda_cycle * cfg.lambda_identity
            losses["idt_gta2city"] = l1(G(city), city) * weight
            losses["idt_city2gta"] = l1(F(gta), gta) * weight
        if cfg.lambda_grid > 0:
            term = GRID_TERMS[cfg.grid_term]
            losses["grid_gta2city"] = term(fake_city, gta) * cfg.lambda_grid
            losses["grid_city2gta"] = term(fake_gta, city) * cfg.lambda_grid
    loss_G = sum(losses.values())
    prec.backward(loss_G)
    _average_gradients(model.generators())
    prec.step(model.opt_G)

    # --- discriminators, on pooled fakes ---
    _requires_grad((D_city, D_gta), True)
    model.opt_D.zero_grad(set_to_none=True)
    with prec.autocast():
        losses["D_city"] = 0.5 * (
            lsgan_loss(D_city(city), True) + lsgan_loss(D_city(model.pool_city.query(fake_city)), False)
        )
        losses["D_gta"] = 0.5 * (
            lsgan_loss(D_gta(gta), True) + lsgan_loss(D_gta(model.pool_gta.query(fake_gta)), False)
        )
    prec.backward(losses["D_city"] + losses["D_gta"])
    _average_gradients(model.discriminators())
    prec.step(model.opt_D)
    if prec.scaler:
        prec.scaler.update()
    losses["G_total"] = loss_G
    return {k: v.detach() for k, v in losses.items()}


def _requires_grad(nets: tuple[nn.Module, ...], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _average_gradients(nets: tuple[nn.Module, ...]) -> None:
    """Data-parallel gradient averaging across processes (a no-op in a single process).

    Why not DistributedDataParallel: every generator runs three times per step (translate,
    reconstruct, identity) before one backward, which DDP's per-use reduction hooks do not allow
    without static-graph tricks. One coalesced all-reduce per optimiser step is the same arithmetic.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for net in nets for p in net.parameters() if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def choose_precision(amp: str, device: torch.device, caps: hardware.CpuCapabilities) -> Precision:
    """The autocast dtype for ``amp`` on ``device``; ``auto`` never picks an emulated precision.

    Args:
        caps: what the CPU computes in hardware; ``auto`` there is :func:`gtacity.hardware.train_amp`
            (a bf16 step is ~17x slower than fp32 where bf16 is emulated).
    """
    if amp == "auto":
        if device.type == "cuda":
            amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        else:
            amp = hardware.train_amp(caps)
    if amp == "off":
        return Precision(device.type)
    if amp == "bf16":
        return Precision(device.type, torch.bfloat16)
    if amp == "fp16" and device.type == "cuda":
        return Precision(device.type, torch.float16, torch.amp.GradScaler("cuda"))
    if amp == "fp16":
        raise DataError("--amp fp16 needs a CUDA GPU; on the CPU use --amp off (or bf16 where native)")
    raise DataError(f"unknown --amp {amp!r}; choose auto, bf16, fp16 or off")
