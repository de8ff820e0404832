"""Model only on a GPU: every fp16 path against eager fp32 at batch 1, side by side in one run.

::

    python benchmarks/gpu_bench.py                       # ngf 64 / 9 blocks, 1024x512, batch 8
    python benchmarks/gpu_bench.py --json model.json --repeats 50

Each path is a backend configuration (see PATHS): created, prepared (timed as its build), checked
against torch fp32 on the CPU with the tolerance table of ``gtacity bench`` (one that disagrees is
reported and not timed), warmed up, then timed with CUDA events (``benchstats.time_calls``).
Printed per path: frames/s, its ratio to the eager fp32 batch-1 baseline, GMAC/s and the share of
this GPU's measured fp16 matmul rate (an 8192^3 fp16 matmul, the roofline a convolution net can
approach). Targets from issue 7 on an H100: >= 8x eager fp32 and >= 40% of the fp16 matmul rate.
``--device cpu`` runs the same script on the paths a CPU has (a check of the script, no target).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch

from gtacity.engine.backends import create_backend
from gtacity.engine.measure.bench_plan import TOLERANCES
from gtacity.engine.measure.bench_report import (
    describe_machine,
    describe_versions,
    machine_info,
    matmul_rate,
    time_calls,
    versions,
)
from gtacity.errors import GtacityError
from gtacity.nets import ResnetGenerator, count_macs, init_weights

# (label, backend, precision, backend options, batch or None for --batch). The first is the baseline:
# eager fp32 as a plain PyTorch script runs it (NCHW, no cuDNN autotuning, no graphs), batch 1.
PATHS = (
    ("eager fp32 batch 1 (baseline)", "torch", "fp32",
     {"cuda_graphs": False, "channels_last": False, "cudnn_benchmark": False}, 1),
    ("torch fp16 eager", "torch", "fp16", {"cuda_graphs": False}, None),
    ("torch fp16 + CUDA graphs", "torch", "fp16", {}, None),
    ("torch fp16 + compile + CUDA graphs", "torch", "fp16", {"compile": "default"}, None),
    ("torch bf16 + CUDA graphs", "torch", "bf16", {}, None),
    ("tensorrt fp16", "tensorrt", "fp16", {}, None),
)


def main() -> int:
    args = _parse()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA GPU here; run with --device cpu to check the script itself",
              file=sys.stderr)
        return 1
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(args.ngf, args.n_blocks)).eval()
    width, height = args.width, args.height
    gmacs = count_macs(args.ngf, args.n_blocks, height, width) / 1e9
    x_cpu = torch.rand(max(args.batch, 1), 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        reference = net(x_cpu)  # (B, 3, H, W) torch fp32 on the CPU
    rate = matmul_rate(device, "fp16") if device.type == "cuda" else None
    rows = []
    for label, name, precision, options, batch in PATHS:
        if args.no_compile and "compile" in options:
            continue
        rows.append(_run_path(label, name, precision, options, batch or args.batch, net, x_cpu,
                              reference, device, args.repeats))
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    baseline = rows[0].get("fps")
    for row in rows:
        if "fps" in row:
            row["x_baseline"] = row["fps"] / baseline if baseline else None
            row["gmac_per_s"] = gmacs * row["fps"]
            row["fp16_matmul_share"] = None if rate is None else 2 * gmacs * row["fps"] / 1000 / rate[1]
    report = {
        "machine": machine_info(), "versions": versions(), "size": f"{width}x{height}",
        "ngf": args.ngf, "n_blocks": args.n_blocks, "gmacs_per_frame": gmacs,
        "fp16_matmul_tflops": None if rate is None else rate[1], "paths": rows,
    }
    print(_format(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0 if all(row.get("ok", True) for row in rows) else 1


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="Leave out the torch.compile path.")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    return parser.parse_args()


def _run_path(label, name, precision, options, batch, net, x_cpu, reference, device, repeats) -> dict:
    row = {"path": label, "backend": name, "precision": precision, "options": options, "batch": batch}
    try:
        backend = create_backend(name, net, precision=precision, device=device, **options)
    except GtacityError as e:  # not installed, not registered, no such precision here
        return {**row, "unavailable": str(e)}
    start = time.perf_counter()
    backend.prepare(batch, x_cpu.shape[-2], x_cpu.shape[-1])
    row["build_s"] = time.perf_counter() - start
    row["describe"] = backend.describe()
    x = x_cpu[:batch].to(device)
    diff = (backend.infer(x).float().cpu() - reference[:batch]).abs()
    key = "tf32" if device.type == "cuda" and precision == "fp32" else precision
    tol = TOLERANCES[key]
    row.update(max_abs=diff.max().item(), mean_abs=diff.mean().item())
    row["ok"] = row["max_abs"] <= tol.max_abs and row["mean_abs"] <= tol.mean_abs
    if not row["ok"]:
        return row
    for _ in range(3):
        backend.infer(x)
    seconds = time_calls(backend, x, repeats)
    row["fps"] = batch / statistics.median(seconds)
    row["ms_per_batch_p50"] = 1000 * statistics.median(seconds)
    return row


def _format(report: dict) -> str:
    lines = [f"machine   {describe_machine(report['machine'])}",
             f"versions  {describe_versions(report['versions'])}",
             f"model     ngf {report['ngf']}, {report['n_blocks']} blocks, {report['size']}, "
             f"{report['gmacs_per_frame']:.1f} GMAC/frame"]
    if report["fp16_matmul_tflops"] is not None:
        lines.append(f"fp16 matmul (8192^3, measured): {report['fp16_matmul_tflops']:.0f} TFLOP/s")
    for row in report["paths"]:
        head = f"{row['path']:<36} batch {row['batch']:<2}"
        if "unavailable" in row:
            lines.append(f"{head} unavailable: {row['unavailable']}")
        elif not row["ok"]:
            lines.append(f"{head} DISAGREES (not timed): max abs {row['max_abs']:.3g}, mean {row['mean_abs']:.3g}")
        else:
            share = row["fp16_matmul_share"]
            lines.append(
                f"{head} {row['fps']:8.2f} frames/s  {row['x_baseline']:6.2f}x baseline  "
                f"{row['gmac_per_s']:9.0f} GMAC/s  "
                f"{'-' if share is None else f'{100 * share:.0f}%'} of fp16 matmul  "
                f"build {row['build_s']:.1f} s  max abs {row['max_abs']:.3g}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
