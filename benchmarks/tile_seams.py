"""How far a tiled translation is from the whole-frame one, over the frame and at the seams.

InstanceNorm normalises every tile with its own statistics, so tiles disagree a little with the
whole frame and with each other. For real frames (read from ``../shared/data/real``, never copied)
and the bundled demo generator (torch, fp32), this prints the mean absolute difference in 8-bit
levels between the tiled and the whole-frame translation: over all pixels, within 4 px of a seam
(where tiles meet, the middle of each overlap), and the seam's excess: how much larger the jump
between neighbouring pixels across a seam is than in the whole-frame translation.

    python benchmarks/tile_seams.py [--tile 512] [--overlaps 0,32,64,128] [--frames N] [--real DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.backends.tiling import infer_in_tiles, tile_starts
from gtacity.engine.frames import Frame
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.stream.convert import to_batch, to_frames

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"  # --real elsewhere


def seam_lines(length: int, tile: int, overlap: int) -> list[int]:
    """Where neighbouring tiles meet: the middle of each overlap."""
    starts = tile_starts(length, tile, overlap)
    return [(s + prev + tile) // 2 for prev, s in zip(starts, starts[1:])]


def compare(whole: np.ndarray, tiled: np.ndarray, tile: int, overlap: int) -> tuple[float, ...]:
    height, width = whole.shape[:2]
    diff = np.abs(whole.astype(float) - tiled.astype(float))
    near = np.zeros((height, width), bool)
    jumps = []
    for x in seam_lines(width, tile, overlap):
        near[:, max(0, x - 4) : x + 4] = True
        jumps.append(_jump(tiled, x, axis=1) - _jump(whole, x, axis=1))
    for y in seam_lines(height, tile, overlap):
        near[max(0, y - 4) : y + 4] = True
        jumps.append(_jump(tiled, y, axis=0) - _jump(whole, y, axis=0))
    return diff.mean(), diff[near].mean(), float(np.mean(jumps))


def _jump(image: np.ndarray, at: int, axis: int) -> float:
    """Mean absolute step between the pixel rows/columns ``at - 1`` and ``at``."""
    a = np.take(image, at - 1, axis=axis).astype(float)
    b = np.take(image, at, axis=axis).astype(float)
    return float(np.abs(a - b).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlaps", default="0,32,64,128")
    parser.add_argument("--frames", type=int, default=2, help="frames per domain")
    parser.add_argument("--real", type=Path, default=REAL, help="the real sample frames folder")
    args = parser.parse_args()
    real = args.real
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    cases = [("city2gta", p) for p in sorted((real / "cityscapes" / "leftImg8bit").glob("aachen*"))]
    cases = cases[: args.frames]
    cases += [("gta2city", p) for p in sorted((real / "gta5").glob("*.png"))][: args.frames]
    print(f"tile {args.tile}; levels (8-bit): mean |tiled - whole|, the same within 4 px of a "
          "seam, seam jump excess")
    for direction, path in cases:
        net, _info = load_generator(bundled_generator(direction), direction=direction)
        backend = create_backend("torch", net, precision="fp32", device="cpu")
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)

        frames = [Frame(image, 0)]
        x = to_batch(frames, backend.device)

        def run(batch: torch.Tensor) -> torch.Tensor:
            backend.prepare(len(batch), batch.shape[-2], batch.shape[-1])
            with torch.no_grad():
                return backend.infer(batch)

        whole = to_frames(run(x), frames)[0].image
        for overlap in map(int, args.overlaps.split(",")):
            tiled = to_frames(infer_in_tiles(x, run, args.tile, overlap, 1), frames)[0].image
            mean, seam, jump = compare(whole, tiled, args.tile, overlap)
            print(f"{path.name[:40]:40s} {image.shape[1]}x{image.shape[0]} {direction} "
                  f"overlap {overlap:3d}: {mean:5.2f} {seam:5.2f} {jump:+5.2f}")


if __name__ == "__main__":
    main()
