"""How far the colour kernels are from the CPU path (engine/colour.py: swscale), in 8-bit levels.

Each real frame (``shared/data/real``: GTA5 and Cityscapes, ``--per-folder`` of each) is converted
to yuv420p by the CPU path, once per matrix (BT.601, BT.709) and range (limited, full), then:

- decode: the planes -> model input by :func:`gtacity.kernels.yuv420p_to_model_input`, back to
  bytes, vs the CPU path's RGB of the same planes;
- encode: the frame as model output -> yuv420p by :func:`gtacity.kernels.model_output_to_yuv420p`,
  vs the CPU path's planes (luma and chroma reported apart).

Runs the torch references on the CPU: the Triton kernels give the same bytes exactly (integer
arithmetic; tests/test_kernels_triton.py checks it on every shape, and on crops of these frames).

    python benchmarks/kernels_colour.py [--per-folder 4] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from gtacity import kernels
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.media.colour import VideoColour
from gtacity.images import decode_rgb

FOLDERS = ("gta5", "cityscapes/leftImg8bit")
MATRICES = {"bt601": 6, "bt709": 1}  # kernel name -> AVColorSpace tag


def _real_data() -> Path:
    """``shared/data/real`` beside the checkout, or one level up (a worktree)."""
    root = Path(__file__).resolve().parents[1]
    candidates = [parent / "shared" / "data" / "real" for parent in root.parents[:2]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def errors(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int32) - b.astype(np.int32))


def compare(rgb: np.ndarray, matrix: str, full_range: bool) -> dict[str, np.ndarray]:
    """Absolute differences (levels) of decode, encode luma and encode chroma for one frame."""
    h, w = rgb.shape[:2]
    colour = VideoColour.from_tags(
        matrix=MATRICES[matrix], range=2 if full_range else 1, primaries=2, transfer=2,
        width=w, height=h,
    )
    planes = colour.from_rgb(rgb, "yuv420p", VideoReformatter()).to_ndarray()  # (H*3/2, W)
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    cpu_rgb = colour.to_rgb(frame, VideoReformatter())
    y, u, v = kernels.split_yuv420p(torch.from_numpy(planes)[None])
    x = kernels.yuv420p_to_model_input(y, u, v, matrix=matrix, full_range=full_range)
    decoded = kernels.from_model_output(x, h, w)[0].numpy()
    model = kernels.to_model_input(torch.from_numpy(rgb)[None])
    encoded = kernels.model_output_to_yuv420p(model, h, w, matrix=matrix, full_range=full_range)
    encoded = encoded[0].numpy()
    return {
        "decode RGB": errors(decoded, cpu_rgb),
        "encode Y": errors(encoded[:h], planes[:h]),
        "encode UV": errors(encoded[h:], planes[h:]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-folder", type=int, default=4)
    parser.add_argument("--data", type=Path, default=_real_data())
    args = parser.parse_args()
    files = []
    for folder in FOLDERS:
        files += sorted((args.data / folder).glob("*.png"))[: args.per_folder]
    if not files:
        print(f"kernels_colour: no real frames under {args.data}; pass --data DIR")
        return 1
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    print(f"{len(files)} frames: " + ", ".join(f.name for f in files))
    print(f"\n{'matrix':7} {'range':8} {'what':11} {'max':>4} {'mean':>7}")
    for matrix in MATRICES:
        for full_range in (False, True):
            totals: dict[str, list[np.ndarray]] = {}
            for path in files:
                rgb = decode_rgb(path)
                rgb = np.ascontiguousarray(rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2])
                for what, diff in compare(rgb, matrix, full_range).items():
                    totals.setdefault(what, []).append(diff.ravel())
            for what, diffs in totals.items():
                d = np.concatenate(diffs)
                rng = "full" if full_range else "limited"
                print(f"{matrix:7} {rng:8} {what:11} {d.max():4d} {d.mean():7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
