"""The domain-gap experiment of issue 20 on the 8 real Cityscapes frames with gtFine labels.

A segmenter (a recipe of ``gtacity eval segmentation``) is trained on 4 frames and scored on the
other 4 real ones (two folds, every frame scored once per seed), in three versions of the training
frames, with the same labels, recipe, seed and steps:

    real        the real frames (the in-domain reference)
    city2gta    the frames translated to the GTA5 look by the bundled city2gta_demo (a "game" domain)
    back        those translated back to the Cityscapes look by gta2city_demo (gtacity's pixel-level
                adaptation: train on translated game frames)

Frames are scaled to 512x256 first (the demo generators' scale); the scores are at the ground
truth's 2048x1024. Per seed the two folds' confusion matrices are summed (8 frames), and the mIoU
is reported as mean +- standard deviation over seeds.

    nice -n 19 python benchmarks/segmentation_gap.py ../shared/data/real/cityscapes --work /tmp/gap \\
        --seeds 0 1 2 --steps 100 --crop 128 --json gap.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from gtacity.cityscapes import N_IDS, frame_id, ground_truth_files, scores
from gtacity.trainer.seg_eval import SegEvalConfig, evaluate_segmentation
from gtacity.trainer.seg_recipes import recipe

CONDITIONS = ("real", "city2gta", "back")


def prepare(real: Path, work: Path) -> list[str]:
    """work/{real,city2gta,back}/<frame>_leftImg8bit.png at 512x256; returns the frame ids."""
    frames = [frame_id(gt.name) for gt in ground_truth_files(real / "gtFine")]
    small = work / "real"
    small.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        target = small / f"{frame}_leftImg8bit.png"
        if not target.exists():
            image = cv2.imread(str(real / "leftImg8bit" / target.name))
            cv2.imwrite(str(target), cv2.resize(image, (512, 256), interpolation=cv2.INTER_AREA))
    for source, out, weights in (("real", "city2gta", "city2gta_demo"), ("city2gta", "back", "gta2city_demo")):
        if not (work / out).is_dir():
            subprocess.run([sys.executable, "-m", "gtacity", "translate", str(work / source), "-o", str(work / out),
                            "--weights", weights], check=True)
    return frames


def fold_trees(real: Path, work: Path, frames: list[str], fold: int) -> tuple[dict[str, Path], Path]:
    """Symlinked Cityscapes trees: the training frames of each condition, and the held-out real ones."""
    test = frames[4 * fold : 4 * fold + 4]
    root = work / f"fold{fold}"
    trees = {}
    for condition in CONDITIONS:
        trees[condition] = _tree(root / condition, work / condition, real / "gtFine", [f for f in frames if f not in test])
    return trees, _tree(root / "val", work / "real", real / "gtFine", test)


def _tree(root: Path, images: Path, gt: Path, frames: list[str]) -> Path:
    for frame in frames:
        for folder, source in (("leftImg8bit", images / f"{frame}_leftImg8bit.png"),
                               ("gtFine", gt / f"{frame}_gtFine_labelIds.png")):
            link = root / folder / source.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source.resolve())
    return root


def _mean_pct(values: list[float]) -> float | None:
    """Mean in percent over the seeds where the class was present or predicted (None if never)."""
    kept = [v for v in values if not math.isnan(v)]
    return 100 * statistics.mean(kept) if kept else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("real", type=Path, help="Cityscapes folder with leftImg8bit/ and gtFine/ (8 frames)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gtacity-segmentation-gap"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--crop", type=int, default=128, help="square training crop of the 512x256 frames")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rec = recipe("cpu-tiny", steps=args.steps, crop=(args.crop, args.crop), lr=5e-3)
    frames = prepare(args.real, args.work)
    confusion = {(c, s): np.zeros((N_IDS, N_IDS), np.uint64) for c in CONDITIONS for s in args.seeds}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for fold in (0, 1):
            trees, val = fold_trees(args.real, args.work, frames, fold)
            out = args.work / "runs" / f"seed{seed}_fold{fold}"
            pairs = (("back", "city2gta"), ("real", None))
            for train, compare in pairs:
                report = evaluate_segmentation(SegEvalConfig(
                    train=str(trees[train]), compare=str(trees[compare]) if compare else None, val=str(val),
                    recipe=rec, seed=seed, out=str(out / train), amp="off"), resume=True, progress_bar=False)
                confusion[train, seed] += report.train.scores.confusion
                if compare:
                    confusion[compare, seed] += report.compare.scores.confusion
            print(f"seed {seed} fold {fold} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = {}
    for condition in CONDITIONS:
        per_seed = [scores(confusion[condition, s], 8) for s in args.seeds]
        mious = [100 * r.miou for r in per_seed]
        summary[condition] = {
            "miou_per_seed": mious, "miou_mean": statistics.mean(mious),
            "miou_std": statistics.stdev(mious) if len(mious) > 1 else 0.0,
            "classes_mean": {k: _mean_pct([r.classes[k] for r in per_seed]) for k in per_seed[0].classes},
        }
        print(f"{condition:>9}: mIoU {summary[condition]['miou_mean']:.1f} +- {summary[condition]['miou_std']:.1f} "
              f"(seeds: {', '.join(f'{m:.1f}' for m in mious)})")
    if args.json:
        args.json.write_text(json.dumps({"recipe": rec.to_dict(), "seeds": args.seeds, "conditions": summary,
                                         "seconds": time.perf_counter() - t0}, indent=2) + "\n")


if __name__ == "__main__":
    main()
