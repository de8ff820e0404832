"""Train a segmenter on images with label maps, and score it with the official Cityscapes score.

Read :func:`train_segmenter` top to bottom: pair images with labels, build the recipe's net, maybe
resume, then ``for step: batch -> lr -> cross-entropy step -> log -> checkpoint``. The run folder:

    segmenter.safetensors   the trained net; its metadata holds the recipe (``load_segmenter``)
    checkpoints/latest.pt   everything to resume exactly (net, optimiser, scaler, RNG, data position)
    metrics.jsonl, events.* the loss per logged step; TensorBoard reads the folder
    scores.json             written by :func:`score_segmenter`'s callers (``gtacity eval segmentation``)

The loss is the mean cross-entropy over labelled pixels (train ID 255 ignored).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gtacity import hardware
from gtacity.cityscapes import IGNORE, N_IDS, MiouScores, confusion_matrix, read_label_map, scores, to_label_ids
from gtacity.files import written_whole
from gtacity.images import decode_rgb
from gtacity.trainer.data import DataError, ResumableSampler
from gtacity.trainer.logs import RunLogger
from gtacity.trainer.seg_data import LabelledImages, cityscapes_pairs, labelled_pairs, resize_to_width, to_input
from gtacity.trainer.seg_recipes import RECIPES, Recipe, build_segmenter
from gtacity.trainer.state import Progress, read_checkpoint
from gtacity.trainer.step import Precision, choose_precision

FORMAT = "gtacity-segmenter"


@dataclass(frozen=True, kw_only=True)
class SegmenterSettings:
    """How a segmenter is trained besides its data and recipe (shared by the evaluation's config).

    Attributes:
        backbone_weights: ImageNet backbone file for the DeepLabV3 recipes (None: torchvision's
            cache if it has the file, else from scratch).
        seed: seeds the net's initialisation and every crop, scale and flip.
        amp: ``auto`` (bf16 where native on the CPU, bf16/fp16 on CUDA), ``bf16``, ``fp16``, ``off``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes (0 = load in the training process).
        checkpoint_every, log_every: in optimiser steps.
    """

    backbone_weights: str | None = None
    seed: int = 0
    amp: str = "auto"
    device: str = "auto"
    workers: int = 0
    checkpoint_every: int = 500
    log_every: int = 20

    def settings(self) -> dict:
        """These fields only, by name (to build another config with the same settings)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SegmenterSettings)}


@dataclass(frozen=True, kw_only=True)
class SegmentConfig(SegmenterSettings):
    """Everything that defines a segmenter's training run; saved in every checkpoint.

    Attributes:
        out: run folder.
        train: images (a GTA5 or Cityscapes tree, or any folder with ``labels``).
        labels: folder of label maps for ``train`` (None: the tree's own).
        split: the split of a Cityscapes ``train`` tree.
        recipe: how the segmenter is trained (:mod:`gtacity.trainer.seg_recipes`).

    Seed, precision, device and cadence: see :class:`SegmenterSettings`.
    """

    out: str
    train: str = ""
    labels: str | None = None
    split: str = "train"
    recipe: Recipe = field(default_factory=lambda: RECIPES["cpu-tiny"])

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "SegmentConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        return cls(**{**d, "recipe": Recipe.from_dict(d["recipe"])})


@dataclass
class SegmenterRun:
    """What :func:`train_segmenter` leaves: the run folder, its net, the step reached, where the
    net's starting weights came from, and the number of training images."""

    run_dir: Path
    net: nn.Module
    step: int
    origin: str
    n_images: int
    precision: Precision
    config: SegmentConfig

    @property
    def done(self) -> bool:
        """Whether the run has made all its recipe's steps."""
        return self.step == self.config.recipe.steps


def train_segmenter(cfg: SegmentConfig, resume: bool = False, progress_bar: bool = True,
                    stop_after: int | None = None) -> SegmenterRun:
    """Train (or continue training) a segmenter; ``<out>/segmenter.safetensors`` holds the result.

    Args:
        cfg: the run's settings. With ``resume`` only ``cfg.out`` is used: the run continues from
            its checkpoint with its saved settings, exactly as if it had never stopped.
        stop_after: stop (with a checkpoint) after this many steps of this call.

    Raises:
        DataError: unusable images or labels, a run already in ``out`` (without ``resume``).
    """
    run_dir = Path(cfg.out)
    state = read_checkpoint(run_dir) if resume else None
    if state is not None:
        cfg = SegmentConfig.from_dict({**state["config"], "out": cfg.out})
    elif (run_dir / "checkpoints" / "latest.pt").exists():
        raise DataError(f"{run_dir}: already holds a segmenter run; continue it with --resume or choose another --out")
    rec = cfg.recipe
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    dataset = LabelledImages(labelled_pairs(cfg.train, cfg.labels, cfg.split), rec, cfg.seed)
    torch.manual_seed(cfg.seed)
    net, origin = build_segmenter(rec, None if state else cfg.backbone_weights)
    net = net.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
    opt = _optimizer(rec, net)
    prec = choose_precision(cfg.amp, device, hardware.cpu_capabilities())
    progress = Progress()
    if state is not None:
        origin, progress = state["origin"], _restore(net, opt, prec, state)
    logger = RunLogger(run_dir)
    logger.start(cfg.to_dict(), resumed_at=progress.step if state else None, device=str(device), precision=prec,
                 command="eval segmentation")
    tqdm.write(f"segmenter {rec.name} ({origin}); {len(dataset.pairs)} labelled images from {cfg.train}")
    stop = rec.steps if stop_after is None else min(rec.steps, progress.step + stop_after)
    _run_steps(cfg, net, opt, prec, progress, dataset, logger, origin, device, stop, progress_bar)
    logger.close()
    return SegmenterRun(run_dir, net, progress.step, origin, len(dataset.pairs), prec, cfg)


def _optimizer(rec: Recipe, net: nn.Module) -> torch.optim.Optimizer:
    if rec.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=rec.lr, momentum=0.9, weight_decay=rec.weight_decay)
    if rec.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=rec.lr, weight_decay=rec.weight_decay)
    raise DataError(f"unknown optimizer {rec.optimizer!r} in recipe {rec.name}; use sgd or adam")


def _run_steps(cfg, net, opt, prec, progress, dataset, logger, origin, device, stop, show_bar) -> None:
    """``for step: batch -> lr -> cross-entropy step -> log -> checkpoint`` until ``stop``."""
    rec = cfg.recipe
    per_epoch = len(dataset) // rec.batch_size
    sampler = ResumableSampler(len(dataset), cfg.seed, progress.epoch, progress.position)
    workers = {"multiprocessing_context": "spawn", "persistent_workers": True} if cfg.workers else {}
    loader = DataLoader(dataset, batch_size=rec.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda", **workers)
    channels = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    bar = tqdm(total=rec.steps, initial=progress.step, disable=not show_bar, unit="step", dynamic_ncols=True)
    net.train()
    while progress.step < stop:
        sampler.set_position(progress.epoch, progress.position)
        for images, labels in loader:
            lr = rec.lr_at(progress.step)
            for group in opt.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True, memory_format=channels)  # (B, 3, h, w)
            labels = labels.to(device, non_blocking=True)  # (B, h, w), 255 = ignore
            with prec.autocast():
                logits = net(images)  # (B, 19, h, w)
            # Summed over labelled pixels, then divided: a crop with no labelled pixel adds 0, not NaN.
            loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
            loss = loss / (labels != IGNORE).sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            prec.backward(loss)
            prec.step(opt)
            if prec.scaler:
                prec.scaler.update()
            progress.step += 1
            progress.position += rec.batch_size
            bar.update(1)
            last = progress.step == stop
            if progress.step % cfg.log_every == 0 or last:
                values = logger.scalars(progress.step, progress.epoch, lr, {"cross_entropy": loss.detach()})
                bar.set_postfix(cross_entropy=f"{values['cross_entropy']:.3f}")
            if progress.position >= per_epoch * rec.batch_size:
                progress.epoch, progress.position = progress.epoch + 1, 0
            if progress.step % cfg.checkpoint_every == 0 or last:
                _save(cfg, net, opt, prec, progress, origin)
            if last:
                break
    bar.close()


def _save(cfg: SegmentConfig, net, opt, prec: Precision, progress: Progress, origin: str) -> None:
    """``checkpoints/latest.pt`` and ``segmenter.safetensors``, each written whole or not at all."""
    state = {
        "config": cfg.to_dict(), "progress": vars(progress).copy(), "origin": origin,
        "nets": {"segmenter": net.state_dict()}, "opt": opt.state_dict(),
        "scaler": prec.scaler.state_dict() if prec.scaler else None,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
    }
    with written_whole(Path(cfg.out) / "checkpoints" / "latest.pt") as partial:
        torch.save(state, partial)
    save_segmenter(net, Path(cfg.out) / "segmenter.safetensors", cfg.recipe,
                   {"training_step": str(progress.step), "origin": origin, "trained_on": str(cfg.train),
                    "seed": str(cfg.seed)})


def _restore(net, opt, prec: Precision, state: dict) -> Progress:
    net.load_state_dict(state["nets"]["segmenter"])
    opt.load_state_dict(state["opt"])
    if prec.scaler and state["scaler"]:
        prec.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return Progress(**state["progress"])


def save_segmenter(net: nn.Module, path: str | Path, rec: Recipe, extra: dict[str, str] | None = None) -> Path:
    """Write ``net`` as safetensors with the recipe in its metadata (what :func:`load_segmenter` reads)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": "1", "recipe": json.dumps(rec.to_dict()), **(extra or {})}
    with written_whole(path) as partial:
        save_file(tensors, str(partial), metadata=metadata)
    return Path(path)


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Recipe, dict[str, str]]:
    """A segmenter file -> (net in eval mode, its recipe, its metadata).

    Raises:
        DataError: not a readable gtacity segmenter file.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise DataError(f"{path}: not a readable segmenter file ({e})") from None
    if metadata.get("format") != FORMAT:
        raise DataError(f"{path}: not a gtacity segmenter file (written by gtacity eval segmentation)")
    rec = Recipe.from_dict(json.loads(metadata["recipe"]))
    net, _ = build_segmenter(rec)
    net.load_state_dict(state)
    return net.to(device).eval(), rec, metadata


@torch.no_grad()
def predict(net: nn.Module, image: np.ndarray, rec: Recipe, precision: Precision | None = None,
            size: tuple[int, int] | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W)`` uint8 train IDs, predicted at the recipe's width.

    The logits are upsampled bilinearly to the image's size (or ``size`` = (height, width), e.g.
    the ground truth's when the image was scaled down) before the argmax.
    """
    net.eval()
    device = next(net.parameters()).device
    x = to_input(resize_to_width(image, rec.eval_width))[None].to(device)  # (1, 3, h, w)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with (precision or Precision(device.type)).autocast():
        logits = net(x)  # (1, 19, h, w)
    logits = F.interpolate(logits.float(), size=size or image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


def score_segmenter(net: nn.Module, rec: Recipe, val: str | Path, split: str = "val",
                    precision: Precision | None = None, progress_bar: bool = True) -> MiouScores:
    """The official Cityscapes scores of ``net`` on the ``split`` of the Cityscapes tree ``val``.

    Every frame with a ``*_gtFine_labelIds.png`` is predicted at the ground truth's size (whatever
    the image's) and compared with it as ``gtacity eval miou`` compares a prediction file with it.
    """
    pairs = cityscapes_pairs(val, split)
    total = np.zeros((N_IDS, N_IDS), np.uint64)
    for image_path, label_path in tqdm(pairs, desc="scoring", unit="image", disable=not progress_bar,
                                       dynamic_ncols=True):
        image = decode_rgb(image_path)
        if image is None:
            raise DataError(f"{image_path}: not a readable image")
        gt = read_label_map(label_path)
        prediction = to_label_ids(predict(net, image, rec, precision, size=gt.shape))
        total += confusion_matrix(gt, prediction, where=str(label_path))
    return scores(total, len(pairs))
