"""The Triton pixel kernels vs the GPU's copy bandwidth and vs the unfused torch sequence.

For each kernel (and output/input dtype) at 1080p, batch 8 by default:

- achieved bytes/s: the bytes the operation must move (every input byte read once, every output
  byte written once) divided by the kernel's time; compared with the bandwidth of a plain torch
  device-to-device copy measured in the same run (read + write of a buffer the size of the
  kernel's traffic). Target: >= 70% of copy bandwidth.
- the unfused torch sequence (the kernel's reference in ``gtacity.kernels``, run on the GPU) timed
  the same way. Target: the kernel >= 3x faster.

Before anything is timed, each kernel's output is checked equal to its reference's on the GPU.
Times are CUDA-event medians of ``--repeats`` calls after warm-up. It needs a CUDA GPU and Triton;
on a machine without CUDA it says so and exits 0 without measuring anything.

    python benchmarks/kernels_bench.py [--height 1080] [--width 1920] [--batch 8] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gtacity import kernels
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.kernels import common, layout, yuv

DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
MATRIX, FULL_RANGE = "bt709", False  # HD video's usual colour; every matrix costs the same


@dataclass(frozen=True)
class Case:
    """One kernel call to time: the fused (Triton) and the unfused (torch reference) versions."""

    name: str
    fused: Callable[[], torch.Tensor]
    unfused: Callable[[], torch.Tensor]
    bytes_moved: int


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median CUDA-event time of ``fn`` in milliseconds, after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    """Bytes/s of ``dst.copy_(src)`` on the device, counting the read and the write."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * src.numel() / (median_ms(lambda: dst.copy_(src), repeats) / 1e3)


def layout_cases(n: int, h: int, w: int) -> list[Case]:
    """to_model_input and from_model_output in each dtype."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    pixels = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, device="cuda", generator=gen)
    cases = []
    for dtype, name in DTYPE_NAMES.items():
        out = kernels.to_model_input(pixels, dtype=dtype)
        cases.append(
            Case(
                f"to_model_input -> {name}",
                lambda dtype=dtype: kernels.to_model_input(pixels, dtype=dtype),
                lambda dtype=dtype: layout.to_model_input_reference(pixels, dtype=dtype),
                pixels.numel() + out.numel() * out.element_size(),
            )
        )
        cases.append(
            Case(
                f"from_model_output <- {name}",
                lambda out=out: kernels.from_model_output(out, h, w),
                lambda out=out: layout.from_model_output_reference(out, h, w),
                out.numel() * out.element_size() + pixels.numel(),
            )
        )
    return cases


def colour_cases(n: int, h: int, w: int, dtype: torch.dtype) -> list[Case]:
    """yuv420p / NV12 -> model input and model output -> yuv420p, in ``dtype``."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    frames = torch.randint(
        0, 256, (n, h * 3 // 2, w), dtype=torch.uint8, device="cuda", generator=gen
    )
    y, u, v = kernels.split_yuv420p(frames)
    uv = torch.stack([u, v], dim=-1)  # (N, H/2, W/2, 2), NV12's chroma
    colour = {"matrix": MATRIX, "full_range": FULL_RANGE}
    k = common.YuvCoefficients.of(MATRIX, FULL_RANGE)
    out = kernels.yuv420p_to_model_input(y, u, v, dtype=dtype, **colour)
    out_bytes = out.numel() * out.element_size()
    name = DTYPE_NAMES[dtype]

    def unfused_in(u=u, v=v):
        rgb = yuv.yuv420_to_rgb_reference(y, u, v, k)
        return layout.to_model_input_reference(rgb, dtype=dtype)

    def unfused_out():
        return yuv.rgb_to_yuv420p_reference(layout.from_model_output_reference(out, h, w), k)

    return [
        Case(
            f"yuv420p -> model {name}",
            lambda: kernels.yuv420p_to_model_input(y, u, v, dtype=dtype, **colour),
            unfused_in,
            frames.numel() + out_bytes,
        ),
        Case(
            f"nv12 -> model {name}",
            lambda: kernels.nv12_to_model_input(y, uv, dtype=dtype, **colour),
            lambda: unfused_in(uv[..., 0], uv[..., 1]),
            frames.numel() + out_bytes,
        ),
        Case(
            f"model {name} -> yuv420p",
            lambda: kernels.model_output_to_yuv420p(out, h, w, **colour),
            unfused_out,
            out_bytes + frames.numel(),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("kernels_bench: needs a CUDA GPU and this machine has none; nothing was measured")
        return 0
    if not layout.triton_installed():
        print("kernels_bench: needs Triton (pip install triton); nothing was measured")
        return 1
    n, h, w = args.batch, args.height, args.width
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    cases = layout_cases(n, h, w)
    for dtype in (torch.float16, torch.float32):
        cases += colour_cases(n, h, w, dtype)
    agreeing = []
    for case in cases:  # agreement before any timing; a case that disagrees is reported, not timed
        fused, unfused = case.fused(), case.unfused()
        if torch.equal(fused, unfused):
            agreeing.append(case)
            continue
        diff = (fused.double() - unfused.double()).abs()
        print(f"kernels_bench: {case.name}: Triton and the torch reference disagree at "
              f"{int((diff > 0).sum())} of {diff.numel()} values, max difference {diff.max().item():.3g}")
    if not agreeing:
        return 1
    failed = len(cases) - len(agreeing)
    cases = agreeing
    largest = max(c.bytes_moved for c in cases)
    copy = copy_bandwidth(largest, args.repeats)
    print(f"\n{n} x {w}x{h}; device copy bandwidth {copy / 1e9:.0f} GB/s (read + write)\n")
    print(f"{'kernel':28} {'MB moved':>9} {'fused ms':>9} {'GB/s':>7} {'% copy':>7} "
          f"{'unfused ms':>11} {'speed-up':>9}")
    for case in cases:
        fused = median_ms(case.fused, args.repeats)
        unfused = median_ms(case.unfused, args.repeats)
        rate = case.bytes_moved / (fused / 1e3)
        print(f"{case.name:28} {case.bytes_moved / 1e6:9.1f} {fused:9.3f} {rate / 1e9:7.0f} "
              f"{100 * rate / copy:6.0f}% {unfused:11.3f} {unfused / fused:8.1f}x")
    print("\ntargets: >= 70% of copy bandwidth, >= 3x the unfused sequence")
    if failed:
        print(f"{failed} kernel(s) disagreed with the reference and were not timed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
