"""Teachers vs their distilled students: MACs, end-to-end frames/s and fidelity on held-out frames.

For each (teacher, student) pair given as ``--pair NAME TEACHER STUDENT``:

- MACs per frame (:func:`gtacity.nets.count_macs`, equal to FlopCounterMode) at 256x256 and at the
  clip's size;
- end to end: ``gtacity.engine.translation.translate`` (defaults: backend auto, precision auto,
  batch 1; decode, infer and encode on their own threads) over an H.264 clip made at run time in a
  temporary folder from the held-out frames (scaled to ``--width``, cycled to ``--frames``); one
  untimed warm-up call each (it fills the conversion cache), then ``--rounds`` rounds alternating
  teacher and student; medians of the pipeline's frames/s;
- fidelity: ``gtacity.engine.measure.fidelity.evaluate_fidelity`` over the held-out frames (scaled the same
  way): PSNR and SSIM of the student vs the teacher, as uint8 frames.

Nothing made from the frames is kept.

    python benchmarks/distill.py --heldout DIR --pair demo T.safetensors S.safetensors [--pair ...] \
        [--frames 120] [--rounds 3] [--precision int8]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from gtacity.checkpoint import read_generator_file
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.measure.fidelity import FidelityConfig, evaluate_fidelity
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.images import decode_rgb
from gtacity.nets import count_macs


def scaled_frames(folder: Path, width: int) -> list[np.ndarray]:
    """Every image of ``folder``, resized to ``width`` (height keeps the aspect, rounded to even)."""
    frames = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg")):
        image = decode_rgb(path)
        height = round(image.shape[0] * width / image.shape[1] / 2) * 2
        frames.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    return frames


def write_clip(path: Path, frames: list[np.ndarray], count: int) -> None:
    height = min(f.shape[0] for f in frames)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], height, "yuv420p"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i % len(frames)][:height]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def e2e_fps(weights: str, clip: Path, tmp: Path, precision: str) -> float:
    report = translate(TranslateConfig(clip, tmp / "out.mp4", weights=weights, overwrite=True, progress=False,
                                       precision=precision))
    return report.times.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", type=Path, required=True, help="Held-out source-domain frames.")
    parser.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "TEACHER", "STUDENT"), required=True)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto",
                        help="translate --precision for both, end to end (int8: calibrated on the clip, "
                             "during the untimed warm-up call); fidelity stays at the backend's default")
    args = parser.parse_args()
    print(f"machine   {describe_machine(machine_info())}")
    print(f"versions  {describe_versions(versions())}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frames = scaled_frames(args.heldout, args.width)
        (tmp / "heldout").mkdir()
        for i, f in enumerate(frames):
            cv2.imwrite(str(tmp / "heldout" / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        write_clip(tmp / "clip.mp4", frames, args.frames)
        h, w = min(f.shape[0] for f in frames), args.width
        print(f"clip      {args.frames} frames of {w}x{h} from {len(frames)} held-out frames; fidelity on those frames")
        for name, teacher, student in args.pair:
            macs = {}
            for role, path in (("teacher", teacher), ("student", student)):
                info = read_generator_file(path)[1]
                macs[role] = (count_macs(info.ngf, info.n_blocks, 256, 256, arch=info.arch, upsample=info.upsample) / 1e9,
                              count_macs(info.ngf, info.n_blocks, -(-h // 4) * 4, w, arch=info.arch, upsample=info.upsample) / 1e9)
                e2e_fps(path, tmp / "clip.mp4", tmp, args.precision)  # warm-up: conversion (and int8) cache
            fps = {"teacher": [], "student": []}
            for _ in range(args.rounds):
                for role, path in (("teacher", teacher), ("student", student)):
                    fps[role].append(e2e_fps(path, tmp / "clip.mp4", tmp, args.precision))
            med = {role: statistics.median(v) for role, v in fps.items()}
            fid = evaluate_fidelity(FidelityConfig(tmp / "heldout", teacher, student, progress=False))
            print(f"\n[{name}]  (fidelity: {fid.backend}; e2e: --precision {args.precision})")
            a = max(len(fid.teacher.info.arch), len(fid.student.info.arch))
            print(f"{'':8} {'arch':{a}} {'ngf':>4} {'blocks':>6} {'GMAC@256':>9} {'GMAC@clip':>10} {'e2e fps':>8}")
            for role, m in (("teacher", fid.teacher), ("student", fid.student)):
                print(f"{role:8} {m.info.arch:{a}} {m.info.ngf:>4} {m.info.n_blocks:>6} {macs[role][0]:>9.2f} "
                      f"{macs[role][1]:>10.2f} {med[role]:>8.2f}")
            print(f"student: {macs['teacher'][0] / macs['student'][0]:.1f}x fewer MACs, "
                  f"{med['student'] / med['teacher']:.2f}x e2e frames/s; vs teacher on {fid.frames} held-out frames: "
                  f"PSNR {fid.psnr_mean:.2f} dB (worst {fid.psnr_min:.2f}), SSIM {fid.ssim_mean:.4f} (worst {fid.ssim_min:.4f})")
            print(f"e2e fps per round: teacher {[round(v, 2) for v in fps['teacher']]}, "
                  f"student {[round(v, 2) for v in fps['student']]}")


if __name__ == "__main__":
    main()
