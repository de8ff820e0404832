"""Warping error and frames/s of ``gtacity translate`` without and with each ``--temporal`` remedy.

The clip: the 30 consecutive Cityscapes frames in ``../shared/data/real/cityscapes_seq`` (a car
driving through Aachen, ~17 frames/s), scaled to ``--size`` and encoded to H.264 (crf 16) in a
temporary folder at run time; nothing made from the frames is kept. Every run translates it
city2gta with the torch backend in fp32 (the one backend every remedy runs on, so the frames/s
compare like with like), batch 1, writes H.264 at the translate defaults, and is then measured by
``gtacity eval flicker`` (DIS "medium" flow on the input).

Generators: the bundled demo (ngf 32, 6 blocks) and a seeded random ngf 64 / 9-block one (the
paper's size; untrained, so its flicker is its own, not a trained model's). Rounds run the modes in
turn (off, stats, flow, off, stats, ...) so slow spells of a shared machine hit all of them; the
frames/s reported is the median over rounds. "change vs off" is the PSNR of each remedy's output
against the plain translation: how far a remedy moves away from what the generator made.

    python benchmarks/flicker.py [--size 512x256] [--ngf64-size 256x128] [--rounds 1] [--plot curves.png]
    python benchmarks/flicker.py --overhead     # each remedy's per-frame cost, interleaved
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from gtacity.checkpoint import bundled_generator, load_generator, save_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.measure.flicker import draw_curves, measure_flicker
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.temporal.remedies import FlowBlend, smooth_norm_stats
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.nets import ResnetGenerator, init_weights

SEQUENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "cityscapes_seq"
MODES = ("off", "stats", "flow")


def make_clip(path: Path, frames: Path, size: tuple[int, int]) -> None:
    """The Cityscapes sequence in ``frames`` at ``size`` as H.264, 17 frames/s."""
    images = sorted(frames.glob("*.jpg"))
    if not images:
        sys.exit(f"no frames in {frames}")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=17, options={"crf": "16", "preset": "medium"})
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for image in images:
            rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(image)), size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))


def psnr(a: Path, b: Path) -> float:
    """PSNR (dB) of video ``b`` against video ``a`` over all frames."""
    with open_source(a) as sa, open_source(b) as sb:
        mse = np.mean([np.square(x.image.astype(np.float64) - y.image).mean() for x, y in zip(sa, sb)])
    return float(10 * np.log10(255**2 / mse)) if mse > 0 else float("inf")


def bench_generator(label: str, weights: Path, clip: Path, work: Path, rounds: int) -> dict:
    """Translate ``clip`` with each mode ``rounds`` times; measure each mode's output once."""
    fps: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in MODES:
            cfg = TranslateConfig(clip, work / f"{label}_{mode}.mp4", direction="city2gta", weights=weights,
                                  backend="torch", precision="fp32", progress=False, overwrite=True, temporal=mode)
            report = translate(cfg)
            fps[mode].append(report.times.fps)
            print(f"  {label} {mode} round {r + 1}: {report.summary()}", file=sys.stderr, flush=True)
    results = {}
    for mode in MODES:
        out = work / f"{label}_{mode}.mp4"
        flicker = measure_flicker(clip, out)
        results[mode] = {"fps": statistics.median(fps[mode]), "fps_all": fps[mode], "flicker": flicker,
                         "psnr_vs_off": psnr(work / f"{label}_off.mp4", out) if mode != "off" else None}
    return results


def overhead(label: str, weights: Path, clip: Path, frames: int = 12) -> str:
    """Per-frame cost of each remedy next to inference, measured interleaved frame by frame.

    On a busy machine whole runs drift apart; here plain inference, inference with smoothed
    statistics and the flow blend of one frame run back to back for every frame, so a slow spell
    hits all three. Returns a table row: medians in ms and the frames/s ratio each implies when
    everything ran on one thread (the flow blend really runs beside inference, on the encoder's).
    """
    net, _ = load_generator(weights)
    plain = create_backend("torch", net, precision="fp32", device="cpu")
    stats = smooth_norm_stats(create_backend("torch", net, precision="fp32", device="cpu"))
    blend = FlowBlend()
    times: dict[str, list[float]] = {"off": [], "stats": [], "flow": []}
    with open_source(clip) as source:
        for frame, _ in zip(source, range(frames)):
            x = to_batch([frame], plain.device)
            for backend in (plain, stats):
                backend.prepare(1, *x.shape[-2:])
            t0 = time.perf_counter()
            y = to_frames(plain.infer(x), [frame])[0]
            t1 = time.perf_counter()
            stats.infer(x)
            t2 = time.perf_counter()
            blend.remember(frame)
            blend.blend(y)
            t3 = time.perf_counter()
            times["off"].append(t1 - t0)
            times["stats"].append(t2 - t1)
            times["flow"].append(t3 - t2)
    ms = {k: 1000 * statistics.median(v[1:]) for k, v in times.items()}  # the first frame warms up
    return (f"| {label} | {ms['off']:.0f} | {ms['stats']:.0f} ({100 * (ms['off'] / ms['stats'] - 1):+.1f}% frames/s) "
            f"| {ms['flow']:.1f} ({100 * (ms['off'] / (ms['off'] + ms['flow']) - 1):+.1f}% frames/s) |")


def table(label: str, results: dict) -> list[str]:
    off = results["off"]
    rows = [f"| {label} | input itself | {off['flicker'].input_error:.6f} | | | | |"]
    for mode, r in results.items():
        err, fps = r["flicker"].output_error, r["fps"]
        d_err = "" if mode == "off" else f"{100 * (err / off['flicker'].output_error - 1):+.1f}%"
        d_fps = "" if mode == "off" else f"{100 * (fps / off['fps'] - 1):+.1f}%"
        change = "" if r["psnr_vs_off"] is None else f"{r['psnr_vs_off']:.1f} dB"
        rows.append(f"| {label} | {mode} | {err:.6f} | {d_err} | {fps:.2f} | {d_fps} | {change} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, default=SEQUENCE, help="folder of the consecutive frames")
    parser.add_argument("--size", default="512x256", help="WxH the clip is scaled to (multiples of 4)")
    parser.add_argument("--ngf64-size", default=None, help="WxH for the ngf 64 generator (default: --size)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--generators", default="demo,ngf64", help="which of demo, ngf64 to run")
    parser.add_argument("--overhead", action="store_true", help="only the interleaved per-frame costs")
    parser.add_argument("--plot", type=Path, default=None, help="write the demo generator's per-pair curves here")
    args = parser.parse_args()
    sizes = {"demo": args.size, "ngf64": args.ngf64_size or args.size}
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    lines = ["| generator | mode | warping error | vs off | frames/s | vs off | change vs off (PSNR) |",
             "|---|---|---|---|---|---|---|"]
    if args.overhead:
        lines = ["| generator | inference ms/frame | with stats, ms | flow blend, ms |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        ngf64 = save_generator(init_weights(ResnetGenerator(ngf=64, n_blocks=9)).eval(),
                               work / "ngf64.safetensors", direction="city2gta")
        for label, weights in (("demo", bundled_generator("city2gta")), ("ngf64", ngf64)):
            if label not in args.generators.split(","):
                continue
            w, h = (int(v) for v in sizes[label].split("x"))
            clip = work / f"city_{w}x{h}.mp4"
            if not clip.exists():
                make_clip(clip, args.frames, (w, h))
            if args.overhead:
                lines.append(overhead(f"{label} {w}x{h}", weights, clip))
                continue
            results = bench_generator(label, weights, clip, work, args.rounds)
            lines += table(f"{label} {w}x{h}", results)
            if args.plot and label == "demo":
                curves = {mode: r["flicker"].output_curve for mode, r in results.items()}
                draw_curves(curves, results["off"]["flicker"].input_curve, args.plot)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
