"""What ``gtacity bench`` runs: its settings, the agreement tolerances, and the plan of targets.

The plan is the backend registry x the device types each backend declares x the precisions asked
for; what cannot run here is listed with the reason, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch

from gtacity import hardware
from gtacity.checkpoint import DIRECTIONS
from gtacity.engine.backends import BACKENDS, PRECISIONS, Backend, BackendError, backend_class
from gtacity.engine.measure.bench_report import Target
from gtacity.errors import GtacityError
from gtacity.nets import MIN_SIZE, SIZE_MULTIPLE

REDUCED = ("fp16", "bf16")
# Sizes (width, height) and batches when none are given: the CPU default run stays under two
# minutes on 2 cores; a GPU gets Cityscapes and 1080p frames.
DEFAULT_SIZES = {"cpu": ((256, 256), (512, 256)), "cuda": ((1024, 512), (1920, 1080))}
DEFAULT_BATCHES = {"cpu": (1,), "cuda": (1, 8)}
Size = tuple[int, int]


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed difference from torch fp32 on the CPU, in [-1, 1] units."""

    max_abs: float
    mean_abs: float


# fp32: what two correct fp32 implementations differ by (each sums convolutions and instance-norm
# statistics in its own order), measured on the bundled TRAINED generators and their students
# (benchmarks/fp32_agreement.py; benchmarks/RESULTS.md, "fp32 agreement"): openvino fp32 vs torch
# fp32 on the CPU, at the bench's sizes up to 512x288, max 1.3e-4 / mean 4.5e-6 on the bench's own
# input and max 3.1e-4 / mean 2.3e-5 on real frames; on real 2048x1024 Cityscapes frames max
# 8.7e-3 / mean 6.6e-4 (the difference grows with the frame: a norm's statistics sum more pixels).
# Seeded random ngf 64 weights differ far less (1.3e-5), which is why the old bound (1e-4) failed
# the shipped demo. Bound: the worst seen (2048x1024) x ~2.3 for the max, x ~3 for the mean; a real
# error (bf16 slipping in: mean 0.007 or more; a wrong pad or norm: 0.1 and up) stays far outside.
# bf16 (openvino, torch; bench input 256x256 to 1024x512): ngf 64 random weights max 0.062-0.088,
# mean 0.0070-0.0087; the demo generator max 0.014-0.026, mean 0.0008-0.0011; bound ~3x. fp16 keeps
# 3 more mantissa bits than bf16 (1/8 the rounding error); no GPU was at hand to measure it, so its
# bound is bf16's / 4. "tf32" is fp32 on CUDA, where cuDNN (and TensorRT) run fp32 convolutions in
# TF32 (fp16's mantissa) by default.
TOLERANCES: Mapping[str, Tolerance] = MappingProxyType({
    "fp32": Tolerance(max_abs=0.02, mean_abs=0.002),
    "tf32": Tolerance(max_abs=0.06, mean_abs=0.006),
    "fp16": Tolerance(max_abs=0.06, mean_abs=0.006),
    "bf16": Tolerance(max_abs=0.25, mean_abs=0.025),
    # int8, calibrated on the bench's own random input: 2x bf16's bound. Real frames with the demo
    # generator stay far inside it (45-51 dB PSNR, RESULTS.md); ngf 64 at random weights was not
    # measured on the shared machine in time.
    "int8": Tolerance(max_abs=0.5, mean_abs=0.05),
})


class BenchError(GtacityError):
    """A bench that cannot run as asked."""


@dataclass(frozen=True)
class BenchConfig:
    """One bench run.

    Attributes:
        backends: registry names to run; empty = every registered backend.
        precisions: any of ``auto`` (each backend's default), ``reduced`` (its fp16/bf16 paths),
            ``fp32``, ``fp16``, ``bf16``.
        device: ``auto`` (CUDA if present, else the CPU), ``all`` (every device type), ``cpu``,
            ``cuda`` or ``cuda:N``.
        sizes: ``(width, height)`` pairs, multiples of 4; empty = :data:`DEFAULT_SIZES` per device.
        batch_sizes: frames per call; empty = :data:`DEFAULT_BATCHES` per device.
        weights: a generator file (or a bundled generator's name); None = seeded random weights of
            ``ngf`` / ``n_blocks`` (64 / 9, the paper's size, when not given), except with ``e2e``
            and neither given: then the bundled demo generator for ``direction``, the one
            ``translate`` would use.
        direction: ``gta2city`` or ``city2gta``: which bundled generator ``e2e`` defaults to.
        warmup, repeats: untimed calls after the agreement check, then timed calls.
        budget_s: timed calls of one configuration stop after this many seconds (at least 3
            calls): the default CPU run stays under two minutes even on a slow or busy CPU.
        e2e: a video (or image folder / image): time the whole pipeline over it instead.
        e2e_frames: ``e2e`` reads at most this many frames per configuration; None = no count limit.
        e2e_seconds: ``e2e`` stops reading once the pass would end after this many seconds
            (frames in flight projected at the rate so far); None = the whole input.
        progress: a progress bar per ``e2e`` pass on stderr.
        streams: batches in flight in the e2e pipeline (see :func:`~gtacity.engine.stream.pipeline.run_pipeline`).
        json_path: also write the report there.
        tolerances: precision (or ``tf32``) -> :class:`Tolerance` for the agreement check.
        seed: of the random weights and the input.
    """

    backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("auto",)
    device: str = "auto"
    sizes: tuple[Size, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    weights: str | Path | None = None
    ngf: int | None = None
    n_blocks: int | None = None
    direction: str = "gta2city"
    warmup: int = 1
    repeats: int = 10
    budget_s: float = 5.0
    e2e: str | Path | None = None
    e2e_frames: int | None = None
    e2e_seconds: float | None = 30.0
    progress: bool = False
    streams: int | None = None
    json_path: str | Path | None = None
    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: TOLERANCES)
    seed: int = 0


def parse_sizes(text: str) -> tuple[Size, ...]:
    """``"512x256,1024x512"`` -> ``((512, 256), (1024, 512))`` (width x height)."""
    sizes = [item.lower().split("x") for item in text.split(",") if item.strip()]
    if not sizes or any(len(s) != 2 or not all(v.strip().isdigit() for v in s) for s in sizes):
        raise BenchError(f"sizes are WIDTHxHEIGHT, comma-separated (e.g. 512x256,1024x512); got {text!r}")
    return tuple((int(w), int(h)) for w, h in sizes)


def parse_ints(text: str) -> tuple[int, ...]:
    """``"1,4"`` -> ``(1, 4)``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or not all(item.isdigit() for item in items):
        raise BenchError(f"expected comma-separated whole numbers, e.g. 1,4; got {text!r}")
    return tuple(int(item) for item in items)


def plan(cfg: BenchConfig) -> tuple[list[Target], list[Target], list[Target]]:
    """(runnable, unavailable, skipped) targets: registry x device types x precisions.

    Raises:
        BenchError: an unknown backend name.
    """
    runnable: list[Target] = []
    unavailable: list[Target] = []
    skipped: list[Target] = []
    for name in cfg.backends or tuple(BACKENDS):
        try:
            cls = backend_class(name)
        except BackendError as e:
            raise BenchError(str(e)) from None
        for device_type in cls.precisions:
            device = _device_for(cfg.device, device_type)
            reason = cls.unavailable_reason(torch.device(device or device_type))
            if reason is not None:
                unavailable.append(Target(name, device or device_type, reason=reason))
            elif device is None:
                why = f"--device {cfg.device} leaves {device_type} out"
                skipped.append(Target(name, device_type, reason=why))
            else:
                _add_precisions(cls, torch.device(device), cfg.precisions, runnable, skipped)
    return runnable, unavailable, skipped


def _device_for(wanted: str, device_type: str) -> str | None:
    """The device to run ``device_type`` on under ``--device wanted``; None if it is left out."""
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "all":
        return device_type
    return wanted if torch.device(wanted).type == device_type else None


def _add_precisions(cls: type[Backend], device: torch.device, wanted: tuple[str, ...],
                    runnable: list[Target], skipped: list[Target]) -> None:
    supported = cls.supported_precisions(device)
    chosen: list[str] = []
    for p in wanted:
        if p == "auto":
            chosen.append(cls.default_precision(device))
        elif p == "reduced" and any(q in REDUCED for q in supported):
            chosen += [q for q in supported if q in REDUCED and not _emulated(cls, device, q, skipped)]
        elif p in supported:
            chosen.append(p)
        else:
            has = f"it has {', '.join(supported)} on {device} here"
            skipped.append(Target(cls.name, str(device), p, has))
    runnable += [Target(cls.name, str(device), p) for p in dict.fromkeys(chosen)]


def _emulated(cls: type[Backend], device: torch.device, precision: str, skipped: list[Target]) -> bool:
    """Whether ``precision`` is emulated on this CPU: then listed as skipped, timed only by name."""
    reason = device.type == "cpu" and hardware.emulation_reason(hardware.cpu_capabilities(), precision)
    if reason:
        why = f"{precision} emulated here: slow, not timed ({reason}); --precision {precision} times it"
        skipped.append(Target(cls.name, str(device), precision, why))
    return bool(reason)


def validate(cfg: BenchConfig) -> None:
    """Raise :class:`BenchError` for settings that cannot run (before anything is built)."""
    for p in cfg.precisions:
        if p not in ("auto", "reduced", *PRECISIONS):
            raise BenchError(f"unknown precision {p!r}; use auto, reduced, {', '.join(PRECISIONS)}")
    for width, height in cfg.sizes:
        if min(width, height) < MIN_SIZE or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            raise BenchError(f"size {width}x{height}: each side must be a multiple of "
                             f"{SIZE_MULTIPLE}, at least {MIN_SIZE}")
    if any(b < 1 for b in cfg.batch_sizes) or cfg.repeats < 1 or cfg.warmup < 0 or cfg.budget_s <= 0:
        raise BenchError("batch sizes and repeats must be at least 1, warm-up calls at least 0, "
                         "the time budget above 0")
    if (cfg.e2e_frames is not None and cfg.e2e_frames < 1) or (cfg.e2e_seconds is not None and cfg.e2e_seconds <= 0):
        raise BenchError("--frames must be at least 1 and --seconds above 0")
    if cfg.direction not in DIRECTIONS:
        raise BenchError(f"unknown direction {cfg.direction!r}; choose {' or '.join(DIRECTIONS)}")
    if cfg.device not in ("auto", "all"):
        try:
            torch.device(cfg.device)
        except (RuntimeError, TypeError):
            raise BenchError(f"unknown device {cfg.device!r}; use auto, all, cpu, cuda, cuda:N") from None
    if cfg.json_path is not None and not Path(cfg.json_path).parent.is_dir():
        raise BenchError(f"{cfg.json_path}: its folder does not exist")
