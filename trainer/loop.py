"""The training loop: data, schedule, mixed precision, data parallelism, checkpoints, logging.

Read :func:`train` top to bottom: set up processes and device, build data and nets, maybe resume,
then ``for step: batch -> lr -> train_step -> log -> sample -> checkpoint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtacity import hardware
from gtacity.trainer.data import DataError, Preprocess, ResumableSampler, UnpairedDataset, domain_files, unaligned_files
from gtacity.trainer.gridwatch import VISIBLE, grid_score, warning, watch_frames
from gtacity.trainer.logs import RunLogger
from gtacity.trainer.recipes import Pace, cpu_advice
from gtacity.trainer.state import (
    Progress,
    RunSettings,
    has_checkpoint,
    init_from,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from gtacity.trainer.step import CycleGAN, Precision, StepConfig, choose_precision, train_step


@dataclass(frozen=True)
class TrainConfig(RunSettings):
    """Everything that defines a run; saved inside every checkpoint and printed at start.

    Attributes:
        out: run folder (checkpoints, generator files, TensorBoard logs, samples, metrics.jsonl).
        gta, city: folders of each domain (raw GTA5 / Cityscapes trees or plain image folders).
        data: a CycleGAN unaligned folder (trainA/trainB/...) instead of ``gta``/``city``.
        gta_side: which letter of ``data`` (and of an official ``init_from`` run) is GTA5; None reads
            it from the file names and refuses to guess when they don't tell.
        ngf, n_blocks, ndf: network sizes (paper: 64, 9, 64).
        upsample: the generators' decoder, ``transpose`` (the paper's), or ``resize`` / ``bilinear``
            (x2 nearest or bilinear, then a 3x3 conv; :class:`gtacity.nets.ResizeConv2d`).
        epochs, epochs_decay: epochs at the initial lr, then epochs of linear decay to zero.
        workers: DataLoader worker processes (two here; batch size, precision, device, seed and
            cadence: see :class:`~gtacity.trainer.state.RunSettings`).
        init_from: weights to start from (a gtacity run or checkpoint, a folder of generator files
            named by direction, or an official run folder).
    """

    out: str
    gta: tuple[str, ...] = ()
    city: tuple[str, ...] = ()
    data: str | None = None
    gta_side: str | None = None
    ngf: int = 64
    n_blocks: int = 9
    ndf: int = 64
    upsample: str = "transpose"
    preprocess: Preprocess = field(default_factory=Preprocess)
    step: StepConfig = field(default_factory=StepConfig)
    epochs: int = 100
    epochs_decay: int = 100
    workers: int = field(default=2, kw_only=True)
    init_from: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = cls.known_fields(d)
        d["preprocess"] = Preprocess(**d.get("preprocess", {}))
        step = dict(d.get("step", {}))
        step.setdefault("grid_term", "phase")  # runs from before the choice trained with the phase means
        d["step"] = StepConfig(**step)
        d["gta"], d["city"] = tuple(d.get("gta", ())), tuple(d.get("city", ()))
        return cls(**d)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, epochs_decay: int) -> float:
    """The paper's schedule: constant for ``epochs``, then linear to zero over ``epochs_decay``."""
    if epochs_decay <= 0:
        return 1.0
    done = step / steps_per_epoch
    return max(0.0, 1.0 - max(0.0, done - epochs) / epochs_decay)


@dataclass
class TrainResult:
    """What :func:`train` leaves: the run folder, the step it stopped at and the trained nets; when the
    run finished (rank 0), ``files``: its training images per domain (``"gta"``, ``"city"``)."""

    run_dir: Path
    step: int
    model: CycleGAN
    files: dict[str, list[Path]] = field(default_factory=dict)


def train(cfg: TrainConfig, resume: bool = False, progress_bar: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Run (or continue) a training run.

    Args:
        cfg: the run's settings. With ``resume`` only ``cfg.out`` is used: the run continues from
            ``<out>/checkpoints/latest.pt`` with its saved config, exactly where it stopped.
        stop_after: stop (with a checkpoint) after this many steps of this invocation, e.g. to fit
            a time-boxed job; ``resume`` continues later as if nothing had happened.

    Under ``torchrun`` each process trains on its own share of the data and gradients are averaged.
    """
    rank, world, device = _setup_processes(cfg.device)
    run_dir = Path(cfg.out)
    state = read_checkpoint(run_dir) if resume else None
    if state is not None:
        cfg = TrainConfig.from_dict({**state["config"], "out": cfg.out})
    elif has_checkpoint(run_dir):
        raise DataError(f"{run_dir}: already holds a run; continue it with --resume or choose another --out")
    _check_grid_term(cfg)
    dataset, gta_side = _dataset(cfg)
    spe = ResumableSampler.per_rank(len(dataset), world) // cfg.batch_size
    if spe == 0:
        raise DataError(f"{len(dataset)} images per domain are too few for batch size {cfg.batch_size} x {world} processes")

    torch.manual_seed(cfg.seed)
    model = CycleGAN(cfg.ngf, cfg.n_blocks, cfg.ndf, cfg.step, seed=cfg.seed * 1000 + rank,
                     upsample=cfg.upsample).to(device)
    prec = _precision(cfg.amp, device)
    progress = restore(model, prec, state, device) if state is not None else Progress()
    if state is None and cfg.init_from:
        loaded = init_from(model, Path(cfg.init_from), gta_side)
        _print(rank, f"initialised {', '.join(loaded)} from {cfg.init_from}")
    _broadcast_parameters(model)

    logger = RunLogger(run_dir, enabled=rank == 0)
    logger.start(cfg.to_dict(), resumed_at=progress.step if state else None, device=str(device), precision=prec)
    if device.type == "cpu" and (advice := cpu_advice(cfg.ngf, cfg.n_blocks, cfg.preprocess.crop_size)):
        _print(rank, advice)
    total = (cfg.epochs + cfg.epochs_decay) * spe
    stop = total if stop_after is None else min(total, progress.step + stop_after)
    run = _Run(cfg, model, prec, progress, dataset, logger, spe, rank, world, device)
    _run_steps(run, total, stop, progress_bar)
    logger.close()
    if progress.step == total:
        _print(rank, f"done: {total} steps; generators: {run_dir}/gta2city.safetensors, {run_dir}/city2gta.safetensors")
    else:
        _print(rank, f"stopped at step {progress.step} of {total}; continue with: {_resume_command(world, run_dir)}")
    if dist.is_initialized():
        dist.destroy_process_group()
    finished = progress.step == total and rank == 0  # what the trained generators' int8 models are calibrated on
    return TrainResult(run_dir, progress.step, model,
                       {"gta": list(dataset.gta), "city": list(dataset.city)} if finished else {})


def _resume_command(world: int, run_dir: Path) -> str:
    """The command that continues this run the way it was launched (torchrun's process counts)."""
    if world == 1:
        return f"gtacity train --resume {run_dir}"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    nodes = f"--nnodes {world // per_node} " if per_node != world else ""
    return f"torchrun {nodes}--nproc-per-node {per_node} -m gtacity train --resume {run_dir}"


@dataclass
class _Run:
    """The parts of a run the step loop works with."""

    cfg: TrainConfig
    model: CycleGAN
    prec: Precision
    progress: Progress
    dataset: UnpairedDataset
    logger: RunLogger
    steps_per_epoch: int
    rank: int
    world: int
    device: torch.device


def _run_steps(run: _Run, total: int, stop: int, show_bar: bool) -> None:
    """``for step: batch -> lr -> train_step -> log -> sample -> checkpoint`` until ``stop``."""
    cfg, model, prec, progress, logger = run.cfg, run.model, run.prec, run.progress, run.logger
    dataset, rank, world, device, spe = run.dataset, run.rank, run.world, run.device, run.steps_per_epoch
    samples = _sample_batch(dataset, device)
    watch = {"gta2city": watch_frames(dataset.gta, cfg.preprocess),
             "city2gta": watch_frames(dataset.city, cfg.preprocess)} if rank == 0 else {}
    bar = tqdm(total=total, initial=progress.step, disable=not show_bar or rank != 0, unit="step",
               dynamic_ncols=True)
    sampler = ResumableSampler(len(dataset), cfg.seed, progress.epoch, progress.position, rank, world)
    loader = _loader(dataset, sampler, cfg, device)
    pace = Pace(progress.step, total)  # the whole run's duration, even when this part stops early
    while progress.step < stop:
        sampler.set_position(progress.epoch, progress.position)
        for batch in loader:
            lr = cfg.step.lr * lr_factor(progress.step, spe, cfg.epochs, cfg.epochs_decay)
            for opt in (model.opt_G, model.opt_D):
                for group in opt.param_groups:
                    group["lr"] = lr
            losses = train_step(model, batch["gta"].to(device, non_blocking=True),
                                batch["city"].to(device, non_blocking=True), prec)
            progress.step += 1
            progress.position += cfg.batch_size
            bar.update(1)
            if (eta := pace.step_done()) and rank == 0:
                bar.write(eta)
            last = progress.step == stop
            if progress.step % cfg.log_every == 0 or last:
                values = logger.scalars(progress.step, progress.epoch, lr, losses)
                bar.set_postfix({k: f"{values[k]:.3f}" for k in ("G_total", "D_city", "D_gta")})
            if progress.step % cfg.sample_every == 0 or last:
                logger.samples(progress.step, model, samples, prec)
                _watch_grid(run, watch, progress.step, bar)
            if progress.position >= spe * cfg.batch_size:
                progress.epoch, progress.position = progress.epoch + 1, 0
            if progress.step % cfg.checkpoint_every == 0 or last:
                save_checkpoint(Path(cfg.out), model, prec, progress, cfg.to_dict(), cfg.preprocess.crop_size)
            if last:
                break
    bar.close()


def _watch_grid(run: _Run, watch: dict[str, list], step: int, bar: tqdm) -> None:
    """Score how much grid each generator adds to whole training frames (``trainer/gridwatch.py``):
    ``artifacts/<direction>`` in ``metrics.jsonl`` and TensorBoard, a printed line past the visible bar."""
    scores = {}
    for direction, frames in watch.items():
        net = run.model.G_gta2city if direction == "gta2city" else run.model.G_city2gta
        score = grid_score(net, frames, run.prec, run.device)
        if score is None:
            continue
        scores[direction] = round(score, 4)
        if score > VISIBLE:
            bar.write(warning(step, direction, score, len(frames)))
    if scores:
        run.logger.results(step, scores, prefix="artifacts")


def _check_grid_term(cfg: TrainConfig) -> None:
    """The spectral grid term measures each training crop's spectrum: crops under 16 px have none to measure."""
    if cfg.step.lambda_grid > 0 and cfg.step.grid_term == "spectral":
        cfg.preprocess.check_spectrum_crops("--grid-term spectral", "use larger crops or --grid-term phase")


def _dataset(cfg: TrainConfig) -> tuple[UnpairedDataset, str | None]:
    """The training set, and which side (A/B) is GTA5 where the data or the user says so."""
    gta_side = cfg.gta_side
    if cfg.data:
        if cfg.gta or cfg.city:
            raise DataError("give either --data (an unaligned trainA/trainB folder) or --gta and --city, not both")
        gta, city, gta_side = unaligned_files(cfg.data, cfg.gta_side)
    elif cfg.gta and cfg.city:
        gta = [p for root in cfg.gta for p in domain_files(root, "gta")]
        city = [p for root in cfg.city for p in domain_files(root, "city")]
    else:
        raise DataError("no training data: pass --gta DIR and --city DIR, or --data DIR (cityscapes2gta layout)")
    return UnpairedDataset(gta, city, cfg.preprocess, seed=cfg.seed), gta_side



def _loader(dataset, sampler: ResumableSampler, cfg: TrainConfig, device) -> DataLoader:
    # Spawned, not forked: OpenCV's thread pool deadlocks in a child forked after the parent used it
    # (seen here: cv2.setNumThreads hangs in pthread_cond_destroy). Persistent, so spawning is paid once.
    workers = {"multiprocessing_context": "spawn", "persistent_workers": True} if cfg.workers else {}
    return DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, num_workers=cfg.workers,
        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if cfg.workers else None, **workers,
    )


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # each worker decodes one image at a time; don't fight the training threads


def _sample_batch(dataset: UnpairedDataset, device) -> dict[str, torch.Tensor]:
    """A fixed set of pairs (epoch 0, first indices) so sample grids are comparable across steps."""
    items = [dataset[(0, i)] for i in range(min(4, len(dataset)))]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("gta", "city")}


def _precision(amp: str, device: torch.device) -> Precision:
    # bf16 only where the CPU has it in hardware: emulated bf16 made a step 17x slower (AVX2 EPYC).
    return choose_precision(amp, device, hardware.cpu_capabilities())


def _setup_processes(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if world == 1:
        return 0, 1, torch.device("cuda" if use_cuda else "cpu") if device == "auto" else torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), world, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def _broadcast_parameters(model: CycleGAN) -> None:
    """Start every replica from rank 0's weights (their inits differ by seed)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def _print(rank: int, message: str) -> None:
    if rank == 0:
        tqdm.write(message)

