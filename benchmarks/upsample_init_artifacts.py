"""The checkerboard check on generators that have learnt nothing: which upsampling draws a grid by itself.

For each ``--upsample`` kind and seed, a generator at its initial weights (``init_weights``, the
paper's N(0, 0.02)) translates the frames of ``--frames`` (scaled to ``--width`` px wide, height cut
to a multiple of 4) in torch fp32, and each translation gets the artifact score of
``gtacity.artifacts`` (its period-2/4 spectral peaks over its input's; about 1 =
nothing added, issue 21's bar is 2). Training can lower or raise a score, but a decoder that draws
the grid at initialisation starts from it. Optionally (``--run``) the same for the step generators a
``gtacity train`` run saved.

    python benchmarks/upsample_init_artifacts.py --frames HELDOUT_GTA [--seeds 3] [--ngf 32 --n-blocks 6]
        [--run runs/demo3 --direction gta2city]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from demo_compare import translate

from gtacity.artifacts import artifact_score
from gtacity.checkpoint import load_generator
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb
from gtacity.nets import UPSAMPLES, ResnetGenerator, init_weights


def load_frames(folder: Path, width: int) -> list[np.ndarray]:
    frames = []
    for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        rgb = decode_rgb(f)
        height = round(rgb.shape[0] * width / rgb.shape[1])
        frames.append(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)[: height // 4 * 4])
    return frames


def scores(net: torch.nn.Module, frames: list[np.ndarray]) -> list[float]:
    return [artifact_score(rgb, translate(net, rgb)).score for rgb in frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--n-blocks", type=int, default=6)
    parser.add_argument("--run", type=Path, help="also score every step generator this training run saved")
    parser.add_argument("--direction", default="gta2city")
    args = parser.parse_args()
    frames = load_frames(args.frames, args.width)
    print(f"{len(frames)} frames of {args.frames} at {args.width} px wide; artifact score per frame (mean)")
    for upsample in UPSAMPLES:
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = init_weights(ResnetGenerator(args.ngf, args.n_blocks, upsample=upsample)).eval()
            s = scores(net, frames)
            print(f"init  {upsample:<9} seed {seed}: {', '.join(f'{v:.2f}' for v in s)} (mean {np.mean(s):.2f})")
    if args.run:
        for path in sorted((args.run / "generators").glob(f"step_*_{args.direction}.safetensors")):
            net, info = load_generator(path)
            s = scores(net.float().eval(), frames)
            print(f"{path.stem} ({info.upsample}): {', '.join(f'{v:.2f}' for v in s)} (mean {np.mean(s):.2f})")


if __name__ == "__main__":
    main()
