"""A folder job on a local Ray cluster (1 and 2 translating actors) vs the plain folder job.

The input is a tree of PNGs made at run time in a temporary folder by scaling the real GTA5 frames
in ``../shared/data/real/gta5`` (nothing made from them is kept). All runs use the same generator
(the bundled student ``gta2city_demo_fast`` unless ``--weights``) and backend, through the Python
API (``translate(TranslateConfig(...))``, what ``gtacity translate`` calls). Every Ray run's outputs
are compared with the plain run's before any number is printed.

For each run: the wall time of the whole call (a Ray run starts and stops its cluster, and probes
the backend on it), the job's own wall time (from the first item handed out to the last recorded),
images/s over each, and the model's busy share: inference seconds summed over the actors / (the
job's wall time x actors). A warm-up run first fills the OpenVINO conversion cache.

    python benchmarks/ray_vs_plain.py [--images 48] [--scale 0.5] [--backend auto] [--weights FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.translation import TranslateConfig, translate

GTA_FRAMES = next((p / "shared/data/real/gta5" for p in Path(__file__).resolve().parents
                   if (p / "shared/data/real/gta5").is_dir()), None)


def make_tree(root: Path, count: int, scale: float) -> list[Path]:
    """``count`` PNGs in two subfolders: the real GTA5 frames scaled by ``scale``."""
    if GTA_FRAMES is None:
        sys.exit("no ../shared/data/real/gta5 beside the repository")
    frames = sorted(p for p in GTA_FRAMES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    made = []
    for i in range(count):
        image = cv2.imread(str(frames[i % len(frames)]))
        image = cv2.resize(image, _size(scale), interpolation=cv2.INTER_AREA)
        path = root / f"part{i % 2}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        made.append(path.relative_to(root))
    return made


def _size(scale: float) -> tuple[int, int]:
    return int(960 * scale) // 4 * 4, int(528 * scale) // 4 * 4


def run(tree: Path, out: Path, args, **ray) -> tuple[float, object]:
    start = time.perf_counter()
    report = translate(TranslateConfig(tree, out, weights=args.weights, backend=args.backend, progress=False, **ray))
    return time.perf_counter() - start, report


def worst_difference(files: list[Path], a: Path, b: Path) -> int:
    return max(int(np.abs(cv2.imread(str(a / f)).astype(int) - cv2.imread(str(b / f)).astype(int)).max())
               for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--scale", type=float, default=0.5, help="of the 960x528 GTA5 sample frames")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--weights", default="gta2city_demo_fast")
    parser.add_argument("--workers", default="1,2", help="Ray actor counts to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gtacity-ray-bench-") as tmp:
        tmp = Path(tmp)
        files = make_tree(tmp / "tree", args.images, args.scale)
        run(tmp / "tree", tmp / "warm", args)
        rows = [("plain folder job", 1, *run(tmp / "tree", tmp / "plain", args))]
        for workers in (int(w) for w in args.workers.split(",")):
            out = tmp / f"ray{workers}"
            call_s, report = run(tmp / "tree", out, args, ray="local", ray_workers=workers)
            worst = worst_difference(files, tmp / "plain", out)
            if worst > 1 or report.job.translated != args.images:
                sys.exit(f"ray x{workers}: {report.job.line()}, outputs differ from the plain run's by up to "
                         f"{worst} levels; not timing further")
            rows.append((f"--ray local, {workers} actor{'s' * (workers > 1)}", workers, call_s, report))
    first = rows[0][3]
    print(f"machine: {describe_machine(machine_info())}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"versions: {describe_versions(versions())}, ray {_ray_version()}")
    print(f"{args.images} PNGs of {'x'.join(map(str, _size(args.scale)))}, "
          f"{first.backend} {first.precision}, generator ngf {first.generator.ngf} / {first.generator.n_blocks} "
          f"blocks; Ray outputs agree with the plain run's (max diff <= 1)")
    print("| run | call s | images/s (call) | job s | images/s (job) | model busy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, workers, call_s, report in rows:
        job_s = report.times.wall
        busy = report.times.busy["infer"] / (job_s * workers)
        print(f"| {name} | {call_s:.1f} | {args.images / call_s:.2f} | {job_s:.1f} | {args.images / job_s:.2f} "
              f"| {busy:.0%} |")


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
