"""``gtacity eval miou`` equals cityscapesScripts' evalPixelLevelSemanticLabeling.

Against the official script on label maps the test draws itself (always) and on the real gtFine
maps beside the repository (``../shared/data/real/cityscapes/gtFine``, skipped where absent) with
perturbed predictions: the confusion matrix bit for bit, every class and category IoU and the means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gtacity.cityscapes import (
    CLASS_NAMES,
    LABELS,
    evaluate_folder,
    ground_truth_files,
    read_label_map,
    to_label_ids,
    to_train_ids,
)
from gtacity.cli import cli

official = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
                               reason="cityscapesScripts not installed (pip install -e '.[test]')")
from cityscapesscripts.helpers import labels as official_labels  # noqa: E402

if not hasattr(np, "in1d"):  # cityscapesScripts 2.3 calls np.in1d, which numpy 2.x removed
    np.in1d = np.isin

REAL_GTFINE = next((p / "shared/data/real/cityscapes/gtFine" for p in Path(__file__).resolve().parents
                    if (p / "shared/data/real/cityscapes/gtFine").is_dir()), None)
needs_real = pytest.mark.skipif(REAL_GTFINE is None, reason="real Cityscapes gtFine maps not beside the repository "
                                "(../shared/data/real/cityscapes/gtFine)")


def official_scores(preds: list[Path], gts: list[Path], instances: bool = False) -> dict:
    args = official.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = instances, False, True
    return official.evaluateImgLists([str(p) for p in preds], [str(g) for g in gts], args)


def assert_same_as_official(ours, theirs: dict) -> None:
    assert np.array_equal(ours.confusion, np.array(theirs["confMatrix"], np.uint64))
    for name in CLASS_NAMES:
        assert _same(ours.classes[name], theirs["classScores"][name]), name
    for name, value in theirs["categoryScores"].items():
        assert _same(ours.categories[name], value), name
    assert _same(ours.miou, theirs["averageScoreClasses"])
    assert _same(ours.category_miou, theirs["averageScoreCategories"])


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def perturb(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible, imperfect prediction: shifted, some classes confused, noise of every label ID
    (ignored ones too), a block predicted as 'unlabeled'."""
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, (int(rng.integers(-9, 10)), int(rng.integers(-9, 10))), axis=(0, 1))
    pred = np.where(pred == 26, 27, pred) if seed % 2 else np.where(pred == 8, 7, pred)  # car->truck, sidewalk->road
    noise = rng.random(gt.shape) < 0.08
    pred[noise] = rng.integers(0, 34, int(noise.sum()))
    h, w = gt.shape
    pred[h // 3 : h // 3 + h // 8, w // 4 : w // 4 + w // 6] = 0
    return pred.astype(np.uint8)


def save(path: Path, ids: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids).save(path)
    return path


def drawn_scene(seed: int, size=(96, 48)) -> np.ndarray:
    """A street-like label map: sky, buildings, road, sidewalk, a car, void borders, random blobs."""
    w, h = size
    rng = np.random.default_rng(seed)
    ids = np.full((h, w), 23, np.uint8)
    ids[h // 3 :] = 11
    ids[h // 2 :] = 8
    ids[h // 2 + 4 :, w // 5 : 4 * w // 5] = 7
    ids[h - 6 :] = 1  # ego vehicle (ignored)
    for _ in range(6):
        y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 8))
        ids[y : y + 6, x : x + 8] = rng.choice([21, 22, 24, 26, 33, 17, 20, 4])
    return ids


def test_table_is_cityscapesscripts_table():
    assert [tuple(label) for label in LABELS] == [tuple(label) for label in official_labels.labels]
    ids = np.arange(256, dtype=np.uint8)
    known = ids[ids < 34]
    assert [int(t) for t in to_train_ids(known)] == [official_labels.id2label[int(i)].trainId % 256 for i in known]
    assert to_label_ids(np.array([255], np.uint8))[0] == official_labels.trainId2label[255].id


def test_equals_cityscapesscripts_on_label_maps_drawn_here(tmp_path):
    preds, gts = [], []
    for seed in range(4):
        gt = drawn_scene(seed)
        gts.append(save(tmp_path / "gt" / f"town_00000{seed}_000019_gtFine_labelIds.png", gt))
        preds.append(save(tmp_path / "pred" / f"town_00000{seed}_000019_pred.png", perturb(gt, seed)))
    ours = evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    assert ours.n_images == 4 and 0.05 < ours.miou < 0.95
    assert_same_as_official(ours, official_scores(preds, gts))


def test_hand_computed_scores(tmp_path):
    # road 6 px, car 2 px, 'unlabeled' 2 px; 1 road pixel predicted car, 1 car pixel predicted
    # 'unlabeled' (a miss), the 'unlabeled' ground truth predicted road (not a false positive).
    gt = np.array([[7, 7, 7, 7, 7, 7, 26, 26, 0, 0]], np.uint8)
    pred = np.array([[7, 7, 7, 7, 7, 26, 26, 0, 7, 7]], np.uint8)
    save(tmp_path / "gt" / "x_000000_000000_gtFine_labelIds.png", gt)
    save(tmp_path / "pred" / "x_000000_000000.png", pred)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    assert result.classes["road"] == 5 / 6  # tp 5, fn 1, fp 0
    assert result.classes["car"] == 1 / 3  # tp 1, fn 1, fp 1
    assert math.isnan(result.classes["sky"]) and result.miou == (5 / 6 + 1 / 3) / 2
    assert result.categories["flat"] == 5 / 6 and result.categories["vehicle"] == 1 / 3
    assert result.pixel_accuracy == 6 / 8
    assert result.fwiou == pytest.approx(6 / 8 * 5 / 6 + 2 / 8 * 1 / 3)


@needs_real
def test_equals_cityscapesscripts_on_real_gtfine(tmp_path):
    gts = ground_truth_files(REAL_GTFINE)
    assert len(gts) == 8
    preds = [save(tmp_path / "pred" / "aachen" / gt.name.replace("_gtFine_labelIds", "_leftImg8bit"),
                  perturb(read_label_map(gt), seed)) for seed, gt in enumerate(gts)]
    ours = evaluate_folder(tmp_path / "pred", REAL_GTFINE)
    assert ours.confusion.sum() == 8 * 2048 * 1024
    # The official default, with the instance-level scores (and so np.in1d) on.
    assert_same_as_official(ours, official_scores(preds, gts, instances=True))


@needs_real
def test_train_id_predictions_score_as_their_label_ids(tmp_path):
    gts = ground_truth_files(REAL_GTFINE)[:3]
    label_ids = [perturb(read_label_map(gt), seed) for seed, gt in enumerate(gts)]
    for gt, ids in zip(gts, label_ids):
        save(tmp_path / "train" / gt.name.replace("_gtFine_labelIds", ""), to_train_ids(ids))
        save(tmp_path / "ids" / gt.name.replace("_gtFine_labelIds", ""), to_label_ids(to_train_ids(ids)))
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", "miou", str(tmp_path / "train"), "--gt", str(REAL_GTFINE.parent / "gtFine"),
                              "--train-ids", "--json", str(tmp_path / "s.json")], catch_exceptions=False)
    assert out.exit_code == 1 and "no prediction for 5 of 8 frames" in out.output
    gt_dir = tmp_path / "gt3"
    for gt in gts:
        save(gt_dir / gt.name, read_label_map(gt))
    out = runner.invoke(cli, ["eval", "miou", str(tmp_path / "train"), "--gt", str(gt_dir), "--train-ids",
                              "--json", str(tmp_path / "s.json")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "s.json").read_text())
    theirs = official_scores(sorted((tmp_path / "ids").iterdir()), gts)
    assert data["miou"] == theirs["averageScoreClasses"] and data["n_images"] == 3
    assert set(data) >= {"miou", "classes", "categories", "pixel_accuracy", "fwiou", "n_images"}
    assert f"mIoU {100 * theirs['averageScoreClasses']:.1f}" in out.output


@pytest.mark.parametrize("case, message", [
    ("missing", "no prediction for 1 of 2 frames (first: town_000001_000019)"),
    ("extra", "matches no ground-truth frame"),
    ("double", "two predictions for one frame"),
    ("size", "is 48x48, its ground truth 96x48"),
    ("unknown", "prediction holds unknown label id 40"),
    ("colour", "is a RGB image, not a label map"),
    ("train_ids", "holds 19, not a train id"),
])
def test_bad_predictions_are_one_line(tmp_path, case, message):
    for seed in range(2):
        save(tmp_path / "gt" / f"town_00000{seed}_000019_gtFine_labelIds.png", drawn_scene(seed))
        scene = drawn_scene(seed)
        save(tmp_path / "pred" / f"town_00000{seed}_000019.png", to_train_ids(scene) if case == "train_ids" else scene)
    pred = tmp_path / "pred" / "town_000001_000019.png"
    if case == "missing":
        pred.unlink()
    elif case == "extra":
        save(tmp_path / "pred" / "town_000009_000019.png", drawn_scene(0))
    elif case == "double":
        save(tmp_path / "pred" / "sub" / "town_000001_000019_color.png", drawn_scene(1))
    elif case == "size":
        save(pred, drawn_scene(1)[:, :48])
    elif case == "unknown":
        save(pred, np.full((48, 96), 40, np.uint8))
    elif case == "colour":
        Image.fromarray(np.zeros((48, 96, 3), np.uint8)).save(pred)
    else:
        save(pred, np.full((48, 96), 19, np.uint8))
    args = ["eval", "miou", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json", str(tmp_path / "s.json")]
    out = CliRunner().invoke(cli, args + (["--train-ids"] if case == "train_ids" else []))
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.output
    assert not (tmp_path / "s.json").exists()
