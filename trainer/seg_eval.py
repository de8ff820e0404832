"""``gtacity eval segmentation``: CyCADA's pixel-level protocol in one call.

Train a segmenter recipe on images with their labels (translated GTA5 frames with their GTA5 label
maps), score it on Cityscapes with the official score, and with ``compare`` do the same, with the
same recipe, seed and steps, on other images with the same labels (the raw GTA5 frames), then put
the two side by side. The field's numbers for this protocol (Hoffman et al. 2018, 19 classes,
Cityscapes val): DRN-26 source only 21.7 mIoU, CycleGAN-translated 37.0, oracle 67.4.

The output folder::

    OUT/segmentation.json   the report (``SegmentationReport.to_json``)
    OUT/train/              the segmenter run on ``train`` (:mod:`gtacity.trainer.segment`) + scores.json
    OUT/compare/            the same on ``compare``, when given

From Python::

    from gtacity.trainer.seg_eval import SegEvalConfig, evaluate_segmentation

    report = evaluate_segmentation(SegEvalConfig(train="gta5_city/", val="cityscapes/", compare="gta5/",
                                                 out="runs/seg"))
    print(report.format(), report.train.scores.miou)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gtacity.cityscapes import MiouScores, scores
from gtacity.files import write_json
from gtacity.trainer.data import DataError
from gtacity.trainer.logs import RunLogger
from gtacity.trainer.seg_data import cityscapes_pairs
from gtacity.trainer.seg_recipes import Recipe, recipe
from gtacity.trainer.segment import SegmentConfig, SegmenterSettings, score_segmenter, train_segmenter


@dataclass(frozen=True, kw_only=True)
class SegEvalConfig(SegmenterSettings):
    """One ``gtacity eval segmentation`` job.

    Attributes:
        train: images to train on (a GTA5 or Cityscapes tree, or a folder with ``labels``).
        val: a Cityscapes tree (``leftImg8bit/``, ``gtFine/``) to score on.
        out: folder of the runs and the report.
        labels: label maps of ``train`` (and of ``compare``) when they are not in a tree beside them.
        compare: other images with the same labels, trained on in the same way (the raw frames).
        recipe: a recipe name of :data:`gtacity.trainer.seg_recipes.RECIPES`, or a :class:`Recipe`;
            ``auto`` is ``deeplabv3-resnet50`` on CUDA, ``cpu-tiny`` elsewhere.
        steps: replaces the recipe's number of steps.
        val_split: the split of ``val`` scored (``val``; without split folders the whole tree).

    Seed, backbone weights, precision, device and cadence: see
    :class:`~gtacity.trainer.segment.SegmenterSettings`.
    """

    train: str
    val: str
    out: str = "runs/eval-segmentation"
    labels: str | None = None
    compare: str | None = None
    recipe: str | Recipe = "auto"
    steps: int | None = None
    val_split: str = "val"

    def resolved_recipe(self) -> Recipe:
        """The recipe this job trains, with ``steps`` applied."""
        if isinstance(self.recipe, Recipe):
            return dataclasses.replace(self.recipe, steps=self.steps or self.recipe.steps)
        name = self.recipe
        if name == "auto":
            import torch

            cuda = torch.cuda.is_available() if self.device == "auto" else self.device.startswith("cuda")
            name = "deeplabv3-resnet50" if cuda else "cpu-tiny"
        return recipe(name, steps=self.steps)


@dataclass(frozen=True)
class RunResult:
    """One trained and scored segmenter: what it learnt from and how it scored."""

    name: str
    images: str
    n_images: int
    steps: int
    origin: str
    segmenter: str
    scores: MiouScores

    def to_json(self) -> dict:
        """The scores' JSON (``n_images``: frames scored) with what the segmenter learnt from."""
        return {"images": self.images, "n_train_images": self.n_images, "steps": self.steps,
                "weights_origin": self.origin, "segmenter": self.segmenter, **self.scores.to_json()}


@dataclass(frozen=True)
class SegmentationReport:
    """The scores of the segmenter trained on ``train`` and, with ``compare``, of the other one."""

    recipe: Recipe
    seed: int
    val: str
    train: RunResult
    compare: RunResult | None = None

    def difference(self) -> dict[str, float]:
        """Class name -> IoU(train) - IoU(compare), NaN where either is NaN; ``{}`` without compare."""
        if self.compare is None:
            return {}
        return {k: v - self.compare.scores.classes[k] for k, v in self.train.scores.classes.items()}

    def to_json(self) -> dict:
        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        data = {"kind": "segmentation", "recipe": self.recipe.to_dict(), "seed": self.seed, "val": self.val,
                "train": self.train.to_json(), "compare": self.compare.to_json() if self.compare else None}
        if self.compare:
            data["difference"] = {k: clean(v) for k, v in self.difference().items()}
            data["miou_difference"] = clean(self.train.scores.miou - self.compare.scores.miou)
        return data

    def format(self) -> str:
        """The class IoUs in percent; with compare, both columns and their difference."""
        head = (f"segmenter {self.recipe.name}, {self.train.steps} steps, seed {self.seed}, {self.train.origin}; "
                f"scored on {self.train.scores.n_images} frames of {self.val}")
        if self.compare is None:
            return f"{head}\ntrained on {self.train.images} ({self.train.n_images} images)\n{self.train.scores.format()}"
        a, b = self.train.scores, self.compare.scores
        lines = [head, f"train:   {self.train.images} ({self.train.n_images} images)",
                 f"compare: {self.compare.images} ({self.compare.n_images} images)",
                 f"{'class':<14} {'train':>6} {'compare':>8} {'diff':>6}"]
        for name, diff in self.difference().items():
            lines.append(f"{name:<14} {_pct(a.classes[name]):>6} {_pct(b.classes[name]):>8} {_signed(diff):>6}")
        for label, x, y in (("mIoU", a.miou, b.miou), ("category mIoU", a.category_miou, b.category_miou),
                            ("pixel acc.", a.pixel_accuracy, b.pixel_accuracy), ("fwIoU", a.fwiou, b.fwiou)):
            lines.append(f"{label:<14} {_pct(x):>6} {_pct(y):>8} {_signed(x - y):>6}")
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def _signed(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:+.1f}"


def evaluate_segmentation(cfg: SegEvalConfig, resume: bool = False, progress_bar: bool = True) -> SegmentationReport:
    """Train the recipe on ``cfg.train`` (and ``cfg.compare``), score on ``cfg.val``, write the report.

    Args:
        resume: continue the runs in ``cfg.out`` exactly where they stopped (a finished, scored run
            is not trained again); they must have been started with the same settings.

    Raises:
        DataError: unusable data, a run in ``out`` without ``resume``, or settings that differ from
            the runs being resumed.
    """
    rec = cfg.resolved_recipe()
    out = Path(cfg.out)
    settings = json.loads(json.dumps({**dataclasses.asdict(cfg), "recipe": rec.to_dict()}))  # as saved
    _check_settings(out, settings, resume)
    cityscapes_pairs(cfg.val, cfg.val_split)  # a --val that cannot be scored fails now, not after training
    results = {}
    for name, images in (("train", cfg.train), ("compare", cfg.compare)):
        if images:
            results[name] = _train_and_score(cfg, rec, name, images, resume, progress_bar)
    report = SegmentationReport(rec, cfg.seed, cfg.val, results["train"], results.get("compare"))
    write_json(out / "segmentation.json", report.to_json())
    return report


def _check_settings(out: Path, settings: dict, resume: bool) -> None:
    path = out / "settings.json"
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        changed = [k for k in settings if k not in ("out", "workers") and saved.get(k) != settings[k]]
        if changed:
            was = repr(saved.get(changed[0]))
            raise DataError(f"{out}: was started with another {changed[0]}{f' ({was})' if len(was) < 60 else ''}; "
                            "resume with the same settings or choose another --out")
    elif not resume and any((out / run / "checkpoints" / "latest.pt").exists() for run in ("train", "compare")):
        raise DataError(f"{out}: already holds segmenter runs; continue them with --resume or choose another --out")
    write_json(path, settings)


def _train_and_score(cfg: SegEvalConfig, rec: Recipe, name: str, images: str, resume: bool,
                     progress_bar: bool) -> RunResult:
    run_dir = Path(cfg.out) / name
    scores_file = run_dir / "scores.json"
    if resume and scores_file.is_file():
        saved = json.loads(scores_file.read_text())
        tqdm.write(f"{name}: already trained and scored ({run_dir})")
        return _result_from_json(name, saved)
    seg_cfg = SegmentConfig(out=str(run_dir), train=images, labels=cfg.labels, recipe=rec, **cfg.settings())
    resuming = resume and (run_dir / "checkpoints" / "latest.pt").exists()
    run = train_segmenter(seg_cfg, resume=resuming, progress_bar=progress_bar)
    result = RunResult(name, images, run.n_images, run.step, run.origin, str(run_dir / "segmenter.safetensors"),
                       score_segmenter(run.net, rec, cfg.val, cfg.val_split, run.precision, progress_bar))
    logged = {"miou": result.scores.miou, "pixel_accuracy": result.scores.pixel_accuracy, "fwiou": result.scores.fwiou}
    RunLogger(run_dir).results(run.step, {k: v for k, v in logged.items() if not math.isnan(v)})
    write_json(scores_file, result.to_json())
    return result


def _result_from_json(name: str, d: dict) -> RunResult:
    return RunResult(name, d["images"], d["n_train_images"], d["steps"], d["weights_origin"], d["segmenter"],
                     scores(np.array(d["confusion"], np.uint64), d["n_images"]))
