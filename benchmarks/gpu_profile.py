"""Where eager fp16 spends its time on a GPU: memory layout and the fp32 instance norms, side by side.

::

    python benchmarks/gpu_profile.py                   # ngf 64 / 9 blocks, 1024x512, batch 8
    python benchmarks/gpu_profile.py --profile 12      # also the 12 costliest CUDA kernels of two variants

Why: on an H200 ``benchmarks/gpu_bench.py`` measured eager fp16 at batch 8 no faster than eager fp32
(TF32) at batch 1, while ``torch.compile`` ran 4.3x faster: the convolutions are not what costs.
Variants (all fp16 but the reference rows, same random-init generator and input):

- ``channels_last``: the layout the torch backend uses on CUDA, or NCHW;
- ``norms``: ``fp32`` is :class:`gtacity.nets.InstanceNorm2dFP32` as shipped (cast up, normalise,
  cast down); ``native`` calls ``F.instance_norm`` on the fp16 tensor (CUDA's batch-norm kernels
  accumulate in fp32 for fp16 inputs, so the cast may be redundant there: the max difference to
  the fp32 reference says whether it is).

Each row: ms per batch (median of CUDA-event timed calls after a warm-up), frames/s, and the max
and mean absolute difference to fp32 without TF32 (in [-1, 1] units; one 8-bit level is 0.0078).
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torch.nn.functional as F
from kernels_bench import median_ms

from gtacity.engine.measure.bench_report import describe_machine, describe_versions, machine_info, versions
from gtacity.nets import InstanceNorm2dFP32, ResnetGenerator, init_weights


def native_norms(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose instance norms run in the input's dtype (no fp32 round trip)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if isinstance(module, InstanceNorm2dFP32):
            module.forward = lambda x, eps=module.eps: F.instance_norm(x, eps=eps)
    return net


def top_kernels(net: torch.nn.Module, x: torch.Tensor, count: int) -> str:
    """The ``count`` costliest CUDA kernels of three forwards (torch.profiler's table)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            net(x)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=count, max_name_column_width=70)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, help="Print this many costliest kernels of two variants.")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_profile: needs a CUDA GPU and this machine has none; nothing was measured", file=sys.stderr)
        return 1
    print(describe_machine(machine_info()), describe_versions(versions()), sep="\n")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    cpu_net = init_weights(ResnetGenerator(args.ngf, args.n_blocks)).eval()
    x = torch.rand(args.batch, 3, args.height, args.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = x.cuda()
    net32 = copy.deepcopy(cpu_net).cuda()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        reference = net32(x)
    # (label, net, input, TF32 convolutions: PyTorch's default, off only for the reference)
    rows = [("fp32 NCHW, no TF32 (reference)", net32, x, False), ("fp32 NCHW, TF32 (PyTorch's default)", net32, x, True)]
    for channels_last in (True, False):
        layout = torch.channels_last if channels_last else torch.contiguous_format
        xh = x.half().contiguous(memory_format=layout)
        for norms in ("fp32", "native"):
            net = copy.deepcopy(cpu_net) if norms == "fp32" else native_norms(cpu_net)
            net = net.cuda().half().to(memory_format=layout)
            rows.append((f"fp16 {'channels_last' if channels_last else 'NCHW'}, {norms} norms", net, xh, True))
    print(f"\nngf {args.ngf}, {args.n_blocks} blocks, {args.width}x{args.height}, batch {args.batch}")
    print(f"{'variant':40} {'ms/batch':>9} {'frames/s':>9} {'max abs':>9} {'mean abs':>9}")
    for label, net, inp, tf32 in rows:
        torch.backends.cudnn.allow_tf32 = tf32
        with torch.inference_mode():
            ms = median_ms(lambda net=net, inp=inp: net(inp), args.repeats)
            diff = (net(inp).float() - reference).abs()
        print(f"{label:40} {ms:9.2f} {1000 * args.batch / ms:9.1f} {diff.max().item():9.4f} "
              f"{diff.mean().item():9.5f}")
    for label, net, inp, _ in rows[2::3] if args.profile else ():
        print(f"\n{label}: the {args.profile} costliest CUDA kernels of 3 forwards")
        print(top_kernels(net, inp, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
