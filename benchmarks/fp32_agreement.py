"""How far apart two correct fp32 implementations of the bundled generators really are.

``gtacity bench`` refuses to time a configuration whose output is further from eager torch fp32
than its precision's tolerance (``gtacity.engine.measure.bench_plan.TOLERANCES``). The fp32 bound
must admit what two *correct* fp32 implementations differ by (each rounds its convolution sums
and instance-norm reductions in its own order), on the generators users actually run, or the
shipped models fail their own check. This script measures that difference.

For every bundled generator (the trained demo teachers and their distilled students) it runs, on
the CPU, eager torch fp32 (the reference), OpenVINO fp32 (the openvino backend, exactly as the
bench builds it) and, where onnxruntime is installed, the fp32 ONNX export in onnxruntime, on

- the bench's own input: uniform random in [-1, 1], seeded as the bench seeds it, at the bench's
  default CPU sizes (256x256, 512x256) and the demo clip's size (512x288);
- real frames of the generator's source domain from ``../shared/data/real`` (gta2city: GTA5
  frames, city2gta: Cityscapes frames), resized to those sizes and at their own size (padded to a
  multiple of 4 as the pipeline pads: 960x540 -> 960x540, 2048x1024).

It prints one markdown row per generator x input x implementation: max and mean absolute
difference from torch fp32 in [-1, 1] units (1/127.5 per 8-bit level), the worst over the frames.

    python benchmarks/fp32_agreement.py [--real ../shared/data/real] [--frames 2] [--no-native]
    python benchmarks/fp32_agreement.py --sizes 1024x512,2048x1024 --no-real   # the bench input, larger
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch

from gtacity.checkpoint import bundled_generators, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.frames import Frame
from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.engine.stream.convert import to_batch
from gtacity.images import IMAGE_EXTENSIONS, decode_rgb

# ``../shared/data/real`` seen from the project root (a worktree may sit one level deeper).
REAL = next((p / "shared" / "data" / "real" for p in Path(__file__).resolve().parents
             if (p / "shared" / "data" / "real").is_dir()), Path("../shared/data/real"))
BENCH_SIZES = ((256, 256), (512, 256), (512, 288))  # bench defaults on a CPU; the demo clip's size
SOURCES = {"gta2city": ("gta5",), "city2gta": ("cityscapes/leftImg8bit", "cityscapes_seq")}


def bench_input(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """The bench's own input (see ``_Bench._references``): (1, 3, H, W) uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=generator) * 2 - 1


def real_inputs(real: Path, direction: str, count: int, native: bool,
                sizes: tuple[tuple[int, int], ...]) -> dict[str, list[torch.Tensor]]:
    """Frames of ``direction``'s source domain, per size label: resized to each bench size and,
    with ``native``, at their own size; as the pipeline feeds them (padded, [-1, 1])."""
    paths: list[Path] = []
    for folder in SOURCES[direction]:
        found = sorted(p for p in (real / folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += found[-count:]  # the last by name: held out from the students' distillation
    images = [decode_rgb(p) for p in paths]
    cpu = torch.device("cpu")
    out: dict[str, list[torch.Tensor]] = {}
    for width, height in sizes:
        resized = [cv2.resize(im, (width, height), interpolation=cv2.INTER_AREA) for im in images]
        out[f"{width}x{height}"] = [to_batch([Frame(im, 0)], cpu) for im in resized]
    if native:
        for im in images:
            out.setdefault(f"{im.shape[1]}x{im.shape[0]} (own size)", []).append(to_batch([Frame(im, 0)], cpu))
    return out


class OnnxRuntime:
    """The fp32 ONNX export of ``net`` in onnxruntime's CPU provider (None where not installed)."""

    @classmethod
    def maybe(cls, net: torch.nn.Module) -> OnnxRuntime | None:
        try:
            import onnxruntime  # noqa: F401

            from gtacity.engine.exporters.onnx import to_onnx
        except ImportError:
            return None
        return cls(net, to_onnx)

    def __init__(self, net: torch.nn.Module, to_onnx):
        import onnxruntime as ort

        from gtacity.engine.exporters.onnx import INPUT_NAME, OUTPUT_NAME

        self._names = INPUT_NAME, OUTPUT_NAME
        model = to_onnx(net)
        self._session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        input_name, output_name = self._names
        return torch.from_numpy(self._session.run([output_name], {input_name: x.numpy()})[0])


def openvino_fp32(net: torch.nn.Module):
    backend = create_backend("openvino", net, precision="fp32", device="cpu")
    prepared: set[tuple[int, int]] = set()

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] not in prepared:  # as the bench and the pipeline do: one prepare per size
            backend.prepare(1, x.shape[-2], x.shape[-1])
            prepared.add(tuple(x.shape[-2:]))
        return backend.infer(x)

    return run


def compare(net, implementations: dict, inputs: list[torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Implementation name -> (worst max abs, worst mean abs) difference from torch fp32."""
    worst: dict[str, tuple[float, float]] = {}
    for x in inputs:
        with torch.inference_mode():
            ref = net(x)
        for name, run in implementations.items():
            diff = (run(x).float() - ref).abs()
            old = worst.get(name, (0.0, 0.0))
            worst[name] = (max(old[0], diff.max().item()), max(old[1], diff.mean().item()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--frames", type=int, default=2, help="real frames per source folder")
    parser.add_argument("--no-native", action="store_true", help="skip the frames at their own size")
    parser.add_argument("--no-real", action="store_true", help="only the bench's own input")
    parser.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in BENCH_SIZES), help="WxH,...")
    args = parser.parse_args()
    sizes = tuple(tuple(int(v) for v in item.split("x")) for item in args.sizes.split(","))
    print(describe_machine(machine_info()))
    print(describe_versions(versions()))
    print("| generator | input | size | implementation | max abs | mean abs |")
    print("| --- | --- | --- | --- | --- | --- |")
    start = time.perf_counter()
    for name, path in bundled_generators().items():
        net, info = load_generator(path)
        impls = {"openvino fp32": openvino_fp32(net)}
        ort_run = OnnxRuntime.maybe(net)
        if ort_run is not None:
            impls["onnxruntime fp32"] = ort_run
        cases = {("bench input", f"{w}x{h}"): [bench_input(w, h)] for w, h in sizes}
        real = {} if args.no_real else real_inputs(args.real, info.direction, args.frames, not args.no_native, sizes)
        for size, frames in real.items():
            cases[(f"real, {len(frames)} frames", size)] = frames
        for (kind, size), inputs in cases.items():
            for impl, (max_abs, mean_abs) in compare(net, impls, inputs).items():
                print(f"| {name} | {kind} | {size} | {impl} | {max_abs:.2e} | {mean_abs:.2e} |", flush=True)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
