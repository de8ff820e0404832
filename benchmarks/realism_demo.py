"""Realism of the bundled demo generators and their students against doing nothing.

For each direction: the real target-domain frames of ``../shared/data/real`` are the reference;
the source-domain frames untranslated ("doing nothing"), and translated by the demo generator and
by its distilled student, are scored against it with ``gtacity eval realism`` (FID, KID and, for
translations, the checkerboard check against their inputs). Every frame is first scaled to 512 px
wide (the size the demo generators were trained for; INTER_AREA), the same for every set.

    python benchmarks/realism_demo.py --features standin --out /tmp/realism_bench \
        [--generator gta2city=NEW.safetensors ...] [--standin-seed 1]

``--generator DIRECTION=FILE`` adds another generator's row to that direction (e.g. a retrained
demo generator next to the bundled one). Translations use openvino fp32 (``--precision``), so the
table does not depend on which reduced precision a CPU would pick.

Without the FID Inception weights (offline), ``--features standin`` gives stand-in distances:
NOT FID/KID values, comparable only within this table. The frames are copied to ``--out``
(outside the repository: they must never enter it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2

from gtacity.engine.measure.realism import RealismConfig, RealismSettings, evaluate_realism
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.images import decode_rgb

# shared/data/real beside the checkout, or beside the folder of worktrees it sits in.
REAL = next((p / "shared" / "data" / "real" for p in Path(__file__).resolve().parents[2:4]
             if (p / "shared" / "data" / "real").is_dir()), Path("../shared/data/real"))
SETS = {"gta": [REAL / "gta5"], "city": [REAL / "cityscapes" / "leftImg8bit", REAL / "cityscapes_seq"]}
WIDTH = 512


def scaled_copy(sources: list[Path], dest: Path) -> Path:
    """Every image of ``sources`` scaled to WIDTH px wide, as PNG, under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in sources:
        for f in sorted(folder.iterdir()):
            rgb = decode_rgb(f)
            h = round(rgb.shape[0] * WIDTH / rgb.shape[1])
            small = cv2.resize(rgb, (WIDTH, h), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(dest / f"{f.stem}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", default="standin", choices=["inception", "standin"])
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", type=Path, default=Path("/tmp/realism_bench"))
    ap.add_argument("--generator", action="append", default=[], metavar="DIRECTION=FILE",
                    help="another generator to score, e.g. gta2city=run/gta2city.safetensors (repeatable)")
    ap.add_argument("--precision", default="fp32", help="translate --precision for every generator")
    ap.add_argument("--standin-seed", type=int, default=0,
                    help="the stand-in network's seed (its distances differ from seed to seed; compare within one)")
    args = ap.parse_args()
    extra: dict[str, list[str]] = {"gta2city": [], "city2gta": []}
    for item in args.generator:
        direction, _, path = item.partition("=")
        if direction not in extra or not path:
            ap.error(f"--generator {item!r}: expected gta2city=FILE or city2gta=FILE")
        extra[direction].append(path)
    frames = {k: scaled_copy(v, args.out / "frames" / k) for k, v in SETS.items()}
    rows = []
    for direction, source, target in (("gta2city", "gta", "city"), ("city2gta", "city", "gta")):
        settings = RealismSettings(real=frames[target], features=args.features, standin_seed=args.standin_seed,
                                   inception_weights=args.inception_weights, progress=False,
                                   cache_dir=str(args.out / "cache"))
        sets = [("nothing (raw frames)", frames[source], None)]
        for name in (f"{direction}_demo", f"{direction}_demo_fast", *extra[direction]):
            label = f"{Path(name).parent.name}_{Path(name).stem}" if name in extra[direction] else name
            out = args.out / "translated" / direction / label
            if not out.is_dir():
                translate(TranslateConfig(frames[source], out, weights=name, progress=False,
                                          precision=args.precision))
            sets.append((name, out, frames[source]))
        for label, generated, inputs in sets:
            t0 = time.perf_counter()
            report = evaluate_realism(RealismConfig(generated, settings, inputs))
            row = {"direction": direction, "set": label, **report.to_dict(), "seconds": time.perf_counter() - t0}
            rows.append(row)
            a = report.artifacts
            print(f"| {direction} | {label} | {row['n_generated']} vs {row['n_real']} | {row['fid']:.1f} | "
                  f"{row['kid'] * 1e3:.1f} +- {row['kid_std'] * 1e3:.1f} | "
                  f"{f'{a.mean:.1f}x (worst {a.worst:.1f}x), peaks {a.output_peaks:.1f}x' if a else '-'} |",
                  flush=True)
    (args.out / "realism_demo.json").write_text(json.dumps(rows, indent=2))
    print(f"network: {rows[0]['network']}")


if __name__ == "__main__":
    main()
