"""InstanceNorm in OpenVINO: as ``torch.export`` lowers it vs spelled for OpenVINO's MVN fusion.

The openvino backend converts the generator with its InstanceNorms written as
``(x - mean) / sqrt(mean((x - mean)^2) + eps)``, which OpenVINO fuses into one MVN node (with the
following ReLU); ``torch.export``'s own lowering of ``F.instance_norm`` becomes two ReduceMeans and
a chain of element-wise ops. This compiles both conversions of each generator (fp32, LATENCY, batch
1, the frame size given), checks they agree, and times them alternated round by round in one
process (medians of ``--calls`` inferences per round), with OpenVINO's per-layer counters summed
by layer type in a separate, untimed pass.

    python benchmarks/openvino_norms.py [--weights NAME_OR_FILE ...] [--size 512x284] [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np
import openvino as ov

from gtacity.checkpoint import generator_path, load_generator
from gtacity.engine.exporters.openvino import to_openvino
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions

NORM_TYPES = ("MVN", "ReduceMean", "Subgraph", "Eltwise")


def compiled(model: ov.Model, height: int, width: int, profile: bool) -> ov.CompiledModel:
    model = model.clone()
    model.reshape([1, 3, height, width])
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": profile}
    return ov.Core().compile_model(model, "CPU", config)


def median_ms(request: ov.InferRequest, x: np.ndarray, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def by_layer_type(request: ov.InferRequest, x: np.ndarray, calls: int = 5) -> dict[str, float]:
    """ms a frame per OpenVINO layer type, averaged over ``calls`` profiled inferences."""
    total: collections.Counter = collections.Counter()
    for _ in range(calls):
        request.infer({0: x})
        for layer in request.profiling_info:
            if layer.status == layer.Status.EXECUTED:
                total[layer.node_type] += layer.real_time.total_seconds() * 1000 / calls
    return dict(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=["gta2city_demo", "gta2city_demo_fast"])
    parser.add_argument("--size", default="512x284", help="WxH, multiples of 4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"machine   {describe_machine(machine_info())}")
    print(f"versions  {describe_versions(versions())}")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, height, width)).astype(np.float32)
    for weights in args.weights:
        net, info = load_generator(generator_path(weights))
        variants = {"torch.export lowering": to_openvino(net, mvn_norms=False), "MVN (the backend's)": to_openvino(net)}
        outputs, layers, requests = {}, {}, {}
        for name, model in variants.items():
            profiled = compiled(model, height, width, profile=True).create_infer_request()
            layers[name] = by_layer_type(profiled, x)
            outputs[name] = profiled.get_output_tensor(0).data.copy()
            requests[name] = compiled(model, height, width, profile=False).create_infer_request()
            median_ms(requests[name], x, 2)  # warm-up
        rounds = collections.defaultdict(list)
        for _ in range(args.rounds):
            for name, request in requests.items():
                rounds[name].append(median_ms(request, x, args.calls))
        a, b = outputs.values()
        print(f"\n[{weights}] {info.arch} ngf {info.ngf}, {width}x{height}, openvino fp32 LATENCY; "
              f"max |difference| {np.abs(a - b).max():.2e} (outputs in [-1, 1])")
        base = statistics.median(rounds["torch.export lowering"])
        for name, values in rounds.items():
            norms = sum(v for k, v in layers[name].items() if k in NORM_TYPES)
            per_round = " / ".join(f"{v:.1f}" for v in values)
            print(f"  {name:22} {statistics.median(values):7.1f} ms ({per_round}), "
                  f"{base / statistics.median(values):.2f}x; norms and element-wise {norms:.1f} ms; "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(layers[name].items(), key=lambda kv: -kv[1])[:6]))


if __name__ == "__main__":
    main()
