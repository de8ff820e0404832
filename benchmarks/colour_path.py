"""Where a video's colour is converted: the RGB path (swscale, CPU) vs the plane path (kernels).

One H.264 clip is translated twice with the same backend, once with RGB frames and once with the
decoder's 4:2:0 planes (gtacity.engine.media.planes), both written losslessly (x264 crf 0), then:

- agreement: the model input of the plane path (back to bytes) vs the RGB path's frames, and the
  two outputs' YUV planes: max and mean difference in 8-bit levels;
- CPU cost: swscale's own time per frame on this clip (YUV -> RGB after decoding plus RGB -> YUV
  before encoding, timed alone on the clip's frames), which is what the plane path takes off the
  CPU, and each stage's busy ms per frame on both paths (decode and encode are CPU work; the
  plane path's conversion is inside preprocess/postprocess, on the device).

Without --clip, a clip is made in a temporary folder from the real GTA5 frames of
shared/data/real (never copied into the repository): --frames frames, the stills looped and
resized to --size, BT.709 limited range, x264 crf 18.

    python benchmarks/colour_path.py [--clip CLIP] [--size 1920x1080] [--frames 48] \\
        [--device cuda] [--weights FILE] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.media.colour import VideoColour
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import VideoSource
from gtacity.engine.stream.convert import to_batch
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.engine.stream.stages import STAGES
from gtacity.images import decode_rgb
from gtacity.kernels import from_model_output


def _real_gta5() -> Path:
    """``$GTACITY_REAL_DATA/gta5``, else ``shared/data/real/gta5`` beside the checkout or one level up."""
    if os.environ.get("GTACITY_REAL_DATA"):
        return Path(os.environ["GTACITY_REAL_DATA"]) / "gta5"
    root = Path(__file__).resolve().parents[1]
    candidates = [parent / "shared" / "data" / "real" / "gta5" for parent in root.parents[:2]]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    """An H.264 clip of the real GTA5 stills, looped, tagged BT.709 limited range."""
    folder = _real_gta5()
    stills = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg")) if folder.is_dir() else []
    if not stills:
        raise SystemExit(f"colour_path: no frames in {folder}; pass --clip")
    images = [cv2.resize(decode_rgb(p), (width, height), interpolation=cv2.INTER_AREA) for p in stills]
    colour = VideoColour.from_tags(matrix=1, range=1, primaries=1, transfer=1, width=width, height=height)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        ctx = video.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1
        for i in range(frames):
            frame = colour.from_rgb(images[i % len(images)], "yuv420p", VideoReformatter())
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))


def swscale_ms(clip: Path) -> tuple[float, float]:
    """Median ms per frame of the RGB path's two conversions on this clip: to RGB, back to YUV."""
    to_rgb, from_rgb = [], []
    with av.open(str(clip)) as container:
        decoded = next(container.decode(video=0))
    colour, reformatter = VideoColour.of_frame(decoded), VideoReformatter()
    for _ in range(10):
        t = time.perf_counter()
        rgb = colour.to_rgb(decoded, reformatter)
        t1 = time.perf_counter()
        colour.from_rgb(rgb, "yuv420p", reformatter)
        to_rgb.append(t1 - t)
        from_rgb.append(time.perf_counter() - t1)
    return 1000 * float(np.median(to_rgb)), 1000 * float(np.median(from_rgb))


def input_difference(clip: Path) -> np.ndarray:
    """Per pixel and channel: the plane path's model input (as bytes) vs the RGB path's frames."""
    with VideoSource(clip) as rgb, VideoSource(clip, planes=True) as yuv:
        return np.concatenate([
            np.abs(from_model_output(to_batch([p], torch.device("cpu")), *p.size).numpy()[0]
                   .astype(np.int16) - r.image).ravel()
            for r, p in zip(rgb, yuv)
        ])


def planes_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray() for frame in container.decode(video=0)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--size", default="960x540", help="WxH of the clip made without --clip")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--weights", type=Path, default=None, help="default: the bundled demo")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    print(describe_machine(machine_info()), describe_versions(versions()), sep="\n")
    net, _ = load_generator(args.weights or bundled_generator("gta2city"))
    backend = create_backend(args.backend, net, precision=args.precision, device=args.device)
    with tempfile.TemporaryDirectory(prefix="gtacity-colour-") as tmp:
        folder = Path(tmp)
        clip = args.clip
        if clip is None:
            clip = folder / "clip.mp4"
            make_clip(clip, *map(int, args.size.split("x")), args.frames)
        runs = {}
        for name, planes in (("rgb", False), ("planes", True)):
            with VideoSource(clip, planes=planes) as source:
                sink = open_sink(folder / f"{name}.mp4", source, crf=0)
                runs[name] = run_pipeline(source, sink, backend, batch_size=args.batch_size)
        diff = np.abs(planes_of(folder / "rgb.mp4").astype(np.int16) - planes_of(folder / "planes.mp4"))
        decode_ms, encode_ms = swscale_ms(clip)
        into = input_difference(clip)
    print(f"{clip.name if args.clip else args.size}, {backend.describe()}, batch {args.batch_size}")
    print(f"agreement, plane path vs RGB path: model input (as RGB bytes) max {into.max()} levels, "
          f"mean {into.mean():.4f}; output YUV planes max {diff.max()}, mean {diff.mean():.4f}")
    print(f"swscale on the RGB path: {decode_ms:.2f} ms/frame YUV -> RGB + {encode_ms:.2f} ms/frame "
          "RGB -> YUV (one thread, timed alone); the plane path runs neither")
    print("path    frames  planes  fps     " + "  ".join(f"{s:>11}" for s in STAGES) + "   (busy ms/frame)")
    for name, times in runs.items():
        per_frame = "  ".join(f"{1000 * times.busy[s] / times.frames:11.2f}" for s in STAGES)
        print(f"{name:7} {times.frames:6}  {times.planes:6}  {times.fps:6.2f}  {per_frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
