"""CycleGAN training iterations/s: ours vs a step written the way the official code does it.

Both train the paper's networks (generators ngf 64 with 9 blocks, 70x70 PatchGANs ndf 64) on
256x256 crops, batch 1, with the same losses (LSGAN, cycle x10, identity x0.5), Adam (2e-4, 0.5)
and 50-image pools, on the CPU.

- ours: :func:`gtacity.trainer.step.train_step` at the precision ``gtacity train --amp auto`` picks
  on this CPU (:func:`gtacity.hardware.train_amp`): bf16 autocast where bf16 is native (AVX512-BF16,
  AMX), fp32 elsewhere.
- baseline: ``optimize_parameters`` of the official ``cycle_gan_model.py`` (forward, G step with the
  discriminators frozen, then D_A and D_B on pooled fakes) in eager fp32, with its ``GANLoss``
  (MSE against expanded label tensors), ``L1Loss`` and ``ImagePool``.

``--also`` adds variants of ours to the same alternation: ``compile`` wraps each of the four
networks in ``torch.compile`` (inductor, default mode; its first warm-up step, which compiles, is
reported apart); ``threads=N`` runs ours with ``torch.set_num_threads(N)`` for its steps.

Inputs are seeded random images in [-1, 1] (dense convolutions take the same time on any pixels).
Steps alternate ours / baseline (/ variants) after a few warm-up steps of each; medians are reported.

    python benchmarks/train_vs_official.py [--steps 5] [--warmup 2] [--size 256] [--also compile,threads=1]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time

import torch
from torch import nn

from gtacity import hardware
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.nets import PatchDiscriminator, ResnetGenerator, init_weights
from gtacity.trainer.step import CycleGAN, Precision, StepConfig, train_step


class OfficialImagePool:
    """``util/image_pool.py``: return a fake, or with probability 1/2 swap it for an older one."""

    def __init__(self, size: int = 50):
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                slot = random.randint(0, self.size - 1)
                out.append(self.images[slot].clone())
                self.images[slot] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


class OfficialCycleGAN:
    """``models/cycle_gan_model.py``'s training step, names kept (A = GTA5, B = Cityscapes)."""

    def __init__(self, lambda_A: float = 10.0, lambda_B: float = 10.0, lambda_identity: float = 0.5):
        self.netG_A, self.netG_B = (init_weights(ResnetGenerator(64, 9)) for _ in range(2))
        self.netD_A, self.netD_B = (init_weights(PatchDiscriminator(64)) for _ in range(2))
        self.lambda_A, self.lambda_B, self.lambda_idt = lambda_A, lambda_B, lambda_identity
        self.criterionGAN, self.criterionCycle, self.criterionIdt = nn.MSELoss(), nn.L1Loss(), nn.L1Loss()
        self.optimizer_G = torch.optim.Adam(
            itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.optimizer_D = torch.optim.Adam(
            itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()), lr=2e-4, betas=(0.5, 0.999))
        self.fake_A_pool, self.fake_B_pool = OfficialImagePool(), OfficialImagePool()

    def gan_loss(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0).expand_as(prediction)
        return self.criterionGAN(prediction, target)

    def optimize_parameters(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        self.fake_B = self.netG_A(real_A)
        self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(real_B)
        self.rec_B = self.netG_A(self.fake_A)
        self.set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G(real_A, real_B)
        self.optimizer_G.step()
        self.set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        self.backward_D_basic(self.netD_A, real_B, self.fake_B_pool.query(self.fake_B))
        self.backward_D_basic(self.netD_B, real_A, self.fake_A_pool.query(self.fake_A))
        self.optimizer_D.step()

    def backward_G(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        loss_idt_A = self.criterionIdt(self.netG_A(real_B), real_B) * self.lambda_B * self.lambda_idt
        loss_idt_B = self.criterionIdt(self.netG_B(real_A), real_A) * self.lambda_A * self.lambda_idt
        loss_G_A = self.gan_loss(self.netD_A(self.fake_B), True)
        loss_G_B = self.gan_loss(self.netD_B(self.fake_A), True)
        loss_cycle_A = self.criterionCycle(self.rec_A, real_A) * self.lambda_A
        loss_cycle_B = self.criterionCycle(self.rec_B, real_B) * self.lambda_B
        (loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B).backward()

    def backward_D_basic(self, netD: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> None:
        loss_D = (self.gan_loss(netD(real), True) + self.gan_loss(netD(fake.detach()), False)) * 0.5
        loss_D.backward()

    @staticmethod
    def set_requires_grad(nets: list[nn.Module], requires_grad: bool) -> None:
        for net in nets:
            for param in net.parameters():
                param.requires_grad = requires_grad


def variant_step(variant: str, gta: torch.Tensor, city: torch.Tensor, precision: Precision):
    """One step of ours changed as ``variant`` says (``compile`` or ``threads=N``), on its own model."""
    model = CycleGAN(64, 9, 64, StepConfig(), seed=0)
    if variant == "compile":
        for name in ("G_gta2city", "G_city2gta", "D_city", "D_gta"):
            setattr(model, name, torch.compile(getattr(model, name)))
        return lambda: train_step(model, gta, city, precision)
    if variant.startswith("threads="):
        threads = int(variant.split("=", 1)[1])

        def step() -> None:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                train_step(model, gta, city, precision)
            finally:
                torch.set_num_threads(before)
        return step
    raise SystemExit(f"unknown variant {variant!r}: use compile or threads=N")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--size", type=int, default=256, help="square crop side")
    parser.add_argument("--also", default="", help="variants of ours to time too: compile, threads=N (comma-separated)")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {describe_machine(machine_info())}")
    print(f"versions: {describe_versions(versions())}")

    torch.manual_seed(0)
    random.seed(0)
    gta, city = torch.rand(2, 1, 3, args.size, args.size) * 2 - 1  # (1, 3, S, S) each
    ours = CycleGAN(64, 9, 64, StepConfig(), seed=0)
    amp = hardware.train_amp(hardware.cpu_capabilities())
    precision = Precision("cpu", torch.bfloat16 if amp == "bf16" else None)
    official = OfficialCycleGAN()
    steps = {
        "ours": lambda: train_step(ours, gta, city, precision),
        "baseline": lambda: official.optimize_parameters(gta, city),
    }
    for variant in filter(None, args.also.split(",")):
        steps[variant] = variant_step(variant, gta, city, precision)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
            elif i == 0 and name == "compile":
                print(f"  compile: first step (compiles) {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if i >= args.warmup:
            print(f"  step {i + 1 - args.warmup}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
                  file=sys.stderr)

    ours_s, base_s = statistics.median(seconds["ours"]), statistics.median(seconds["baseline"])
    print(f"\n{args.size}x{args.size} crops, batch 1, ngf 64 / 9 blocks, ndf 64; {args.warmup} warm-up steps each, "
          f"median of {args.steps} alternating steps\n")
    ours_name = "bf16 autocast" if amp == "bf16" else "fp32, bf16 not native here"
    print(f"| | baseline (official-style, eager fp32) | ours (train_step, --amp auto: {ours_name}) | ratio |")
    print("|---|---|---|---|")
    print(f"| iterations/s | {1 / base_s:.3f} | {1 / ours_s:.3f} | {base_s / ours_s:.2f}x |")
    print(f"| seconds per iteration (median) | {base_s:.2f} | {ours_s:.2f} | |")
    print(f"| seconds per iteration (min-max) | {min(seconds['baseline']):.2f}-{max(seconds['baseline']):.2f} "
          f"| {min(seconds['ours']):.2f}-{max(seconds['ours']):.2f} | |")
    for variant in [name for name in seconds if name not in ("ours", "baseline")]:
        var_s = statistics.median(seconds[variant])
        print(f"\nours, {variant}: {1 / var_s:.3f} it/s, {var_s:.2f} s per iteration "
              f"({min(seconds[variant]):.2f}-{max(seconds[variant]):.2f}), {base_s / var_s:.2f}x the baseline, "
              f"{ours_s / var_s:.2f}x ours")


if __name__ == "__main__":
    main()
