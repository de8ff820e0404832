"""How far the exported ONNX and FP16 ONNX generators are from torch fp32, on real frames.

For each bundled demo generator (ngf 32, 6 blocks; gta2city on the real GTA5 frames, city2gta on
the real Cityscapes frames in ``../shared/data/real``, each padded to a multiple of 4 the way the
pipeline pads) and for seeded random ngf 64 / 9-block weights (random frames in [-1, 1], the bench's
own input), it exports ``onnx`` and ``onnx-fp16`` with :mod:`gtacity.engine.exporters.onnx`, runs them with
onnxruntime on the CPU and compares with eager torch fp32 on the same input: max and mean absolute
error in [-1, 1] units, the max in 8-bit levels, and PSNR (peak-to-peak 2).

onnxruntime's CPU runs the fp16 graph with every weight and activation rounded to fp16 (it computes
fp16 ops it has no fp16 kernel for in fp32), so this is the error the FP16 ONNX carries into any
runtime; TensorRT's fp16 kernels add their own accumulation rounding on a GPU.

    python benchmarks/onnx_fp16_error.py [--frames 3] [--real ../shared/data/real]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import onnxruntime as ort
import torch

from gtacity.checkpoint import bundled_generator, load_generator
from gtacity.engine.exporters.onnx import INPUT_NAME, OUTPUT_NAME, to_fp16, to_onnx
from gtacity.engine.frames import Frame
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.stream.convert import to_batch
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb
from gtacity.nets import ResnetGenerator, init_weights

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def real_frames(folder: Path, count: int) -> list[torch.Tensor]:
    """The first ``count`` images of ``folder`` as padded (1, 3, H, W) batches in [-1, 1]."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
    return [to_batch([Frame(decode_rgb(p), 0)], torch.device("cpu")) for p in paths]


def errors(model, net: torch.nn.Module, inputs: list[torch.Tensor]) -> dict[str, float]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    worst, total, count, squared = 0.0, 0.0, 0, 0.0
    for x in inputs:
        with torch.no_grad():
            ref = net(x)
        out = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
        diff = (out - ref).abs()
        worst = max(worst, diff.max().item())
        total += diff.sum().item()
        squared += diff.pow(2).sum().item()
        count += diff.numel()
    mse = squared / count
    return {"max": worst, "mean": total / count, "levels": worst * 127.5,
            "psnr": 10 * math.log10(4 / mse) if mse else math.inf}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3, help="real frames per demo generator")
    parser.add_argument("--real", type=Path, default=REAL)
    args = parser.parse_args()
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    torch.manual_seed(0)
    cases = [
        ("gta2city demo (ngf 32, 6 blocks)", load_generator(bundled_generator("gta2city"))[0],
         real_frames(args.real / "gta5", args.frames)),
        ("city2gta demo (ngf 32, 6 blocks)", load_generator(bundled_generator("city2gta"))[0],
         real_frames(args.real / "cityscapes" / "leftImg8bit", args.frames)),
        ("random ngf 64, 9 blocks", init_weights(ResnetGenerator(64, 9)).eval(),
         [torch.rand(1, 3, 256, 256) * 2 - 1 for _ in range(2)]),
    ]
    print("| generator | input | format | max abs | mean abs | max (8-bit levels) | PSNR dB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, net, inputs in cases:
        start = time.perf_counter()
        fp32 = to_onnx(net)
        export_s = time.perf_counter() - start
        size = "x".join(str(s) for s in inputs[0].shape[-1:-3:-1])
        for fmt, model in (("onnx", fp32), ("onnx-fp16", to_fp16(fp32))):
            e = errors(model, net, inputs)
            print(f"| {name} | {len(inputs)} x {size} | {fmt} | {e['max']:.2e} | {e['mean']:.2e} | "
                  f"{e['levels']:.2f} | {e['psnr']:.1f} |")
        print(f"(export of {name}: {export_s:.1f} s)")


if __name__ == "__main__":
    main()
