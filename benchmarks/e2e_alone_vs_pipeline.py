"""Why ``bench --e2e`` once reported a run faster than its slowest stage alone ("% of slowest alone: 300").

It divided the pipeline's rate by inference timed on its own just before the run. This script times
the same ``backend.infer`` calls three ways in one process, wall and process CPU seconds per call:
alone before the pipeline, inside a pipeline pass over a demo clip, and alone again after it.
Run it with the environment as it is, then with ``GOMP_SPINCOUNT=1000`` or
``OMP_WAIT_POLICY=PASSIVE``: on a 2-core CPU shared with other work, the lone calls burn about twice
the CPU time of the same calls inside the pipeline (OpenMP's worker threads spin-wait between
layers), and the environment variables remove the difference.

    python benchmarks/e2e_alone_vs_pipeline.py [--ngf 64] [--size 256x144] [--frames 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gtacity.democlip import write_demo_clip
from gtacity.engine.backends import create_backend
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.pipeline import run_pipeline
from gtacity.nets import ResnetGenerator, init_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--size", default="256x144")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--backend", default="torch")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    torch.manual_seed(0)
    backend = create_backend(args.backend, init_weights(ResnetGenerator(args.ngf, 9)).eval(), "fp32", "cpu")
    backend.prepare(1, height, width)
    x = torch.rand(1, 3, height, width) * 2 - 1
    calls: list[tuple[float, float]] = []
    infer = backend.infer

    def timed(batch: torch.Tensor) -> torch.Tensor:
        cpu, wall = time.process_time(), time.perf_counter()
        y = infer(batch)
        calls.append((time.perf_counter() - wall, time.process_time() - cpu))
        return y

    backend.infer = timed  # the pipeline calls it the same way
    infer(x)  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_demo_clip(clip, seconds=args.frames / 10, size=(width, height), fps=10)
        for _ in range(3):
            timed(x)
        with open_source(clip) as source:
            run_pipeline(source, open_sink(Path(tmp) / "out.mp4", source), backend, batch_size=1)
        for _ in range(3):
            timed(x)
    parts = {"alone, before": calls[:3], "in the pipeline": calls[3:-3], "alone, after": calls[-3:]}
    for name, part in parts.items():
        wall = sorted(w for w, _ in part)[len(part) // 2]
        cpu = sorted(c for _, c in part)[len(part) // 2]
        print(f"{name:16s} {len(part)} calls: median {wall:.2f} s wall, {cpu:.2f} s CPU per call")


if __name__ == "__main__":
    main()
