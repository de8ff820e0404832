"""What a bulk job translates: the items of a folder, a GTA5 tree or a Cityscapes tree.

An item is one input (an image or a video) with its output path and, in a segmentation dataset,
the label files that travel with it. Images are translated; label maps are copied byte for byte,
and with ``labels="trainids"`` also written as Cityscapes train IDs beside the copy, under the name
the standard conversion scripts give them (cityscapesScripts' ``createTrainIdLabelImgs.py`` for
Cityscapes, DAFormer's ``tools/convert_datasets/gta.py`` for GTA5), so mmsegmentation- and
DAFormer-style loaders read the output tree directly:

    --dataset gta5        images/NAME.png           labels/NAME.png (+ labels/NAME_labelTrainIds.png)
    --dataset cityscapes  leftImg8bit/S/C/X_leftImg8bit.png
                          gtFine/S/C/X_gtFine_*     (+ gtFine/S/C/X_gtFine_labelTrainIds.png)

Label maps are never resampled: the translated image keeps its size, the labels their pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from gtacity.cityscapes import to_train_ids
from gtacity.errors import GtacityError
from gtacity.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, write_image_file

DATASETS = ("gta5", "cityscapes")
LABEL_MODES = ("copy", "trainids")
# What FFmpeg commonly reads as video; a folder job translates these files one by one.
VIDEO_INPUTS = (*VIDEO_EXTENSIONS, ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv")


class DatasetError(GtacityError):
    """A dataset tree without the layout its ``--dataset`` promises, or an unreadable label map."""


@dataclass(frozen=True)
class LabelFile:
    """A label file of an item: copied to ``output``; ``train_ids`` (if set) gets its train-ID map."""

    source: Path
    output: Path
    train_ids: Path | None = None


@dataclass(frozen=True)
class Item:
    """One input of a bulk job.

    Attributes:
        key: the input's path relative to the input folder (POSIX); identifies it in the journal,
            the shard split and the failures file.
        source: the input file.
        output: where its translation goes.
        kind: ``"image"`` or ``"video"``.
        labels: label files that travel with it (datasets only).
        problem: why it cannot be done, found while listing (e.g. no label map); it is reported as
            failed without being translated.
    """

    key: str
    source: Path
    output: Path
    kind: str
    labels: tuple[LabelFile, ...] = ()
    problem: str | None = None

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file this item leaves when done."""
        extra = [p for label in self.labels for p in (label.output, label.train_ids) if p is not None]
        return (self.output, *extra)


def list_items(root: Path, out: Path, dataset: str | None = None, labels: str = "copy") -> list[Item]:
    """The job's items, sorted by key.

    Raises:
        DatasetError: ``dataset`` is unknown or the tree lacks its folders.
    """
    if dataset is None:
        return [_plain_item(root, out, rel) for rel in _walk(root, IMAGE_EXTENSIONS + VIDEO_INPUTS)]
    if dataset not in DATASETS:
        raise DatasetError(f"unknown --dataset {dataset!r}; choose {' or '.join(DATASETS)}")
    if labels not in LABEL_MODES:
        raise DatasetError(f"unknown --labels {labels!r}; choose {' or '.join(LABEL_MODES)}")
    images, label_dir = ("images", "labels") if dataset == "gta5" else ("leftImg8bit", "gtFine")
    for folder in (images, label_dir):
        if not (root / folder).is_dir():
            raise DatasetError(
                f"{root}: has no {folder}/ folder; --dataset {dataset} expects {images}/ and {label_dir}/ "
                "side by side (pass the folder that holds them)"
            )
    pair = _gta5_labels if dataset == "gta5" else _cityscapes_labels
    found = _label_index(root / label_dir)
    items = []
    for rel in _walk(root / images, IMAGE_EXTENSIONS):
        key = f"{images}/{rel}"
        files, problem = pair(rel, found, root / label_dir, out / label_dir, labels == "trainids")
        items.append(Item(key, root / key, out / key, "image", files, problem))
    return items


def _plain_item(root: Path, out: Path, rel: PurePosixPath) -> Item:
    if rel.suffix.lower() in IMAGE_EXTENSIONS:
        return Item(str(rel), root / rel, out / rel, "image")
    output = out / rel
    if rel.suffix.lower() not in VIDEO_EXTENSIONS:  # .avi, .webm ...: Matroska takes any audio
        output = output.with_name(output.name + ".mkv")
    return Item(str(rel), root / rel, output, "video")


def _walk(root: Path, extensions: tuple[str, ...]) -> list[PurePosixPath]:
    """Files under ``root`` with ``extensions`` (any case), sorted; hidden files and folders skipped
    (editor/OS debris, another run's unfinished outputs)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
        found += [rel_folder / name for name in files
                  if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions]
    return sorted(found)


def _label_index(root: Path) -> dict[PurePosixPath, list[str]]:
    """Label folder -> {relative folder: file names}, read once (not one listing per image)."""
    index: dict[PurePosixPath, list[str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        index[PurePosixPath(Path(folder).relative_to(root).as_posix())] = sorted(
            f for f in files if not f.startswith("."))
    return index


def _gta5_labels(rel, found, src, out, train_ids):
    name = rel.with_suffix(".png").name
    if name not in found.get(rel.parent, ()):
        return (), f"no label map {src / rel.parent / name}"
    trainid = out / rel.parent / f"{rel.stem}_labelTrainIds.png" if train_ids else None
    return (LabelFile(src / rel.parent / name, out / rel.parent / name, trainid),), None


def _cityscapes_labels(rel, found, src, out, train_ids):
    stem = rel.name.removesuffix(rel.suffix).removesuffix("_leftImg8bit")
    prefix = f"{stem}_gtFine_"
    names = [n for n in found.get(rel.parent, ()) if n.startswith(prefix)]
    label_ids = f"{prefix}labelIds.png"
    if label_ids not in names:
        return (), f"no label map {src / rel.parent / label_ids}"
    files = []
    for name in names:
        if train_ids and name == f"{prefix}labelTrainIds.png":
            continue  # written fresh from labelIds below
        trainid = out / rel.parent / f"{prefix}labelTrainIds.png" if train_ids and name == label_ids else None
        files.append(LabelFile(src / rel.parent / name, out / rel.parent / name, trainid))
    return tuple(files), None


def read_label_ids(path: Path) -> np.ndarray:
    """A label map -> ``(H, W)`` uint8 label ids: 8-bit grey as stored, palette PNGs (GTA5) by
    palette index, never by colour.

    Raises:
        DatasetError: not an 8-bit single-channel or palette image.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("L", "P"):
                raise DatasetError(
                    f"{path}: is a {image.mode} image, not a label map of ids (8-bit grey or palette)"
                )
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable label map ({e}); check the file") from None


def write_train_ids(label_map: Path, target: Path) -> None:
    """Write ``label_map``'s train ids as an 8-bit grey PNG at ``target`` (lossless, same size).

    Raises:
        DatasetError: ``label_map`` is not a label map.
        OSError: ``target`` cannot be written.
    """
    try:
        write_image_file(target, to_train_ids(read_label_ids(label_map)))
    except ValueError as e:
        raise DatasetError(f"{target}: could not be written ({e})") from None
