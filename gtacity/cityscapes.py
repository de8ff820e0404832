"""The Cityscapes label table and the official pixel-level score (what ``gtacity eval miou`` prints).

Engine and trainer both need this: the engine converts label maps of a dataset job to train IDs,
the trainer trains segmenters on them and scores them. The table is cityscapesScripts'
``helpers/labels.py`` (mcordts/cityscapesScripts v2.3); GTA5 (Playing for Data) label maps use the
same IDs, stored as palette indices.

The score is cityscapesScripts' ``evalPixelLevelSemanticLabeling``, computed with one
``np.bincount`` per image instead of a Python loop over pixel values:

* a confusion matrix over label IDs 0..33 (rows: ground truth, columns: prediction), every pixel
  counted, also those whose ground truth is ignored in evaluation;
* class IoU = TP / (TP + FP + FN) for the 19 evaluated classes, where FN is the whole ground-truth
  row minus TP (a valid pixel predicted as an ignored ID is a miss) and FP only counts pixels whose
  ground truth is one of the other 18 evaluated classes; a class never seen nor predicted is NaN;
* mIoU = the mean over classes that are not NaN; category IoU the same over the 7 categories;
* pixel accuracy and frequency-weighted IoU (not in cityscapesScripts) over pixels whose ground truth
  is an evaluated class: correct / all, and sum of class IoU x the class's share of those pixels.

The instance-weighted iIoU of the official script (it needs ``*_instanceIds.png``) is not computed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from gtacity.errors import GtacityError

IGNORE = 255


class Label(NamedTuple):
    """One row of the Cityscapes label table (cityscapesScripts' ``Label``)."""

    name: str
    id: int
    train_id: int
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


# fmt: off
LABELS: tuple[Label, ...] = tuple(Label(*row) for row in (
    ("unlabeled",             0, 255, "void",         0, False, True,  (0, 0, 0)),
    ("ego vehicle",           1, 255, "void",         0, False, True,  (0, 0, 0)),
    ("rectification border",  2, 255, "void",         0, False, True,  (0, 0, 0)),
    ("out of roi",            3, 255, "void",         0, False, True,  (0, 0, 0)),
    ("static",                4, 255, "void",         0, False, True,  (0, 0, 0)),
    ("dynamic",               5, 255, "void",         0, False, True,  (111, 74, 0)),
    ("ground",                6, 255, "void",         0, False, True,  (81, 0, 81)),
    ("road",                  7, 0,   "flat",         1, False, False, (128, 64, 128)),
    ("sidewalk",              8, 1,   "flat",         1, False, False, (244, 35, 232)),
    ("parking",               9, 255, "flat",         1, False, True,  (250, 170, 160)),
    ("rail track",           10, 255, "flat",         1, False, True,  (230, 150, 140)),
    ("building",             11, 2,   "construction", 2, False, False, (70, 70, 70)),
    ("wall",                 12, 3,   "construction", 2, False, False, (102, 102, 156)),
    ("fence",                13, 4,   "construction", 2, False, False, (190, 153, 153)),
    ("guard rail",           14, 255, "construction", 2, False, True,  (180, 165, 180)),
    ("bridge",               15, 255, "construction", 2, False, True,  (150, 100, 100)),
    ("tunnel",               16, 255, "construction", 2, False, True,  (150, 120, 90)),
    ("pole",                 17, 5,   "object",       3, False, False, (153, 153, 153)),
    ("polegroup",            18, 255, "object",       3, False, True,  (153, 153, 153)),
    ("traffic light",        19, 6,   "object",       3, False, False, (250, 170, 30)),
    ("traffic sign",         20, 7,   "object",       3, False, False, (220, 220, 0)),
    ("vegetation",           21, 8,   "nature",       4, False, False, (107, 142, 35)),
    ("terrain",              22, 9,   "nature",       4, False, False, (152, 251, 152)),
    ("sky",                  23, 10,  "sky",          5, False, False, (70, 130, 180)),
    ("person",               24, 11,  "human",        6, True,  False, (220, 20, 60)),
    ("rider",                25, 12,  "human",        6, True,  False, (255, 0, 0)),
    ("car",                  26, 13,  "vehicle",      7, True,  False, (0, 0, 142)),
    ("truck",                27, 14,  "vehicle",      7, True,  False, (0, 0, 70)),
    ("bus",                  28, 15,  "vehicle",      7, True,  False, (0, 60, 100)),
    ("caravan",              29, 255, "vehicle",      7, True,  True,  (0, 0, 90)),
    ("trailer",              30, 255, "vehicle",      7, True,  True,  (0, 0, 110)),
    ("train",                31, 16,  "vehicle",      7, True,  False, (0, 80, 100)),
    ("motorcycle",           32, 17,  "vehicle",      7, True,  False, (0, 0, 230)),
    ("bicycle",              33, 18,  "vehicle",      7, True,  False, (119, 11, 32)),
    ("license plate",        -1, -1,  "vehicle",      7, False, True,  (0, 0, 142)),
))
# fmt: on

LABEL_IDS = tuple(label.id for label in LABELS if label.id >= 0)  # 0..33, the rows of the matrix
N_IDS = max(LABEL_IDS) + 1
EVALUATED = tuple(sorted((label for label in LABELS if not label.ignore_in_eval and label.id >= 0),
                         key=lambda label: label.train_id))  # the 19 classes, in train-ID order
N_CLASSES = len(EVALUATED)
CLASS_NAMES = tuple(label.name for label in EVALUATED)
CATEGORIES = tuple(dict.fromkeys(label.category for label in LABELS))  # void, flat, ..., vehicle
# Train-ID colours (cityscapesScripts' palette), for showing a train-ID map as an image.
PALETTE = np.array([label.color for label in EVALUATED], np.uint8)

_ID_TO_TRAIN = np.full(256, IGNORE, np.uint8)
_ID_TO_TRAIN[[label.id for label in EVALUATED]] = [label.train_id for label in EVALUATED]
# Train ID -> label ID as cityscapesScripts inverts it (the first label of a train ID wins, so
# 255 -> 0 "unlabeled"); values without a label stay 255, which the score reports as unknown.
_TRAIN_TO_ID = np.full(256, 255, np.uint8)
_TRAIN_TO_ID[[label.train_id for label in EVALUATED]] = [label.id for label in EVALUATED]
_TRAIN_TO_ID[IGNORE] = 0

_GT_SUFFIX = "_gtFine_labelIds.png"


class LabelMapError(GtacityError):
    """A label map or prediction that cannot be scored as it is; the message says which and why."""


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label IDs -> train IDs (0..18, 255 = ignore), pixel by pixel."""
    return _ID_TO_TRAIN[label_ids]


def to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train IDs (0..18, 255) -> Cityscapes label IDs, as cityscapesScripts maps them back."""
    return _TRAIN_TO_ID[train_ids]


def read_label_map(path: str | Path) -> np.ndarray:
    """A label map -> ``(H, W)`` label values: 8-bit grey as stored, palette PNGs (GTA5) by palette
    index, never by colour; 16-bit grey as stored.

    Raises:
        LabelMapError: unreadable, or not a single-channel or palette image.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P", "I;16", "I"):
                raise LabelMapError(
                    f"{path}: is a {image.mode} image, not a label map of ids (8-bit grey or palette); "
                    "save class ids, not colours"
                )
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise LabelMapError(f"{path}: not a readable label map ({e}); check the file") from None


def confusion_matrix(gt_ids: np.ndarray, pred_ids: np.ndarray, where: str = "prediction") -> np.ndarray:
    """``(34, 34)`` uint64 pixel counts of (ground-truth ID, predicted ID) for one image pair.

    Args:
        gt_ids, pred_ids: ``(H, W)`` Cityscapes label IDs of the same size.
        where: names the pair in errors (e.g. the prediction's file name).

    Raises:
        LabelMapError: the sizes differ, or either holds an ID outside 0..33.
    """
    if gt_ids.shape != pred_ids.shape:
        (h, w), (ph, pw) = gt_ids.shape[:2], pred_ids.shape[:2]
        raise LabelMapError(f"{where}: is {pw}x{ph}, its ground truth {w}x{h}; predict at the ground truth's size")
    for name, ids in (("ground truth", gt_ids), ("prediction", pred_ids)):
        top = int(ids.max(initial=0))
        if top >= N_IDS:
            raise LabelMapError(
                f"{where}: {name} holds unknown label id {top} (Cityscapes ids are 0..{N_IDS - 1}); "
                "pass --train-ids if the predictions are train ids (0..18, 255)"
                if name == "prediction" else f"{where}: {name} holds unknown label id {top} (ids are 0..{N_IDS - 1})")
    encoded = gt_ids.astype(np.intp).ravel() * N_IDS + pred_ids.astype(np.intp).ravel()
    return np.bincount(encoded, minlength=N_IDS * N_IDS).astype(np.uint64).reshape(N_IDS, N_IDS)


@dataclass(frozen=True)
class MiouScores:
    """The official pixel-level scores of a set of predictions.

    Attributes:
        confusion: ``(34, 34)`` pixel counts, rows ground-truth label ID, columns predicted ID.
        classes: official class name -> IoU (NaN where the class is neither present nor predicted).
        categories: category name -> IoU (``void`` is always NaN and never averaged).
        miou, category_miou: means over the classes / categories that are not NaN.
        pixel_accuracy, fwiou: over pixels whose ground truth is one of the 19 classes.
        n_images: image pairs scored.
    """

    confusion: np.ndarray = field(repr=False)
    classes: dict[str, float]
    categories: dict[str, float]
    miou: float
    category_miou: float
    pixel_accuracy: float
    fwiou: float
    n_images: int

    def to_json(self) -> dict:
        """Plain JSON types; NaN becomes None (JSON has no NaN)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "miou": clean(self.miou), "classes": {k: clean(v) for k, v in self.classes.items()},
            "categories": {k: clean(v) for k, v in self.categories.items()},
            "category_miou": clean(self.category_miou), "pixel_accuracy": clean(self.pixel_accuracy),
            "fwiou": clean(self.fwiou), "n_images": self.n_images, "confusion": self.confusion.tolist(),
        }

    def format(self) -> str:
        """A table of the class IoUs and the summary lines, in percent."""
        lines = [f"{'class':<14} {'IoU':>6}"]
        lines += [f"{name:<14} {_pct(iou):>6}" for name, iou in self.classes.items()]
        lines.append(f"{'categories':<14} " + "  ".join(
            f"{name} {_pct(iou)}" for name, iou in self.categories.items() if not math.isnan(iou)))
        lines.append(f"mIoU {_pct(self.miou)}  category mIoU {_pct(self.category_miou)}  pixel accuracy "
                     f"{_pct(self.pixel_accuracy)}  fwIoU {_pct(self.fwiou)}  ({self.n_images} images)")
        return "\n".join(lines)


def _pct(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{100 * value:.1f}"


def scores(confusion: np.ndarray, n_images: int) -> MiouScores:
    """Every score of :class:`MiouScores` from a confusion matrix (summed over images)."""
    conf = confusion.astype(np.int64)
    valid = [label.id for label in EVALUATED]
    classes = {label.name: _iou(conf, [label.id], [v for v in valid if v != label.id]) for label in EVALUATED}
    categories = {}
    for category in CATEGORIES:
        ids = [label.id for label in EVALUATED if label.category == category]
        others = [label.id for label in EVALUATED if label.category != category]
        categories[category] = _iou(conf, ids, others) if ids else float("nan")
    gt_valid = conf[valid].sum()
    correct = conf[valid, valid].sum()
    shares = conf[valid].sum(1) / gt_valid if gt_valid else np.zeros(len(valid))
    ious = np.array([classes[label.name] for label in EVALUATED])
    return MiouScores(
        confusion=confusion, classes=classes, categories=categories, miou=_nanmean(classes.values()),
        category_miou=_nanmean(categories.values()),
        pixel_accuracy=float(correct / gt_valid) if gt_valid else float("nan"),
        fwiou=float(np.nansum(shares * ious)) if gt_valid else float("nan"), n_images=n_images,
    )


def _iou(conf: np.ndarray, ids: list[int], other_valid: list[int]) -> float:
    tp = conf[np.ix_(ids, ids)].sum()
    fn = conf[ids].sum() - tp  # the whole row: predictions of ignored IDs are misses too
    fp = conf[np.ix_(other_valid, ids)].sum()  # only where the ground truth is another valid class
    denom = tp + fp + fn
    return float(tp) / float(denom) if denom else float("nan")


def _nanmean(values) -> float:
    # Added one by one, as cityscapesScripts' getScoreAverage does: from Python 3.12 on, sum() of floats
    # compensates its rounding, and the mean came out one bit off the official one.
    total, count = 0.0, 0
    for value in values:
        if not math.isnan(value):
            total += value
            count += 1
    return total / count if count else float("nan")


_FRAME_ID = re.compile(r"^(.+)_gtFine_labelIds\.png$")


def frame_id(gt_name: str) -> str:
    """``aachen_000000_000019_gtFine_labelIds.png`` -> ``aachen_000000_000019``."""
    match = _FRAME_ID.match(gt_name)
    if match is None:
        raise LabelMapError(f"{gt_name}: not a *{_GT_SUFFIX} name")
    return match[1]


def ground_truth_files(root: str | Path) -> list[Path]:
    """Every ``*_gtFine_labelIds.png`` under ``root`` (recursively, hidden entries skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise LabelMapError(f"{root}: no such folder of ground truth (*{_GT_SUFFIX} files)")
    found = sorted(p for p in _walk(root) if p.name.endswith(_GT_SUFFIX))
    if not found:
        raise LabelMapError(f"{root}: holds no *{_GT_SUFFIX} files; pass the gtFine/val folder of Cityscapes")
    return found


def _walk(root: Path) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [Path(folder) / n for n in names if not n.startswith(".")]
    return files


def match_predictions(pred_root: str | Path, gt_files: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) pairs: each ``*.png`` under ``pred_root`` whose name starts with a
    ground-truth frame id (followed by ``_`` or ``.``), as cityscapesScripts matches them.

    Raises:
        LabelMapError: a frame without a prediction, with two, or a prediction without a frame.
    """
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise LabelMapError(f"{pred_root}: no such folder of predictions")
    by_frame = {frame_id(gt.name): gt for gt in gt_files}
    found: dict[str, list[Path]] = {frame: [] for frame in by_frame}
    pattern = re.compile(r"^(.+?_\d+_\d+)[_.]") if by_frame else None
    for pred in sorted(p for p in _walk(pred_root) if p.suffix.lower() == ".png"):
        frame = _frame_of(pred.name, by_frame, pattern)
        if frame is None:
            raise LabelMapError(f"{pred}: matches no ground-truth frame (names must start with the frame id, "
                                f"e.g. {next(iter(by_frame))}); move it out of {pred_root}")
        found[frame].append(pred)
    missing = [frame for frame, preds in found.items() if not preds]
    if missing:
        raise LabelMapError(f"{pred_root}: no prediction for {len(missing)} of {len(found)} frames "
                            f"(first: {missing[0]}); predict every frame of the ground truth")
    double = next((preds for preds in found.values() if len(preds) > 1), None)
    if double:
        raise LabelMapError(f"{double[0]} and {double[1].name}: two predictions for one frame; keep one per frame")
    return [(found[frame][0], by_frame[frame]) for frame in by_frame]


def _frame_of(name: str, frames: dict, pattern) -> str | None:
    match = pattern.match(name) if pattern else None
    if match and match[1] in frames:
        return match[1]
    # Frame ids that are not city_sequence_frame (a renamed or synthetic set): the longest prefix.
    hits = [f for f in frames if name.startswith(f) and name[len(f):len(f) + 1] in ("_", ".")]
    return max(hits, key=len) if hits else None


def evaluate_folder(pred: str | Path, gt: str | Path, train_ids: bool = False, workers: int | None = None) -> MiouScores:
    """Score the prediction PNGs under ``pred`` against the ``*_gtFine_labelIds.png`` under ``gt``.

    Args:
        pred: folder of label-ID PNGs (train-ID PNGs with ``train_ids``), found recursively.
        gt: folder of ground truth, e.g. ``cityscapes/gtFine/val``.
        train_ids: predictions hold train IDs (0..18, 255 = none), mapped back to label IDs first.
        workers: threads decoding PNGs (PIL's zlib releases the GIL); default: every core.

    Raises:
        LabelMapError: missing, extra, unreadable or wrong-size files, or unknown IDs; the first found.
    """
    pairs = match_predictions(pred, ground_truth_files(gt))

    def one(pair: tuple[Path, Path]) -> np.ndarray:
        prediction = read_label_map(pair[0])
        if train_ids:
            _check_train_ids(prediction, pair[0])
            prediction = to_label_ids(prediction.astype(np.uint8))
        return confusion_matrix(read_label_map(pair[1]), prediction, where=str(pair[0]))

    total = np.zeros((N_IDS, N_IDS), np.uint64)
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for conf in pool.map(one, pairs):
            total += conf
    return scores(total, len(pairs))


def _check_train_ids(prediction: np.ndarray, path: Path) -> None:
    top = int(prediction.max(initial=0))
    counts = np.bincount(prediction.ravel(), minlength=256) if top <= 255 else None
    if counts is None or counts[N_CLASSES:IGNORE].any():
        bad = top if counts is None else N_CLASSES + int(np.flatnonzero(counts[N_CLASSES:IGNORE])[0])
        raise LabelMapError(f"{path}: holds {bad}, not a train id (0..18, 255 = none); drop --train-ids "
                            "if the predictions are label ids")
