"""How to spend a few CPU cores on one translation: inference threads, OpenVINO streams, batch.

Issue 9, part 4. Decoding, colour conversion and libx264 encoding share the cores with inference.
This times ``run_pipeline`` end to end over the 256x256 H.264 clip of
``benchmarks/translate_vs_official.py`` (made at run time from the real GTA5 frames, nothing kept)
with the openvino backend in several settings, alternated round by round in one process, and the
same settings on the model alone (no video work), so the two can be told apart:

- ``LATENCY``, all cores, batch 1: the default until this measurement;
- ``LATENCY``, one core fewer for inference (``num_threads``), batch 1: leaves a core to video;
- ``THROUGHPUT`` (one single-threaded stream per core), batch = streams: frames in parallel;
- ``LATENCY``, all cores, batch 2.

    python benchmarks/cpu_threads.py [--precision fp32|int8] [--frames 60] [--rounds 3]
        [--weights FILE]   # default: the bundled demo generator (gta2city)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from translate_vs_official import CRF, PRESET, make_clip

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.exporters.int8 import calibration_frames
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.hardware import usable_cores


def settings(cores: int) -> dict[str, tuple[dict, int]]:
    """name -> (openvino backend options, batch size)."""
    return {
        f"LATENCY, {cores} threads, batch 1": ({"performance_hint": "LATENCY"}, 1),
        f"LATENCY, {max(1, cores - 1)} threads, batch 1": (
            {"performance_hint": "LATENCY", "num_threads": max(1, cores - 1)}, 1),
        f"THROUGHPUT, batch {cores}": ({"performance_hint": "THROUGHPUT"}, cores),
        f"LATENCY, {cores} threads, batch 2": ({"performance_hint": "LATENCY"}, 2),
    }


def make_backend(net: torch.nn.Module, precision: str, options: dict, clip: Path):
    backend = create_backend("openvino", net, precision=precision, **options)
    if backend.needs_calibration():
        backend.calibrate(calibration_frames(clip))  # cached after the first setting
    return backend


def end_to_end(backend, batch: int, clip: Path, out: Path) -> float:
    """Pipeline frames/s, decode to encode (libx264 crf 18 medium, like translate's defaults)."""
    with open_source(clip) as source:
        sink = open_sink(out, source, overwrite=True, crf=CRF, preset=PRESET)
        times = run_pipeline(source, sink, backend, batch_size=batch)
    return times.frames / times.wall


def model_only(backend, batch: int, x: torch.Tensor, seconds: float = 4.0) -> float:
    """Inference frames/s on one prepared batch, repeated for about ``seconds``."""
    xb = x.expand(batch, -1, -1, -1).contiguous()
    backend.infer(xb)  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.infer(xb)
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()

    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    weights = args.weights or bundled_generator("gta2city")
    net, _ = load_generator(weights)
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = tmp / "clip.mp4"
        make_clip(clip, args.frames)
        with open_source(clip) as source:
            x = to_batch([next(iter(source))], torch.device("cpu"))
        backends = {name: (make_backend(net, args.precision, options, clip), batch)
                    for name, (options, batch) in settings(cores).items()}
        for backend, batch in backends.values():
            backend.prepare(max(batch, 2), *x.shape[-2:])
        e2e: dict[str, list[float]] = {name: [] for name in backends}
        alone: dict[str, list[float]] = {name: [] for name in backends}
        for r in range(args.rounds):
            for name, (backend, batch) in backends.items():
                e2e[name].append(end_to_end(backend, batch, clip, tmp / "out.mp4"))
                alone[name].append(model_only(backend, batch, x))
            print(f"round {r + 1}: " + ", ".join(f"{n}: {e2e[n][-1]:.2f}" for n in backends))
    first = next(iter(backends))
    print(f"\nopenvino {args.precision}, {weights.name}, {args.frames} frames 256x256, "
          f"{args.rounds} rounds (medians), {cores} usable cores\n")
    print("| setting | end to end frames/s | vs default | model alone frames/s | vs default |")
    print("|---|---|---|---|---|")
    for name in backends:
        e, a = statistics.median(e2e[name]), statistics.median(alone[name])
        e0, a0 = statistics.median(e2e[first]), statistics.median(alone[first])
        print(f"| {name} | {e:.2f} | {e / e0:.2f}x | {a:.2f} | {a / a0:.2f}x |")


if __name__ == "__main__":
    main()
