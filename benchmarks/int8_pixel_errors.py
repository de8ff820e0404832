"""Where int8 departs from fp32, pixel by pixel: the worst pixels of a generator's int8 model.

PSNR averages over every pixel; this reports, per frame, the worst pixel's difference in 8-bit
levels (max over channels), the 99.9th percentile, the share of pixels more than 10 levels off, and
how many of those sit at saturated outputs (|fp32| > 0.95 of the range). The int8 model is the one a
job with an empty cache would use (a bundled generator's shipped model, checked as a job checks it;
any other generator is calibrated on the frames themselves). Frames are scaled to ``--width`` px wide
(INTER_AREA) in a temporary folder; nothing made from them is kept.

    python benchmarks/int8_pixel_errors.py [--weights gta2city_demo] [--frames ../shared/data/real/gta5]
        [--every 3] [--width 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from translate_vs_official import GTA_FRAMES

from gtacity.checkpoint import generator_path, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.exporters.int8 import calibration_frames, check_frames
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="gta2city_demo")
    parser.add_argument("--frames", type=Path, default=GTA_FRAMES)
    parser.add_argument("--every", type=int, default=3, help="every Nth frame of the folder (sorted)")
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    print(f"machine: {describe_machine(machine_info())}")
    print(f"versions: {describe_versions(versions())}")
    net, _ = load_generator(generator_path(args.weights))
    files = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:: args.every]
    with tempfile.TemporaryDirectory(prefix="gtacity-int8-errors-") as folder:
        # An empty cache: a bundled generator's shipped model, not one an earlier job left behind.
        backend = create_backend("openvino", net, precision="int8", cache_dir=str(Path(folder) / "cache"))
        folder = str(Path(folder) / "frames")
        Path(folder).mkdir()
        for f in files:
            rgb = decode_rgb(f)
            height = round(rgb.shape[0] * args.width / rgb.shape[1])
            small = cv2.resize(rgb, (args.width, height), interpolation=cv2.INTER_AREA)[: height // 4 * 4]
            cv2.imwrite(str(Path(folder) / f"{f.stem}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if not backend.reuse_calibration(check_frames(folder)):
            backend.calibrate(calibration_frames(folder), progress=False)
        print(backend.int8_check.line())
        print("| frame | worst pixel (levels) | p99.9 | pixels > 10 levels | of those at saturated outputs |")
        print("| --- | --- | --- | --- | --- |")
        for f in sorted(Path(folder).iterdir()):
            rgb = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
            backend.prepare(1, *x.shape[-2:])
            with torch.no_grad():
                reference = net(x)
            diff = ((backend.infer(x) - reference).abs() * 127.5)[0].amax(0).numpy()
            big = diff > 10
            saturated = reference[0].abs().amax(0).numpy() > 0.95
            print(f"| {f.stem} | {diff.max():.1f} | {np.percentile(diff, 99.9):.1f} | {big.mean() * 100:.3f}% | "
                  f"{(big & saturated).sum() / max(big.sum(), 1) * 100:.0f}% |")


if __name__ == "__main__":
    main()
