"""Peak memory of ``gtacity translate`` on one huge photo: whole-frame vs tiled.

Makes a WIDTHxHEIGHT JPEG at run time (a real Cityscapes frame scaled up, in a temporary folder;
nothing made from it is kept) and runs the real command line on it in a child process per case,
reading the child's peak resident memory (``ru_maxrss``) when it exits:

- ``tiny, --tile 0``: a random ngf 8 / 2-block generator translating the whole frame (what every
  generator did before tiling existed);
- ``demo, auto``: the bundled demo generator (ngf 32, 6 blocks) with the default tiling decision;
- ``tiny, auto``: the tiny generator with the default tiling decision.

    python benchmarks/tile_memory.py [--size 9000x6000] [--cases tiny-whole,demo-auto,tiny-auto]
        [--frame ../shared/data/real/cityscapes/leftImg8bit/aachen_000000_000019_leftImg8bit.png]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from gtacity.checkpoint import save_generator
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.nets import ResnetGenerator, init_weights

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "cityscapes" / "leftImg8bit"
CASES = {
    "tiny-whole": ("tiny", ["--tile", "0"]),
    "demo-auto": ("demo", []),
    "tiny-auto": ("tiny", []),
}


def make_photo(path: Path, width: int, height: int, frame: Path) -> None:
    image = cv2.resize(cv2.imread(str(frame)), (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])


def peak_rss_of(command: list[str]) -> tuple[float, float, str]:
    """(peak resident GiB, seconds, last output line) of a child process run to its end."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    # RUSAGE_CHILDREN is the largest peak among waited-for children: run one case per process.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    line = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1]
    return peak, seconds, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="9000x6000")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--frame", type=Path, default=REAL / "aachen_000000_000019_leftImg8bit.png",
                        help="the real frame to scale up")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a fresh process
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    if args.case:
        run_case(args.case, width, height, args.frame)
        return
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    for case in args.cases.split(","):
        # A fresh interpreter per case: RUSAGE_CHILDREN only ever grows within one process.
        subprocess.run([sys.executable, __file__, "--size", args.size, "--frame", str(args.frame),
                        "--case", case], check=True)


def run_case(case: str, width: int, height: int, frame: Path) -> None:
    net, options = CASES[case]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        make_photo(folder / "big.jpg", width, height, frame)
        command = [sys.executable, "-m", "gtacity", "translate", str(folder / "big.jpg"),
                   "-o", str(folder / "out.jpg"), "-q", *options]
        if net == "tiny":
            torch.manual_seed(0)
            tiny = init_weights(ResnetGenerator(ngf=8, n_blocks=2)).eval()
            weights = save_generator(tiny, folder / "tiny.safetensors", direction="gta2city")
            command += ["--weights", str(weights)]
        peak, seconds, line = peak_rss_of(command)
        print(f"{case:11s} {width}x{height}: peak RSS {peak:.2f} GiB, {seconds:.0f} s; {line}")


if __name__ == "__main__":
    main()
