"""Images with their label maps, for training and scoring segmenters.

Where the labels are, three ways:

* a GTA5 tree (Playing for Data, or what ``gtacity translate --dataset gta5`` writes):
  ``images/NAME.png`` with ``labels/NAME.png`` (palette PNGs whose palette index is the label ID);
* a Cityscapes tree: ``leftImg8bit/<split>/C/X_leftImg8bit.png`` with
  ``gtFine/<split>/C/X_gtFine_labelIds.png`` (the split folder is optional);
* any image folder with ``labels``: the label map at the image's relative path, named as in either
  dataset (``NAME.png`` or ``X_gtFine_labelIds.png``), or, failing that, anywhere under ``labels``
  with that name.

Label IDs become train IDs (:func:`gtacity.cityscapes.to_train_ids`; 255 = ignore). Labels are only
ever resized nearest-neighbour, so no pixel gets a class it never had.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from gtacity.cityscapes import IGNORE, LabelMapError, frame_id, ground_truth_files, read_label_map, to_train_ids
from gtacity.images import decode_rgb
from gtacity.trainer.data import DataError, find_images
from gtacity.trainer.seg_recipes import MEAN, STD, Recipe

log = logging.getLogger(__name__)
_CITY_IMAGE = "_leftImg8bit"
_CITY_LABEL = "_gtFine_labelIds.png"


def labelled_pairs(images: str | Path, labels: str | Path | None = None, split: str = "train") -> list[tuple[Path, Path]]:
    """(image, label map) pairs, sorted by image path.

    Raises:
        DataError: no images, no label folder to be found, or an image without its label map.
    """
    images = Path(images)
    if not images.is_dir():
        raise DataError(f"{images}: no such folder of images")
    if labels is None:
        images, labels = _tree_folders(images, split)
    labels = Path(labels)
    if not labels.is_dir():
        raise DataError(f"{labels}: no such folder of label maps")
    # A label folder inside the image folder (--train synth/ --labels synth/gtFine) holds no inputs.
    files = [f for f in find_images(images) if labels.resolve() not in f.resolve().parents]
    if not files:
        raise DataError(f"{images}: no images")
    by_name: dict[str, list[Path]] = {}
    for path in find_images(labels):
        by_name.setdefault(path.name, []).append(path)
    pairs, missing = [], []
    for image in files:
        label = _label_of(image.relative_to(images), labels, by_name)
        (pairs.append((image, label)) if label else missing.append(image))
    if missing:
        raise DataError(f"{len(missing)} of {len(files)} images under {images} have no label map in {labels} "
                        f"(first: {missing[0].name}; expected {_label_names(missing[0].name)[0]})")
    return pairs


def cityscapes_pairs(root: str | Path, split: str = "val") -> list[tuple[Path, Path]]:
    """(image, ``*_gtFine_labelIds.png``) for every ground-truth frame of a Cityscapes tree's split
    (``leftImg8bit/<split>``, ``gtFine/<split>``; without split folders, the whole tree). Images
    without ground truth are left out, as the official evaluation leaves them out.

    Raises:
        DataError: not a Cityscapes tree, or a ground-truth frame without its image.
    """
    root = Path(root)
    images, gts = root / "leftImg8bit", root / "gtFine"
    if not (images.is_dir() and gts.is_dir()):
        raise DataError(f"{root}: not a Cityscapes tree (it needs leftImg8bit/ and gtFine/ side by side)")
    if (images / split).is_dir() and (gts / split).is_dir():
        images, gts = images / split, gts / split
    by_name = {p.name: p for p in find_images(images)}
    try:
        gt_files = ground_truth_files(gts)
    except LabelMapError as e:
        raise DataError(str(e)) from None
    pairs = []
    for gt in gt_files:
        name = f"{frame_id(gt.name)}{_CITY_IMAGE}.png"
        if name not in by_name:
            raise DataError(f"{gt}: has no image {name} under {images}")
        pairs.append((by_name[name], gt))
    return pairs


def _tree_folders(root: Path, split: str) -> tuple[Path, Path]:
    for image_dir, label_dir in (("images", "labels"), ("leftImg8bit", "gtFine")):
        image_root, label_root = root / image_dir, root / label_dir
        if image_root.is_dir() and label_root.is_dir():
            if (image_root / split).is_dir() and (label_root / split).is_dir():
                return image_root / split, label_root / split
            return image_root, label_root
    raise DataError(f"{root}: is neither a GTA5 tree (images/ labels/) nor a Cityscapes tree (leftImg8bit/ gtFine/); "
                    "pass the label maps with --labels")


def _label_names(image_name: str) -> list[str]:
    stem = Path(image_name).stem
    if stem.endswith(_CITY_IMAGE):
        return [stem.removesuffix(_CITY_IMAGE) + _CITY_LABEL]
    return [stem + ".png", stem + _CITY_LABEL]


def _label_of(rel: Path, labels: Path, by_name: dict[str, list[Path]]) -> Path | None:
    for name in _label_names(rel.name):
        if (labels / rel.parent / name).is_file():
            return labels / rel.parent / name
    for name in _label_names(rel.name):
        if len(by_name.get(name, ())) == 1:
            return by_name[name][0]
    return None


def read_train_ids(path: Path, size: tuple[int, int]) -> np.ndarray:
    """``path``'s label map as ``(H, W)`` uint8 train IDs at ``size`` = (width, height) of its image.

    A map of another size but the same shape is resized nearest-neighbour (some GTA5 frames'
    labels differ from their image by a pixel or are half size); another shape is refused.
    """
    try:
        ids = read_label_map(path)
    except LabelMapError as e:
        raise DataError(str(e)) from None
    if ids.dtype != np.uint8:
        if int(ids.max(initial=0)) > 255:
            raise DataError(f"{path}: holds label id {int(ids.max())}; Cityscapes/GTA5 ids are 0..33")
        ids = ids.astype(np.uint8)
    h, w = ids.shape
    if (w, h) != size:
        if abs(w / h - size[0] / size[1]) > 0.01 * size[0] / size[1]:
            raise DataError(f"{path}: is {w}x{h}, its image {size[0]}x{size[1]}; the label map belongs to another image")
        ids = cv2.resize(ids, size, interpolation=cv2.INTER_NEAREST)
    return to_train_ids(ids)


def to_input(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 normalised with ImageNet's mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """An RGB image scaled to ``width`` (aspect kept): area filter down, linear up."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    interp = cv2.INTER_AREA if width < w else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


class LabelledImages(Dataset):
    """Item ``(epoch, i)``: a random crop of pair ``i % n`` as ``(image (3, h, w), train IDs (h, w))``.

    The crop, scale and flip are a pure function of (seed, epoch, i), so a resumed run sees exactly
    the batches an uninterrupted one would. Its length is at least the batch size (a set smaller
    than one batch repeats within it). Pairs are decoded once and kept at the recipe's width.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], rec: Recipe, seed: int = 0):
        self.pairs, self.recipe, self.seed = pairs, rec, seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return max(len(self.pairs), self.recipe.batch_size)

    def base(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``k`` at the recipe's training width: (RGB uint8, train IDs uint8)."""
        if k not in self._cache:
            image_path, label_path = self.pairs[k]
            image = decode_rgb(image_path)
            if image is None:
                raise DataError(f"{image_path}: not a readable image; remove it or its label map")
            labels = read_train_ids(label_path, (image.shape[1], image.shape[0]))
            image = resize_to_width(image, self.recipe.train_width)
            labels = cv2.resize(labels, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            self._cache[k] = (image, labels)
        return self._cache[k]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        image, labels = self.base(index % len(self.pairs))
        image, labels = self._augment(image, labels, rng)
        return to_input(image), torch.from_numpy(labels.astype(np.int64))

    def _augment(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        rec = self.recipe
        s = float(rng.uniform(*rec.scale))
        h, w = labels.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        ch, cw = rec.crop
        pad_h, pad_w = max(0, ch - size[1]), max(0, cw - size[0])
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=0)
            labels = cv2.copyMakeBorder(labels, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE)
        y = int(rng.integers(0, labels.shape[0] - ch + 1))
        x = int(rng.integers(0, labels.shape[1] - cw + 1))
        image, labels = image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return image, np.ascontiguousarray(labels)
