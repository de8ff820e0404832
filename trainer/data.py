"""Unpaired GTA5 / Cityscapes datasets for CycleGAN training.

Three ways to name the data, all ending in two lists of image files, one per domain:

* the CycleGAN "unaligned" layout of the ``cityscapes2gta`` archive (``trainA/ trainB/ testA/
  testB``): the user says which letter is GTA (``--gta-side``), or takes the documented default;
* raw trees: GTA5 (Playing for Data) ``<root>/images/*.png``; Cityscapes
  ``<root>/leftImg8bit/<split>/<city>/*.png``;
* any folder of images (searched recursively).

Past this module the domains are ``gta`` and ``city``; A and B do not leave it.

Sampling is unpaired as in the paper: item ``i`` is GTA image ``i`` (in a shuffled order) and a
Cityscapes image drawn at random. Every random choice (order, partner, crop, flip) is a pure
function of (seed, epoch, index), so a run resumed mid-epoch sees exactly the batches an
uninterrupted run would, whatever the number of DataLoader workers or processes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from gtacity.artifacts import MIN_SIDE
from gtacity.errors import GtacityError
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb
from gtacity.nets import SIZE_MULTIPLE

log = logging.getLogger(__name__)

PREPROCESS_MODES = ("resize_and_crop", "scale_width_and_crop", "scale_width", "crop", "none")
# Cityscapes: <city>_<sequence>_<frame>_leftImg8bit.png; GTA5 (Playing for Data): 00001.png.
# Which letter of an unaligned folder is GTA5 is not documented for the cityscapes2gta archive, so it
# is read from these names when they are unambiguous, and otherwise the user must say (--gta-side).
_DOMAIN_NAMES = {
    "city": re.compile(r"^[a-z-]+_\d{6}_\d{6}_leftImg8bit\.(png|jpg)$"),
    "gta": re.compile(r"^\d{5}\.png$"),
}


class DataError(GtacityError):
    """Training data that cannot be used as given."""


def find_images(root: Path) -> list[Path]:
    """Every image under ``root`` (recursively, any case of extension), in a stable order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def domain_files(root: str | Path, domain: str, split: str = "train") -> list[Path]:
    """The images of one domain under ``root``, recognising the raw GTA5 and Cityscapes trees.

    Args:
        root: a GTA5 tree (``images/``), a Cityscapes tree (``leftImg8bit/<split>/``) or any folder.
        domain: ``gta`` or ``city`` (only used in messages).
        split: the Cityscapes split to take from a raw Cityscapes tree.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder for the {domain} images")
    if (root / "leftImg8bit" / split).is_dir():
        root = root / "leftImg8bit" / split
    elif (root / "images").is_dir() and not (root / "trainA").exists():
        root = root / "images"
    files = find_images(root)
    if not files:
        raise DataError(
            f"{root}: no images for the {domain} domain "
            f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))} recursively)"
        )
    return files


def domain_from_names(names: Sequence[str]) -> str | None:
    """``city`` or ``gta`` when every file name follows that dataset's own pattern, else None."""
    for domain, pattern in _DOMAIN_NAMES.items():
        if names and all(pattern.match(n) for n in names):
            return domain
    return None


def unaligned_files(
    root: str | Path, gta_side: str | None = None, split: str = "train"
) -> tuple[list[Path], list[Path], str]:
    """(gta, city, gta_side) from a CycleGAN unaligned folder (``<split>A`` / ``<split>B``).

    Args:
        gta_side: ``A`` or ``B``, the letter whose folder holds the GTA5 images; None reads it from
            the file names (Cityscapes and GTA5 name their frames distinctively) and refuses to guess
            when they don't tell.
    """
    root = Path(root)
    if gta_side not in (None, "A", "B"):
        raise DataError(f"--gta-side must be A or B, got {gta_side!r}")
    folders = {side: root / f"{split}{side}" for side in "AB"}
    missing = [str(f) for f in folders.values() if not f.is_dir()]
    if missing:
        raise DataError(
            f"{root}: not a CycleGAN unaligned dataset: missing {', '.join(missing)} "
            "(expected trainA/ trainB/ testA/ testB)"
        )
    files = {side: find_images(folder) for side, folder in folders.items()}
    if gta_side is None:
        seen = {side: domain_from_names([p.name for p in f]) for side, f in files.items()}
        other = {"A": "B", "B": "A"}
        sides = [s for s in "AB" if seen[s] == "gta" or seen[other[s]] == "city"]
        if len(sides) != 1:
            raise DataError(
                f"{root}: cannot tell from the file names whether {split}A or {split}B holds the GTA5 "
                "images; pass --gta-side A or --gta-side B"
            )
        gta_side = sides[0]
    city_side = "B" if gta_side == "A" else "A"
    if not files[gta_side] or not files[city_side]:
        empty = folders[gta_side] if not files[gta_side] else folders[city_side]
        raise DataError(f"{empty}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files[gta_side], files[city_side], gta_side


@dataclass(frozen=True)
class Preprocess:
    """The official code's preprocessing, as far as it matters for street scenes.

    Attributes:
        mode: ``resize_and_crop`` (square resize to load_size, random crop), ``scale_width_and_crop``
            (width to load_size keeping the aspect, random crop: the published GTA->Cityscapes
            recipes use load 1024 and crop 360 or 512), ``scale_width``, ``crop`` or ``none`` (sizes
            rounded down to a multiple of 4 only).
        load_size: the resize target in pixels (side or width).
        crop_size: the square training crop.
        flip: random horizontal flips.
        load_size_max: multi-scale crops: each image's resize target is drawn uniformly from
            ``load_size .. load_size_max`` (inclusive), so the same crop size sees the scene at several
            scales (footage is translated at many widths). None: always ``load_size``.
    """

    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    load_size_max: int | None = None

    def __post_init__(self):
        if self.mode not in PREPROCESS_MODES:
            raise DataError(f"unknown preprocess mode {self.mode!r}; choose from {', '.join(PREPROCESS_MODES)}")
        if "crop" in self.mode and self.crop_size > self.load_size and self.mode != "crop":
            raise DataError(f"crop size {self.crop_size} is larger than load size {self.load_size}")
        if self.load_size_max is not None and self.load_size_max < self.load_size:
            raise DataError(f"load size range {self.load_size}-{self.load_size_max} is empty; "
                            "--load-size-max must be at least --load-size")

    def check_spectrum_crops(self, option: str, remedy: str) -> None:
        """Refuse training crops too small for a spectral term (``option``, e.g. ``--grid-term spectral``)
        to measure: the artifact check's spectrum needs :data:`gtacity.artifacts.MIN_SIDE` px."""
        if "crop" in self.mode and self.crop_size < MIN_SIDE:
            raise DataError(f"{option} needs training crops of at least {MIN_SIDE} px (--crop-size is "
                            f"{self.crop_size}); {remedy}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> augmented ``(h, w, 3)`` uint8 RGB."""
        h, w = image.shape[:2]
        load = self.load_size
        if self.load_size_max is not None and self.mode in ("resize_and_crop", "scale_width_and_crop", "scale_width"):
            load = int(rng.integers(self.load_size, self.load_size_max + 1))
        if self.mode == "resize_and_crop":
            image = cv2.resize(image, (load, load), interpolation=cv2.INTER_CUBIC)
        elif self.mode.startswith("scale_width"):
            new_h = max(round(load * h / w), self.crop_size if "crop" in self.mode else 0)
            image = cv2.resize(image, (load, new_h), interpolation=cv2.INTER_CUBIC)
        if self.mode.endswith("crop"):
            h, w = image.shape[:2]
            if h < self.crop_size or w < self.crop_size:
                image = _pad_to(image, self.crop_size)
                h, w = image.shape[:2]
            y = int(rng.integers(0, h - self.crop_size + 1))
            x = int(rng.integers(0, w - self.crop_size + 1))
            image = image[y : y + self.crop_size, x : x + self.crop_size]
        h, w = image.shape[:2]
        image = image[: h - h % SIZE_MULTIPLE, : w - w % SIZE_MULTIPLE]
        if self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.copyMakeBorder(image, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class UnpairedDataset(Dataset):
    """Item ``i`` of epoch ``e``: ``{"gta": (3, h, w), "city": (3, h, w)}`` in [-1, 1].

    The GTA image is ``gta[i % len(gta)]``; its Cityscapes partner is drawn at random (the paper's
    unpaired sampling). Length is the larger domain, as in the official code. Unreadable images are
    reported once and replaced by the next readable one; training goes on.
    """

    def __init__(self, gta: Sequence[Path], city: Sequence[Path], preprocess: Preprocess, seed: int = 0):
        self.gta, self.city = list(gta), list(city)
        self.preprocess, self.seed = preprocess, seed
        self.epoch = 0
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return max(len(self.gta), len(self.city))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        gta = self._load(self.gta, index % len(self.gta), rng)
        city = self._load(self.city, int(rng.integers(len(self.city))), rng)
        return {"gta": gta, "city": city}

    def _load(self, files: list[Path], start: int, rng: np.random.Generator) -> torch.Tensor:
        for k in range(len(files)):
            path = files[(start + k) % len(files)]
            image = None if path in self._bad else decode_rgb(path)
            if image is not None:
                return to_tensor(self.preprocess(image, rng))
            if path not in self._bad:
                self._bad.add(path)
                log.warning("skipping unreadable image %s", path)
        raise DataError(f"none of the {len(files)} images in this domain could be read (first: {files[0]})")


class ResumableSampler(Sampler):
    """Shuffled ``(epoch, index)`` keys for one process, starting anywhere inside an epoch.

    The order of epoch ``e`` is a permutation seeded by (seed, e); process ``rank`` of ``world``
    takes every ``world``-th entry, so data-parallel processes see disjoint items.
    """

    def __init__(self, length: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1):
        self.length, self.seed, self.epoch, self.start = length, seed, epoch, start
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.per_rank(self.length, self.world) - self.start)

    def set_position(self, epoch: int, start: int) -> None:
        """Where the next iteration begins (the loader iterates the sampler afresh each epoch)."""
        self.epoch, self.start = epoch, start

    @staticmethod
    def per_rank(length: int, world: int) -> int:
        """Items each process sees per epoch (the tail that doesn't divide evenly is dropped)."""
        return length // world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng([self.seed, self.epoch, 0x5EED]).permutation(self.length)
        mine = order[self.rank :: self.world][: self.per_rank(self.length, self.world)]
        for index in mine[self.start :]:
            yield (self.epoch, int(index))
