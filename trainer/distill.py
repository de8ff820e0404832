"""``gtacity distill``: train a small student generator on a teacher's translations.

Read :func:`distill` top to bottom: load the teacher, build data and the student, maybe resume, then
``for step: batch -> lr -> distill_step -> log -> sample -> checkpoint``. The run folder has the
layout of ``gtacity train``: ``<direction>.safetensors`` (the student, what ``translate --weights``
takes), ``generators/step_*``, ``checkpoints/latest.pt``, ``metrics.jsonl``, TensorBoard logs, and
``samples/*.png`` whose rows are input | teacher | student.

The direction is the teacher's: a gta2city teacher is distilled on GTA5 images, a city2gta teacher
on Cityscapes images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtacity import hardware
from gtacity.checkpoint import (
    CheckpointError,
    GeneratorInfo,
    describe,
    file_sha256,
    generator_path,
    load_generator,
    read_generator_file,
    save_generator,
    step_generator_path,
)
from gtacity.nets import ARCHS
from gtacity.quality import psnr
from gtacity.trainer.data import DataError, Preprocess, ResumableSampler, UnpairedDataset, domain_files
from gtacity.trainer.distill_step import Distiller, DistillLosses, distill_step
from gtacity.trainer.logs import RunLogger
from gtacity.trainer.state import Progress, RunSettings, has_checkpoint, load_fitting, read_checkpoint, write_checkpoint
from gtacity.trainer.step import Precision, choose_precision

_DOMAIN = {"gta2city": "gta", "city2gta": "city"}


@dataclass(frozen=True)
class DistillConfig(RunSettings):
    """Everything that defines a distillation run; saved in every checkpoint.

    Attributes:
        out: run folder.
        teacher: the generator file to imitate (ours or an official ``.pth``, which counts as gta2city).
        images: folders of the teacher's source domain (GTA5 for gta2city, Cityscapes for city2gta).
        arch: the student's architecture, a key of :data:`gtacity.nets.ARCHS`; None = the
            ``init_from`` student's, else ``mobile_resnet_generator``.
        ngf, n_blocks: student size; None = the ``init_from`` student's, else half the teacher's
            width and its depth.
        upsample: the student's decoder (``transpose``, ``resize`` or ``bilinear``); None = the
            ``init_from`` student's, else the teacher's.
        steps: optimiser steps; the learning rate is constant for the first half, then decays
            linearly to zero.
        init_from: weights to start from (see :func:`read_init_source`): a distill run or its
            checkpoint, or a student generator file. A fine-tune of a student, with new losses,
            schedule and optimiser; None: a fresh student.

    Batch size, precision, device, workers, seed and cadence: see
    :class:`~gtacity.trainer.state.RunSettings`.
    """

    out: str
    teacher: str = ""
    images: tuple[str, ...] = ()
    arch: str | None = "mobile_resnet_generator"
    ngf: int | None = None
    n_blocks: int | None = None
    upsample: str | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    losses: DistillLosses = field(default_factory=DistillLosses)
    steps: int = 20000
    init_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        d = cls.known_fields(d)
        d["preprocess"] = Preprocess(**d.get("preprocess", {}))
        d["losses"] = DistillLosses(**d.get("losses", {}))
        d["images"] = tuple(d.get("images", ()))
        return cls(**d)


class SourceImages(UnpairedDataset):
    """Item ``i`` of epoch ``e``: image ``i`` of one domain, cropped and flipped as ``preprocess`` says.

    The random choices are a pure function of (seed, epoch, index), as in training, so a resumed
    run sees exactly the crops an uninterrupted one would.
    """

    def __init__(self, files: list[Path], preprocess: Preprocess, seed: int = 0):
        super().__init__(files, files, preprocess, seed)

    def __len__(self) -> int:
        return len(self.gta)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        return self._load(self.gta, index, np.random.default_rng([self.seed, epoch, index]))


@dataclass
class _Run:
    """The parts of a run the step loop works with."""

    cfg: DistillConfig
    distiller: Distiller
    prec: Precision
    progress: Progress
    dataset: SourceImages
    logger: RunLogger
    direction: str
    teacher_sha256: str
    device: torch.device


def distill(cfg: DistillConfig, resume: bool = False, progress_bar: bool = True,
            stop_after: int | None = None, steps: int | None = None) -> Path:
    """Run (or continue) a distillation run; returns the student file.

    Args:
        cfg: the run's settings. With ``resume`` only ``cfg.out`` is used: the run continues from
            ``<out>/checkpoints/latest.pt`` with its saved config, exactly where it stopped.
        stop_after: stop (with a checkpoint) after this many steps of this invocation.
        steps: with ``resume``, a new total for the run (at least the step it reached): a run
            that needs longer, or less, than planned. The learning rate follows the new total's
            schedule from there on (constant for its first half, then linear to 0), so a run
            lengthened or shortened while still in its constant half is the run that total gives.

    Raises:
        DataError: no images, a run already in ``out``, or a teacher that changed since the run began.
        CheckpointError: a teacher file that cannot be read.
    """
    run_dir = Path(cfg.out)
    state = read_checkpoint(run_dir) if resume else None
    if state is not None:
        cfg = DistillConfig.from_dict({**state["config"], "out": cfg.out, "steps": steps or state["config"]["steps"]})
    elif has_checkpoint(run_dir):
        raise DataError(f"{run_dir}: already holds a run; continue it with --resume or choose another --out")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    teacher, info = load_generator(cfg.teacher, map_location=device)
    direction = info.direction or "gta2city"
    sha = file_sha256(generator_path(cfg.teacher))
    if state is not None and state["teacher_sha256"] != sha:
        raise DataError(f"{cfg.teacher}: the teacher file changed since this run began; restore it or start a new run")
    src = read_init_source(Path(cfg.init_from), direction) if state is None and cfg.init_from else None
    if src is not None:  # what the user left open, the weights it starts from decide
        cfg = replace(cfg, arch=cfg.arch or src.info.arch, ngf=cfg.ngf or src.info.ngf,
                      n_blocks=cfg.n_blocks or src.info.n_blocks, upsample=cfg.upsample or src.info.upsample)
    cfg = replace(cfg, arch=cfg.arch or "mobile_resnet_generator")
    if cfg.losses.lambda_grid > 0:
        cfg.preprocess.check_spectrum_crops("--lambda-grid", "use larger crops or --lambda-grid 0")
    dataset = _dataset(cfg, direction)
    torch.manual_seed(cfg.seed)
    ngf, n_blocks = cfg.ngf or max(1, info.ngf // 2), cfg.n_blocks or info.n_blocks
    if cfg.arch not in ARCHS:
        raise DataError(f"unknown student --arch {cfg.arch!r}; choose from {', '.join(ARCHS)}")
    distiller = Distiller(teacher, cfg.arch, ngf, n_blocks, cfg.losses, upsample=cfg.upsample or info.upsample).to(device)
    prec = choose_precision(cfg.amp, device, hardware.cpu_capabilities())
    progress = _restore(distiller, prec, state) if state is not None else Progress()
    loaded = init_student(distiller, src) if src is not None else []
    if progress.step > cfg.steps:
        raise DataError(f"{run_dir}: the run is at step {progress.step}; --steps must be at least that")
    logger = RunLogger(run_dir)
    logger.start(cfg.to_dict(), resumed_at=progress.step if state else None, device=str(device),
                 precision=prec, command="distill")
    tqdm.write(f"teacher: {describe(info)}; student: {cfg.arch}, ngf {ngf}, {n_blocks} blocks, "
               f"{distiller.student.upsample} upsampling; "
               f"{len(dataset)} {_DOMAIN[direction]} images")
    if loaded:
        tqdm.write(f"initialised {', '.join(loaded)} from {cfg.init_from}")
    run = _Run(cfg, distiller, prec, progress, dataset, logger, direction, sha, device)
    stop = cfg.steps if stop_after is None else min(cfg.steps, progress.step + stop_after)
    _run_steps(run, stop, progress_bar)
    logger.close()
    student = run_dir / f"{direction}.safetensors"
    if progress.step == cfg.steps:
        tqdm.write(f"done: {cfg.steps} steps; student: {student}")
    else:
        tqdm.write(f"stopped at step {progress.step} of {cfg.steps}; continue with: gtacity distill --resume {run_dir}")
    return student


_ARCH_OPTIONS = "--arch / --ngf / --n-blocks / --upsample"


@dataclass(frozen=True)
class InitSource:
    """The weights a new run starts from (``--init-from``), read once: what its student is (arch,
    size, upsampling: the generator file's metadata) and the states of the nets it holds."""

    path: Path
    info: GeneratorInfo
    nets: dict[str, dict[str, torch.Tensor]]


def read_init_source(source: Path, direction: str) -> InitSource:
    """Read ``source``: a distill run folder or its checkpoint (the student, its feature projections
    and the discriminator, if it had one; the student's architecture from ``<run>/<direction>.safetensors``)
    or a generator file or bundled generator's name (the student alone: the projections start fresh).

    Raises:
        CheckpointError: a generator of the other direction, a training run's checkpoint, or a run
            without a student of this direction.
        DataError: no checkpoint at ``source``.
    """
    if not (source.is_dir() or source.suffix == ".pt"):
        state, info = read_generator_file(generator_path(source))
        if info.direction not in (None, direction):
            raise CheckpointError(f"{source}: a {info.direction} generator; this run distills {direction}")
        return InitSource(source, info, {"student": state})
    nets = read_checkpoint(source)["nets"]
    if "student" not in nets:
        raise CheckpointError(f"{source}: a training run's checkpoint, not a distill run's; pass one of its "
                              f"generator files (<run>/{direction}.safetensors) instead")
    run = source if source.is_dir() else source.parent.parent
    student = run / f"{direction}.safetensors"
    if not student.is_file():
        raise CheckpointError(f"{source}: no {direction} student in this run ({student} is missing); "
                              "pass a distill run of this direction or a student file")
    return InitSource(source, read_generator_file(student)[1], nets)


def init_student(d: Distiller, src: InitSource) -> list[str]:
    """Load ``src``'s weights (not optimiser state) into a new run's nets, each of which must fit;
    returns the names of those loaded (the discriminator only where both runs have one).

    Raises:
        CheckpointError: weights of another architecture than the new run's student.
    """
    loaded = []
    for name, net in (("student", d.student), ("projections", d.projections), ("D", d.D)):
        if net is not None and src.nets.get(name):
            load_fitting(net, src.nets[name], src.path, f"the {name}", _ARCH_OPTIONS)
            loaded.append(name)
    return loaded


def lr_factor(step: int, steps: int) -> float:
    """1 for the first half of the run, then linear to 0 at ``steps``."""
    half = steps / 2
    return 1.0 if step < half else max(0.0, (steps - step) / (steps - half))


def _run_steps(run: _Run, stop: int, show_bar: bool) -> None:
    """``for step: batch -> lr -> distill_step -> log -> sample -> checkpoint`` until ``stop``."""
    cfg, d, prec, progress, logger = run.cfg, run.distiller, run.prec, run.progress, run.logger
    per_epoch = len(run.dataset) // cfg.batch_size
    samples = torch.stack([run.dataset[(0, i)] for i in range(min(4, len(run.dataset)))]).to(run.device)
    sampler = ResumableSampler(len(run.dataset), cfg.seed, progress.epoch, progress.position)
    loader = _loader(run.dataset, sampler, cfg)
    bar = tqdm(total=cfg.steps, initial=progress.step, disable=not show_bar, unit="step", dynamic_ncols=True)
    while progress.step < stop:
        sampler.set_position(progress.epoch, progress.position)
        for batch in loader:
            lr = cfg.losses.lr * lr_factor(progress.step, cfg.steps)
            for opt in d.optimizers():
                for group in opt.param_groups:
                    group["lr"] = lr
            losses = distill_step(d, batch.to(run.device, non_blocking=True), prec)
            progress.step += 1
            progress.position += cfg.batch_size
            bar.update(1)
            last = progress.step == stop
            if progress.step % cfg.log_every == 0 or last:
                values = logger.scalars(progress.step, progress.epoch, lr, losses)
                bar.set_postfix({k: f"{values[k]:.3f}" for k in ("l1", "S_total")})
            if progress.step % cfg.sample_every == 0 or last:
                _samples(run, samples, lr)
            if progress.position >= per_epoch * cfg.batch_size:
                progress.epoch, progress.position = progress.epoch + 1, 0
            if progress.step % cfg.checkpoint_every == 0 or last:
                _save(run)
            if last:
                break
    bar.close()


def _dataset(cfg: DistillConfig, direction: str) -> SourceImages:
    if not cfg.images:
        raise DataError(f"no images: pass --images DIR with {_DOMAIN[direction]} images (the teacher translates {direction})")
    files = [p for root in cfg.images for p in domain_files(root, _DOMAIN[direction])]
    if len(files) < cfg.batch_size:
        raise DataError(f"{len(files)} images are too few for batch size {cfg.batch_size}")
    return SourceImages(files, cfg.preprocess, seed=cfg.seed)


def _loader(dataset: SourceImages, sampler: ResumableSampler, cfg: DistillConfig) -> DataLoader:
    # Spawned, persistent workers, as in training (OpenCV deadlocks in forked children).
    workers = {"multiprocessing_context": "spawn", "persistent_workers": True} if cfg.workers else {}
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                      num_workers=cfg.workers, **workers)


@torch.no_grad()
def _samples(run: _Run, source: torch.Tensor, lr: float) -> None:
    """Sample grid (rows: input | teacher | student) and the student's PSNR to the teacher on it."""
    target, _ = run.distiller.teach(source, run.prec)
    student, _ = run.distiller.translate(source, run.prec)
    student = student.float()
    run.logger.grid(run.progress.step, torch.stack([source, target, student], 1).flatten(0, 1), columns=3)
    value = float(psnr(student.clamp(-1, 1) * 0.5 + 0.5, target * 0.5 + 0.5).mean())
    run.logger.scalars(run.progress.step, run.progress.epoch, lr, {"psnr_samples": torch.tensor(value)})


def _save(run: _Run) -> None:
    """``checkpoints/latest.pt`` (everything to resume exactly) and the student file, written atomically."""
    d, cfg, step = run.distiller, run.cfg, run.progress.step
    state = {
        "config": cfg.to_dict(),
        "progress": vars(run.progress).copy(),
        "teacher_sha256": run.teacher_sha256,
        "nets": {"student": d.student.state_dict(), "projections": d.projections.state_dict(),
                 "D": d.D.state_dict() if d.D is not None else {}},
        "opt_G": d.opt_G.state_dict(),
        "opt_D": d.opt_D.state_dict() if d.opt_D is not None else {},
        "scaler": run.prec.scaler.state_dict() if run.prec.scaler else None,
        "rng": {"torch": torch.get_rng_state()},
    }
    write_checkpoint(Path(cfg.out) / "checkpoints", state)
    extra = {"training_step": str(step), "distilled_from": Path(cfg.teacher).name}
    for path in (step_generator_path(cfg.out, step, run.direction), Path(cfg.out) / f"{run.direction}.safetensors"):
        save_generator(d.student, path, direction=run.direction,
                       trained_resolution=cfg.preprocess.crop_size, extra=extra)


def _restore(d: Distiller, prec: Precision, state: dict) -> Progress:
    d.student.load_state_dict(state["nets"]["student"])
    d.projections.load_state_dict(state["nets"]["projections"])
    if d.D is not None:
        d.D.load_state_dict(state["nets"]["D"])
        d.opt_D.load_state_dict(state["opt_D"])
    d.opt_G.load_state_dict(state["opt_G"])
    if prec.scaler and state["scaler"]:
        prec.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    return Progress(**state["progress"])
