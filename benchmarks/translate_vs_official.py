"""``gtacity translate`` end to end vs a loop written the way the official CycleGAN ``test.py`` works.

Both translate the same 256x256 H.264 clip (60 frames, made at run time in a temporary folder from
the real GTA5 frames in ``../shared/data/real/gta5``; nothing made from them is kept) with the same
generator file, and both write H.264 (libx264, crf 18, preset medium, the translate defaults).

- ours: ``gtacity.engine.translation.translate`` with its defaults (backend auto, precision auto,
  batch 1): decode, infer and encode on their own threads.
- baseline, as ``test.py``: decode each frame to a PIL image, ``ToTensor`` + ``Normalize(0.5, 0.5)``,
  batch 1, eager fp32 forward under ``no_grad``, ``tensor2im`` (which truncates to uint8), and
  write the frame; all on one thread. It writes a video with PyAV instead of PNGs so that both do
  the same output work, and it skips test.py's resize (a no-op at this size): both favour it.

Rounds alternate baseline and ours; medians are reported. Accuracy, in 8-bit levels, compares
ours (decoded from its output video) with the baseline's fp32 frames before encoding, and splits
the difference into what the codec and what reduced precision contribute.

    python benchmarks/translate_vs_official.py [--frames 60] [--rounds 3] [--weights FILE]
        [--precision int8] [--only random|demo]

Every run starts from an empty conversion cache (``GTACITY_CACHE_DIR`` in the temporary folder).
With ``--precision int8`` the generator's int8 model is made once before the rounds, as a user gets
it: a bundled generator's shipped model (no calibration), or for any other generator a calibration
on the GTA5 sample frames, as ``train`` does at its end from its own training frames (never on the
clip); each round is then a job on an input the model has never seen, which reads that model and
checks it against fp32 on 4 of the input's frames (the whole call includes that check).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torchvision import transforms

from gtacity.checkpoint import bundled_generator, load_generator, read_generator_file, save_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.exporters.int8 import calibration_frames, check_frames, frames_of_images
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.nets import ResnetGenerator, count_macs, init_weights
from gtacity.quality import psnr

# ../shared/data/real/gta5 seen from the project root (or from a worktree's parent folders).
GTA_FRAMES = next((p / "shared" / "data" / "real" / "gta5" for p in Path(__file__).resolve().parents
                   if (p / "shared" / "data" / "real" / "gta5").is_dir()), Path("shared/data/real/gta5"))
SIZE, FPS, CRF, PRESET = 256, 25, 18, "medium"
BT601 = (6, 6, 6)  # matrix, primaries, transfer: SMPTE 170M, what SD video is tagged with


def make_clip(path: Path, frames: int) -> None:
    """A 256x256 pan across the GTA5 frames (each scaled to 256 px high), 4 crops per frame."""
    images = sorted(p for p in GTA_FRAMES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if not images:
        sys.exit(f"no GTA5 frames in {GTA_FRAMES}")
    with av.open(str(path), "w") as out:
        stream = _h264_stream(out)
        for i in range(frames):
            bgr = cv2.imread(str(images[(i // 4) % len(images)]))
            width = round(bgr.shape[1] * SIZE / bgr.shape[0])
            scaled = cv2.resize(bgr, (width, SIZE), interpolation=cv2.INTER_AREA)
            x = (i % 4) * (scaled.shape[1] - SIZE) // 3
            rgb = np.ascontiguousarray(cv2.cvtColor(scaled[:, x : x + SIZE], cv2.COLOR_BGR2RGB))
            out.mux(stream.encode(_video_frame(rgb, i)))
        out.mux(stream.encode(None))


def _h264_stream(out: av.container.OutputContainer) -> av.VideoStream:
    stream = out.add_stream("libx264", rate=FPS, options={"crf": str(CRF), "preset": PRESET})
    stream.width = stream.height = SIZE
    stream.pix_fmt = "yuv420p"
    ctx = stream.codec_context
    ctx.colorspace, ctx.color_primaries, ctx.color_trc = BT601
    ctx.color_range = 1  # limited, H.264's default
    return stream


def _video_frame(rgb: np.ndarray, index: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts = index
    return frame


def baseline(clip: Path, weights: Path, out: Path) -> tuple[float, float, list[np.ndarray], list[np.ndarray]]:
    """The official test.py way.

    Returns:
        (loop seconds, total seconds, fp32 frames rounded to uint8, the frames it encoded)
    """
    start = time.perf_counter()
    net, _ = load_generator(weights)  # fp32, like the official load_networks
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    reference, written = [], []
    loop_start = time.perf_counter()
    with av.open(str(clip)) as inp, av.open(str(out), "w") as container:
        stream = _h264_stream(container)
        for i, frame in enumerate(inp.decode(video=0)):
            x = transform(frame.to_image()).unsqueeze(0)  # (1, 3, H, W) in [-1, 1]
            with torch.no_grad():
                y = net(x)
            image = y[0].float().numpy()
            reference.append(np.round((np.transpose(image, (1, 2, 0)) + 1) * 127.5).clip(0, 255).astype(np.uint8))
            written.append(((np.transpose(image, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8))  # tensor2im
            container.mux(stream.encode(_video_frame(written[-1], i)))
        container.mux(stream.encode(None))
    end = time.perf_counter()
    return end - loop_start, end - start, reference, written


def ours(clip: Path, weights: Path, out: Path, precision: str) -> tuple[float, float, str]:
    """``translate`` with its defaults (or ``precision``); returns (pipeline s, total s, backend)."""
    start = time.perf_counter()
    report = translate(TranslateConfig(clip, out, weights=weights, crf=CRF, preset=PRESET, progress=False,
                                       precision=precision))
    return report.times.wall, time.perf_counter() - start, f"{report.backend} {report.precision}"


def decoded(path: Path) -> list[np.ndarray]:
    with open_source(path) as source:
        return [frame.image for frame in source]


def our_preencode(clip: Path, weights: Path, precision: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Our backend's frames before encoding, and fp32 on the same (our) decoded input."""
    net, _ = load_generator(weights)
    backend = create_backend("auto", net, precision=precision)
    if backend.needs_calibration() and not backend.reuse_calibration(check_frames(clip)):  # as translate does
        backend.calibrate(calibration_frames(clip))
    ours_frames, fp32_frames = [], []
    with open_source(clip) as source:
        for frame in source:
            x = to_batch([frame], backend.device)
            backend.prepare(1, *x.shape[-2:])
            ours_frames.append(to_frames(backend.infer(x), [frame])[0].image)
            with torch.no_grad():
                fp32_frames.append(to_frames(net(x), [frame])[0].image)
    return ours_frames, fp32_frames


def _psnr_8bit(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """PSNR of two 8-bit frame lists taken as one image (peak 255)."""
    return float(psnr(torch.from_numpy(np.stack(a)).reshape(1, -1) / 255.0,
                      torch.from_numpy(np.stack(b)).reshape(1, -1) / 255.0)[0])


def levels(a: list[np.ndarray], b: list[np.ndarray]) -> str:
    d = np.abs(np.stack(a).astype(np.int16) - np.stack(b).astype(np.int16))
    return f"mean {d.mean():.2f}, p99 {np.percentile(d, 99):.0f}, max {d.max()}"


def compare(name: str, weights: Path, clip: Path, frames: int, rounds: int, tmp: Path, precision: str) -> None:
    _, info = read_generator_file(weights)  # metadata only; no network to build
    gmacs = count_macs(info.ngf, info.n_blocks, SIZE, SIZE) / 1e9
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "ours": []}
    backend = create_backend("auto", load_generator(weights)[0], precision=precision)
    if backend.needs_calibration():  # the generator's int8 model, made once as it would be for a user
        start = time.perf_counter()
        if backend.reuse_calibration(check_frames(clip)):  # a bundled generator ships its own
            print(f"int8 model: no calibration ({time.perf_counter() - start:.1f} s); {backend.int8_check.line()}")
        else:  # what train's end (or export --calibration) does once, from the generator's own domain
            images = sorted(p for p in GTA_FRAMES.iterdir() if p.suffix.lower() in (".png", ".jpg"))
            backend.calibrate(frames_of_images(images), progress=False)
            print(f"int8 model: calibrated once on {len(images)} GTA5 frames (not on the clip), "
                  f"{time.perf_counter() - start:.1f} s; {backend.int8_check.line()}")
    for r in range(rounds):
        loop_s, total_s, reference, written = baseline(clip, weights, tmp / "baseline.mp4")
        runs["baseline"].append((loop_s, total_s))
        pipe_s, total_s, backend = ours(clip, weights, tmp / "ours.mp4", precision)
        (tmp / "ours.mp4").replace(tmp / "ours_kept.mp4")
        runs["ours"].append((pipe_s, total_s))
        print(f"  round {r + 1}: baseline {frames / loop_s:.2f} frames/s, ours {frames / pipe_s:.2f} frames/s; "
              f"whole call baseline {runs['baseline'][-1][1]:.1f} s, ours {total_s:.1f} s")
    base_loop, base_total = (statistics.median(v) for v in zip(*runs["baseline"]))
    our_pipe, our_total = (statistics.median(v) for v in zip(*runs["ours"]))
    print(f"\n### {name}: ngf {info.ngf}, {info.n_blocks} blocks, {gmacs:.2f} GMAC/frame, "
          f"{frames} frames {SIZE}x{SIZE}, {rounds} rounds (medians)\n")
    print("| | baseline (test.py-style, eager fp32) | ours (translate defaults: " + backend + ") | ratio |")
    print("|---|---|---|---|")
    print(f"| frames/s, frame loop / pipeline | {frames / base_loop:.2f} | {frames / our_pipe:.2f} | "
          f"{base_loop / our_pipe:.2f}x |")
    print(f"| seconds, whole call (load, set up, run) | {base_total:.1f} | {our_total:.1f} | "
          f"{base_total / our_total:.2f}x |")
    print(f"| frames/s over the whole call | {frames / base_total:.2f} | {frames / our_total:.2f} | "
          f"{base_total / our_total:.2f}x |")
    ours_video, base_video = decoded(tmp / "ours_kept.mp4"), decoded(tmp / "baseline.mp4")
    ours_pre, fp32_ours_input = our_preencode(clip, weights, precision)
    with av.open(str(clip)) as inp:
        pil_input = [np.asarray(f.to_image()) for f in inp.decode(video=0)]
    print("\nDifferences in 8-bit levels (|a - b| over all pixels and channels):\n")
    print(f"- ours decoded from its video vs the baseline's fp32 frames: {levels(ours_video, reference)}")
    print(f"- codec alone (baseline video decoded vs the frames it encoded): {levels(base_video, written)}")
    print(f"- tensor2im's truncation (frames the baseline encoded vs rounded): {levels(written, reference)}")
    print(f"- precision alone (our backend vs fp32, same input, before encoding): {levels(ours_pre, fp32_ours_input)}"
          f"; PSNR {_psnr_8bit(ours_pre, fp32_ours_input):.1f} dB")
    print(f"- inputs: our colour-exact decode vs the baseline's PIL decode: {levels(decoded(clip), pil_input)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", type=Path, action="append", default=[],
                        help="another generator file to compare with (repeatable)")
    parser.add_argument("--precision", default="auto", help="ours: translate --precision (e.g. int8)")
    parser.add_argument("--only", choices=("random", "demo"), default=None,
                        help="run one of the two built-in generators (a shared CPU is slow)")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {describe_machine(machine_info())}")
    print(f"versions: {describe_versions(versions())}")
    with tempfile.TemporaryDirectory(prefix="gtacity-translate-bench-") as folder:
        tmp = Path(folder)
        # An empty conversion cache: the first round pays every conversion and compilation, as a
        # user's first job does; later rounds are a user's later inputs (same generator, new clip).
        os.environ["GTACITY_CACHE_DIR"] = str(tmp / "cache")
        make_clip(tmp / "clip.mp4", args.frames)
        torch.manual_seed(0)
        random_weights = save_generator(init_weights(ResnetGenerator(64, 9)), tmp / "g64.safetensors",
                                        direction="gta2city")
        generators = {"seeded random init (the paper's architecture)": random_weights}
        demo = bundled_generator("gta2city")
        if demo is not None:
            generators["bundled demo generator"] = demo
        if args.only is not None:
            generators = dict([list(generators.items())[args.only == "demo"]])
        generators.update({str(path): path for path in args.weights})
        for name, weights in generators.items():
            compare(name, weights, tmp / "clip.mp4", args.frames, args.rounds, tmp, args.precision)


if __name__ == "__main__":
    main()
