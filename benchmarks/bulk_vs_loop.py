"""A bulk folder job vs the same images translated one by one in a shell loop.

The input is a small tree of 1914x1052 PNGs (the GTA5 dataset's frame size), made at run time in a
temporary folder by scaling the real GTA5 frames in ``../shared/data/real/gta5`` up 2x (nothing made
from them is kept). Both sides use the same generator (the bundled demo one unless ``--weights``)
and backend, and write PNGs.

- bulk: ``gtacity translate TREE -o OUT`` once, as a user runs it (process start-up included);
- loop: ``for f in ...; do gtacity translate "$f" -o "OUT/$f"; done`` in bash, one process per image;
- then the bulk job once more through the Python API, for the seconds each stage worked: the share
  of the job's wall time the model was busy (the issue's goal: >= 85% on a many-core machine).

The outputs of both sides are compared pixel by pixel before any number is printed. A warm-up
translation first fills the OpenVINO conversion cache, so neither side pays for the conversion.

    python benchmarks/bulk_vs_loop.py [--images 6] [--backend auto] [--weights FILE]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.stream.imagepool import default_workers
from gtacity.engine.translation import TranslateConfig, translate

GTA_FRAMES = next((p / "shared/data/real/gta5" for p in Path(__file__).resolve().parents
                   if (p / "shared/data/real/gta5").is_dir()), None)
SIZE = (1914, 1052)


def make_tree(root: Path, count: int) -> list[Path]:
    """``count`` 1914x1052 PNGs in two subfolders, scaled up from the real GTA5 frames."""
    if GTA_FRAMES is None:
        sys.exit("no ../shared/data/real/gta5 beside the repository")
    frames = sorted(p for p in GTA_FRAMES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    made = []
    for i in range(count):
        image = cv2.resize(cv2.imread(str(frames[i % len(frames)])), SIZE, interpolation=cv2.INTER_CUBIC)
        path = root / f"part{i % 2}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        made.append(path.relative_to(root))
    return made


def timed(command: str) -> float:
    start = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    gtacity = shlex.join([sys.executable, "-m", "gtacity"])
    opts = f"--backend {shlex.quote(args.backend)} -q" + (f" --weights {shlex.quote(args.weights)}" if args.weights else "")
    with tempfile.TemporaryDirectory(prefix="gtacity-bulk-bench-") as tmp:
        tmp = Path(tmp)
        files = make_tree(tmp / "tree", args.images)
        timed(f"{gtacity} translate {tmp / 'tree' / files[0]} -o {tmp / 'warm.png'} {opts}")
        bulk_s = timed(f"{gtacity} translate {tmp / 'tree'} -o {tmp / 'bulk'} {opts}")
        loop = (f"cd {tmp / 'tree'} && for f in $(find . -name '*.png' | sort); do "
                f"{gtacity} translate \"$f\" -o \"{tmp / 'loop'}/$f\" {opts} || exit 1; done")
        loop_s = timed(loop)
        worst = max(int(np.abs(cv2.imread(str(tmp / "bulk" / f)).astype(int)
                               - cv2.imread(str(tmp / "loop" / f)).astype(int)).max()) for f in files)
        if worst > 1:
            sys.exit(f"bulk and loop outputs differ by up to {worst} levels; not timing further")
        report = translate(TranslateConfig(tmp / "tree", tmp / "api", weights=args.weights,
                                           backend=args.backend, progress=False))
    t = report.times
    print(f"machine: {describe_machine(machine_info())}; machine shared with other jobs")
    print(f"versions: {describe_versions(versions())}")
    print(f"{args.images} PNGs {SIZE[0]}x{SIZE[1]}, {report.backend} {report.precision}, "
          f"generator ngf {report.generator.ngf} / {report.generator.n_blocks} blocks, "
          f"{default_workers()} I/O threads; outputs agree (max diff {worst})")
    print(f"bulk job:   {bulk_s:7.1f} s  {args.images / bulk_s:.3f} images/s")
    print(f"shell loop: {loop_s:7.1f} s  {args.images / loop_s:.3f} images/s")
    print(f"bulk / loop: {loop_s / bulk_s:.2f}x")
    busy = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in t.busy.items())
    print(f"API run of the bulk job: {t.wall:.1f} s, stage busy seconds: {busy}; "
          f"model busy {t.busy['infer'] / t.wall:.0%} of the run")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
