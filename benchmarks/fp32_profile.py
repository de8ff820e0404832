"""Where an fp32 generator forward spends its time on a CPU, layer by layer: eager torch and OpenVINO.

For each convolution of the generator (ngf 64, 9 blocks, seeded random weights: the paper's
architecture; or any generator file) this prints its multiply-accumulates, its time in eager torch
(module hooks around each layer, one synchronous call at a time) and in OpenVINO (the plugin's
per-layer counters, ``PERF_COUNT``, compiled as the openvino backend compiles: LATENCY, f32, MVN
norms), the GFLOP/s each reaches, and that as a share of this machine's fp32 peak. The peak is
measured, not looked up: the best of a large square SGEMM in torch (MKL/oneDNN) and in OpenVINO
(a MatMul), which is what a dense fp32 kernel can reach here. Norms, pads and element-wise work are
summed by kind. OpenVINO's kernel name (``exec``, e.g. ``jit_avx512_FP32`` or ``brgconv_avx2``)
says which instruction set each layer really ran.

``--isa avx2`` caps oneDNN (torch's convolutions and all of OpenVINO's), ATen's kernels and MKL at
AVX2 before anything is imported, to see an AVX2-only CPU on an AVX-512 one. OpenVINO's own JIT
kernels (MVN, element-wise) do not honour the cap in release builds; the exec column shows them.

    python benchmarks/fp32_profile.py [--weights FILE_OR_NAME] [--size 256x256] [--isa native|avx2]
        [--calls 10] [--rounds 5]

The whole-forward times (and their ratio) come from alternating rounds of torch and OpenVINO
forwards, not from the per-layer passes; the layer times are for where, not how fast overall.
"""

from __future__ import annotations

import argparse
import os
import sys

ISA_ENV = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OV_CPU_MAX_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    }
}


def _cap_isa(argv: list[str]) -> None:
    """Re-run this script with the ISA cap in its environment (it must be set before torch loads)."""
    isa = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--isa"), "native")
    wanted = ISA_ENV.get(isa, {})
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        os.execve(sys.executable, [sys.executable, *argv], {**os.environ, **wanted})


if __name__ == "__main__":
    _cap_isa(sys.argv)

import collections
import statistics
import time
from typing import Any

import numpy as np
import openvino as ov
import torch
from openvino import opset13 as ops
from torch import nn

from gtacity.checkpoint import generator_path, load_generator
from gtacity.engine.exporters.openvino import to_openvino
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.nets import ResizeConv2d, ResnetGenerator, init_weights

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fastest(call, seconds: float) -> float:
    """The fastest of as many ``call()`` s as fit in ``seconds`` (after one untimed call)."""
    call()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_gflops(threads: int, n: int = 2048, seconds: float = 2.0) -> dict[str, float]:
    """Best fp32 GFLOP/s of an n x n x n matrix product, torch and OpenVINO."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    p = ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(p, ops.constant(b.numpy()), False, False)], [p])
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads},
    )
    request = compiled.create_infer_request()
    calls = {"torch": lambda: torch.mm(a, b), "openvino": lambda: request.infer({0: a.numpy()})}
    return {name: 2 * n**3 / _fastest(call, seconds) / 1e9 for name, call in calls.items()}


def conv_macs(layer: nn.Module, out: torch.Tensor, inp: torch.Tensor) -> int:
    w = layer.weight
    if isinstance(layer, nn.ConvTranspose2d):  # in*out*k*k per input pixel
        return int(w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3] * inp.shape[-2] * inp.shape[-1] * inp.shape[0])
    return int(w.shape[1] * w.shape[2] * w.shape[3] * out.numel())  # (in/groups)*k*k per output value


def kind_of(layer: nn.Module) -> str:
    if isinstance(layer, CONVS):
        return "conv"
    name = type(layer).__name__
    return {"InstanceNorm2dFP32": "norm", "ReflectionPad2d": "pad", "ReLU": "relu", "Tanh": "tanh"}.get(name, name)


def torch_layers(net: nn.Module, x: torch.Tensor, calls: int) -> list[dict]:
    """Per leaf layer: name, kind, MACs, shape, median ms over ``calls`` hooked forwards."""
    leaves = [(n, m) for n, m in net.named_modules() if not list(m.children()) or isinstance(m, ResizeConv2d)]
    leaves = [
        (n, m) for n, m in leaves if not any(n.startswith(p + ".") for p, q in leaves if isinstance(q, ResizeConv2d))
    ]
    times: dict[str, list[float]] = collections.defaultdict(list)
    info: dict[str, dict] = {}
    starts: dict[str, float] = {}

    def pre(name):
        def hook(module, args):
            starts[name] = time.perf_counter()

        return hook

    def post(name):
        def hook(module, args, out):
            times[name].append((time.perf_counter() - starts[name]) * 1000)
            if name not in info:
                macs = (
                    conv_macs(module if not isinstance(module, ResizeConv2d) else module.conv, out, args[0])
                    if isinstance(module, (*CONVS, ResizeConv2d))
                    else 0
                )
                info[name] = {
                    "kind": "conv" if macs else kind_of(module),
                    "macs": macs,
                    "shape": f"{tuple(args[0].shape[1:])}->{tuple(out.shape[1:])}",
                }

        return hook

    handles = [h for n, m in leaves for h in (m.register_forward_pre_hook(pre(n)), m.register_forward_hook(post(n)))]
    with torch.inference_mode():
        net(x)
        times.clear()
        for _ in range(calls):
            net(x)
    for h in handles:
        h.remove()
    return [{"name": n, **info[n], "ms": statistics.median(times[n])} for n, _ in leaves if n in info]


def openvino_layers(net: nn.Module, height: int, width: int, x: np.ndarray, calls: int) -> tuple[list[dict], Any]:
    """Per executed node: name, type, kernel, mean ms over ``calls`` profiled inferences; and an
    infer request of the same model compiled without counters, for the whole-forward timing."""
    model = to_openvino(net)
    model.reshape([1, 3, height, width])
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    profiled = ov.Core().compile_model(model, "CPU", {**base, "PERF_COUNT": True}).create_infer_request()
    totals: dict[str, float] = collections.defaultdict(float)
    kinds, execs = {}, {}
    profiled.infer({0: x})
    for _ in range(calls):
        profiled.infer({0: x})
        for layer in profiled.profiling_info:
            if layer.status == layer.Status.EXECUTED:
                totals[layer.node_name] += layer.real_time.total_seconds() * 1000 / calls
                kinds[layer.node_name], execs[layer.node_name] = layer.node_type, layer.exec_type
    request = ov.Core().compile_model(model, "CPU", base).create_infer_request()
    request.infer({0: x})
    return [{"name": n, "type": kinds[n], "exec": execs[n], "ms": ms} for n, ms in totals.items()], request


def whole_forwards(net: nn.Module, request: Any, x: torch.Tensor, rounds: int, calls: int) -> tuple[float, float]:
    """Median ms of a whole forward, eager torch and openvino, in alternating rounds of ``calls``."""
    runs: dict[str, list[float]] = {"torch": [], "openvino": []}
    forward = {"torch": lambda: net(x), "openvino": lambda: request.infer({0: x.numpy()})}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, call in forward.items():
                for _ in range(calls):
                    start = time.perf_counter()
                    call()
                    runs[name].append((time.perf_counter() - start) * 1000)
    return statistics.median(runs["torch"]), statistics.median(runs["openvino"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="a generator file or bundled name (default: ngf 64 random)")
    parser.add_argument("--size", default="256x256", help="WxH")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--calls", type=int, default=10, help="forwards per measurement (and per round)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of whole forwards")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    threads = torch.get_num_threads()
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {describe_machine(machine_info())}")
    print(f"versions: {describe_versions(versions())}")
    print(
        f"isa cap: {', '.join(f'{k}={v}' for k, v in ISA_ENV.get(args.isa, {}).items()) or 'none'}; "
        f"torch cpu capability {torch.backends.cpu.get_cpu_capability()}"
    )
    if args.weights:
        net, info = load_generator(generator_path(args.weights))
        label = f"{args.weights} (ngf {info.ngf}, {info.n_blocks} blocks, {info.upsample})"
    else:
        torch.manual_seed(0)
        net, label = init_weights(ResnetGenerator(64, 9)).eval(), "seeded random init, ngf 64, 9 blocks"
    net = net.float().eval()
    torch.manual_seed(1)
    x = torch.rand(1, 3, height, width) * 2 - 1
    peak = peak_gflops(threads)
    t_rows = torch_layers(net, x, args.calls)
    o_rows, request = openvino_layers(net, height, width, x.numpy(), args.calls)
    t_whole, o_whole = whole_forwards(net, request, x, args.rounds, args.calls)
    # OpenVINO's convolution nodes, in graph order, line up with torch's convs in module order.
    o_convs = [r for r in o_rows if r["type"] in ("Convolution", "ConvolutionBackpropData", "GroupConvolution")]
    t_convs = [r for r in t_rows if r["kind"] == "conv"]
    matched = len(o_convs) == len(t_convs)
    fastest = [
        min([t["ms"]] + ([o["ms"]] if matched else [])) for t, o in zip(t_convs, o_convs if matched else t_convs, strict=True)
    ]
    layer_best = max(2 * t["macs"] / ms / 1e6 for t, ms in zip(t_convs, fastest, strict=True))
    top = max(*peak.values(), layer_best)
    print(
        f"fp32 rates: a 2048^3 SGEMM on {threads} threads, torch {peak['torch']:.0f} GFLOP/s, openvino "
        f"{peak['openvino']:.0f}; the fastest convolution below {layer_best:.0f}. Shares (% peak) are of the "
        f"highest, {top:.0f} GFLOP/s: the most any fp32 kernel reached on this machine in this run\n"
    )
    total_macs = sum(r["macs"] for r in t_rows)
    print(f"## {label}, {width}x{height}, batch 1: {total_macs / 1e9:.2f} GMAC\n")
    print(
        f"whole forward, median of {args.rounds} alternating rounds of {args.calls}: eager torch {t_whole:.1f} ms "
        f"({2 * total_macs / t_whole / 1e6:.0f} GFLOP/s, {200 * total_macs / t_whole / 1e6 / top:.0f}% of peak), "
        f"openvino {o_whole:.1f} ms ({2 * total_macs / o_whole / 1e6:.0f} GFLOP/s, "
        f"{200 * total_macs / o_whole / 1e6 / top:.0f}% of peak): openvino/torch {t_whole / o_whole:.2f}x\n"
    )
    print(
        "| # | layer | shape (C,H,W) | GMAC | torch ms | torch % peak | openvino ms | openvino % peak | openvino exec |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, t in enumerate(t_convs):
        o = o_convs[i] if matched else None

        def share(ms: float, macs: int = t["macs"]) -> float:
            return 200 * macs / ms / 1e6 / top

        o_cells = f"{o['ms']:.2f} | {share(o['ms']):.0f}% | {o['exec']}" if o else "- | - | -"
        print(
            f"| {i + 1} | {t['name']} | {t['shape']} | {t['macs'] / 1e9:.2f} | {t['ms']:.2f} | {share(t['ms']):.0f}% | "
            f"{o_cells} |"
        )
    t_by = collections.defaultdict(float)
    for r in t_rows:
        t_by[r["kind"]] += r["ms"]
    o_by = collections.defaultdict(float)
    for r in o_rows:
        o_by[r["type"]] += r["ms"]
    print(
        "\nBy kind (ms per frame): eager torch "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(t_by.items(), key=lambda kv: -kv[1]))
        + f" (hooks' sum {sum(t_by.values()):.1f} of {t_whole:.1f})"
    )
    print(
        "By node type: openvino "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(o_by.items(), key=lambda kv: -kv[1]))
        + f" (counters' sum {sum(o_by.values()):.1f} of {o_whole:.1f})"
    )
    if not matched:
        print(f"(openvino has {len(o_convs)} convolution nodes for torch's {len(t_convs)}: not matched row by row)")


if __name__ == "__main__":
    main()
