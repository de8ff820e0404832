"""Segmentation datasets: label maps travel with their images, bit-exact or as Cityscapes train IDs.

Synthetic GTA5 (palette PNG labels) and Cityscapes trees are built here; where the real Cityscapes
label maps are beside the repository (``../shared/data/real/cityscapes/gtFine``) they are used too.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from media import make_image
from PIL import Image

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.media.trees import read_label_ids, to_train_ids

# The 19 evaluated classes of the official table (mcordts/cityscapesScripts,
# cityscapesscripts/helpers/labels.py): label id -> train id. Written out here on purpose, so the
# test does not check the module against itself.
OFFICIAL = {"road": (7, 0), "sidewalk": (8, 1), "building": (11, 2), "wall": (12, 3), "fence": (13, 4),
            "pole": (17, 5), "traffic light": (19, 6), "traffic sign": (20, 7), "vegetation": (21, 8),
            "terrain": (22, 9), "sky": (23, 10), "person": (24, 11), "rider": (25, 12), "car": (26, 13),
            "truck": (27, 14), "bus": (28, 15), "train": (31, 16), "motorcycle": (32, 17),
            "bicycle": (33, 18)}
REAL_GTFINE = next((p / "shared/data/real/cityscapes/gtFine" for p in Path(__file__).resolve().parents
                    if (p / "shared/data/real/cityscapes/gtFine").is_dir()), None)
SIZE = (64, 48)


@pytest.fixture
def weights(tmp_path, tiny_generator):
    return save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    expected = np.full_like(ids, 255)
    for label_id, train_id in OFFICIAL.values():
        expected[ids == label_id] = train_id
    return expected


def every_id(seed: int) -> np.ndarray:
    """``(48, 64)`` uint8 holding every value 0..255 (so every row of the table is exercised)."""
    ids = np.arange(48 * 64) % 256
    return np.random.default_rng(seed).permutation(ids).reshape(48, 64).astype(np.uint8)


def palette_png(path: Path, ids: np.ndarray) -> None:
    """A GTA5-style label map: palette mode, the index is the label id, the colours are arbitrary."""
    image = Image.fromarray(ids, mode="P")
    image.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def translate(*args):
    return CliRunner().invoke(cli, ["translate", *map(str, args), "--backend", "torch", "-q"])


def test_gta5_tree_labels_copied_bit_exact_and_as_train_ids(tmp_path, weights):
    root, out = tmp_path / "gta5", tmp_path / "gta5_city"
    for i in range(1, 4):
        make_image(root / "images" / f"{i:05d}.png", SIZE, seed=i)
        palette_png(root / "labels" / f"{i:05d}.png", every_id(i))
    make_image(root / "images" / "00004.png", SIZE)  # no label map: listed as failed
    result = translate(root, "-o", out, "--weights", weights, "--dataset", "gta5", "--labels", "trainids")
    assert result.exit_code == 1 and "files: 3 translated, 0 already done, 1 failed" in result.stdout
    assert "images/00004.png\tno label map" in (out / "gtacity-failures.txt").read_text()
    for i in range(1, 4):
        name = f"{i:05d}"
        assert (out / "labels" / f"{name}.png").read_bytes() == (root / "labels" / f"{name}.png").read_bytes()
        train = cv2.imread(str(out / "labels" / f"{name}_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
        assert train.dtype == np.uint8 and np.array_equal(train, expected_train_ids(every_id(i)))
        assert cv2.imread(str(out / "images" / f"{name}.png")).shape == (48, 64, 3)
    assert not (out / "images" / "00004.png").exists()
    assert json.loads((out / ".gtacity-job" / "manifest.json").read_text())["labels"] == "trainids"


def test_cityscapes_tree_keeps_names_and_every_gtfine_file(tmp_path, weights):
    root, out = tmp_path / "cityscapes", tmp_path / "city_gta"
    stem = "train/aachen/aachen_000000_000019"
    make_image(root / "leftImg8bit" / f"{stem}_leftImg8bit.png", SIZE)
    label_dir = root / "gtFine" / "train" / "aachen"
    label_dir.mkdir(parents=True)
    ids = every_id(7)
    cv2.imwrite(str(root / "gtFine" / f"{stem}_gtFine_labelIds.png"), ids)
    cv2.imwrite(str(root / "gtFine" / f"{stem}_gtFine_instanceIds.png"), ids.astype(np.uint16) * 1000 + 7)
    (root / "gtFine" / f"{stem}_gtFine_polygons.json").write_text('{"objects": []}')
    result = translate(root, "-o", out, "--weights", weights, "--dataset", "cityscapes", "--labels", "trainids")
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".gtacity-job" not in p.parts)
    assert names == sorted([f"leftImg8bit/{stem}_leftImg8bit.png"] +
                           [f"gtFine/{stem}_gtFine_{s}" for s in
                            ("labelIds.png", "instanceIds.png", "polygons.json", "labelTrainIds.png")])
    for suffix in ("labelIds.png", "instanceIds.png", "polygons.json"):
        src, dst = (r / "gtFine" / f"{stem}_gtFine_{suffix}" for r in (root, out))
        assert dst.read_bytes() == src.read_bytes()
    train = cv2.imread(str(out / "gtFine" / f"{stem}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(train, expected_train_ids(ids))


@pytest.mark.skipif(REAL_GTFINE is None, reason="real Cityscapes label maps not beside the repository")
def test_real_cityscapes_label_maps_convert_by_the_table():
    for path in sorted(REAL_GTFINE.glob("*_gtFine_labelIds.png"))[:2]:
        ids = read_label_ids(path)
        assert ids.shape == (1024, 2048) and np.array_equal(ids, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
        train = to_train_ids(ids)
        assert np.array_equal(train, expected_train_ids(ids))
        road = ids == OFFICIAL["road"][0]
        assert road.any() and (train[road] == 0).all() and set(np.unique(train)) <= set(range(19)) | {255}


def test_labels_need_a_dataset_and_datasets_need_their_folders(tmp_path, weights):
    make_image(tmp_path / "frames" / "a.png", SIZE)
    no_dataset = translate(tmp_path / "frames", "-o", tmp_path / "o1", "--weights", weights, "--labels", "trainids")
    assert no_dataset.exit_code == 1 and "--labels needs --dataset" in no_dataset.stderr
    wrong_tree = translate(tmp_path / "frames", "-o", tmp_path / "o2", "--weights", weights, "--dataset", "gta5")
    assert wrong_tree.exit_code == 1 and "has no images/ folder" in wrong_tree.stderr
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
