"""PyTorch on CPU or CUDA: the reference backend, and on NVIDIA GPUs a fast one (fp16,
optional channels_last, CUDA graphs per prepared shape and stream, optionally ``torch.compile``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gtacity import hardware
from gtacity.engine.backends.base import Backend, BackendError, Precision

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# torch.compile modes that leave CUDA graphs to this backend (inductor's own cudagraph trees, in
# "reduce-overhead" and "max-autotune", are not made for replays on several streams at once).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TorchConfig:
    """Options of the torch backend.

    Precision: the weights are cast to the compute dtype once (the same numbers as autocast, without
    casting every weight on every call); :class:`~gtacity.nets.InstanceNorm2dFP32` keeps the
    normalisation statistics in fp32. ``"auto"`` is fp16 on CUDA and fp32 on CPU.

    CPU numbers (2-core AMD EPYC with AVX512-BF16, no AMX, torch 2.14.1, ngf 64, 9 blocks, 256x256,
    measured side by side): contrary to the usual advice, eager bf16 is *faster* than fp32 on this
    CPU (1.7x at batch 1, 1.3x at batch 4), but the openvino backend in bf16 is faster still
    (2.3-2.6x fp32) and is what ``create_backend("auto")`` picks on CPU. fp32 stays this backend's CPU default because it is the exact reference the other
    backends are checked against (bf16 differs by up to 0.065 in [-1, 1]); ask for bf16 explicitly.
    channels_last is no faster on CPU eager (0.9x at batch 1 and 4), and slower on a GPU, so it is off
    by default: on an H200 (fp16, ngf 64, 1024x512, batch 8) NCHW ran 46.5 ms a batch, channels_last
    68.1 (reflection padding and instance norm have no NHWC kernels: the layout is converted around
    them; ``benchmarks/gpu_profile.py``).

    CUDA: ``prepare`` runs the generator once per shape (cuDNN's algorithm search, compilation),
    then captures a CUDA graph of a ``max_batch`` call with static input and output buffers; each
    ``infer`` copies its batch into the input buffer, replays the graph on the current stream and
    returns a copy of the first ``N`` outputs (a short last batch runs the full graph: instance
    norm is per frame, so the padding frames never touch the real ones). One graph launch replaces
    a few hundred kernel launches per call, which is what keeps a small batch from being bound by
    the host. The pipeline runs several batches at once on their own streams, and a graph's buffers
    can serve one batch at a time, so each stream gets its own graph (captured at its first batch of
    a shape): memory for activations is paid once per stream and shape.

    Attributes:
        channels_last: NHWC memory layout for weights and activations; off by default (measured
            slower on CPU and GPU, see above).
        cudnn_benchmark: let cuDNN time its convolution algorithms for every new shape (done in
            ``prepare``). Sets the process-wide ``torch.backends.cudnn.benchmark`` flag.
        cuda_graphs: capture and replay CUDA graphs on CUDA (off: eager launches every call).
        compile: a ``torch.compile`` mode (one of :data:`COMPILE_MODES`) to compile the generator
            with inductor, once per prepared shape (tens of seconds each); None = no compilation.
    """

    channels_last: bool = False
    cudnn_benchmark: bool = True
    cuda_graphs: bool = True
    compile: str | None = None

    def __post_init__(self):
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise BackendError(
                f"torch compile must be one of {', '.join(COMPILE_MODES)} (or None), got {self.compile!r}"
            )


class _Graph:
    """One captured call at one shape for one stream: static input, graph, static output."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor):
        self.input = torch.zeros_like(example)  # (B, 3, H, W) float32, B = max_batch
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's other threads keep queueing copies on their streams while
        # this thread captures; only this thread's calls are checked for capture safety.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = forward(self.input)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        n = len(batch)
        with torch.inference_mode():  # the buffers may be inference tensors (prepared inside one)
            self.input[:n].copy_(batch)
            self.graph.replay()  # on the current stream
            return self.output[:n].clone()


class _Graphs:
    """A prepared shape's graphs, one per CUDA stream that has run it."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor):
        self._forward, self._example = forward, example
        self._by_stream: dict[int, _Graph] = {}

    def for_current_stream(self) -> _Graph:
        """The current stream's graph, captured at the stream's first call."""
        key = torch.cuda.current_stream(self._example.device).cuda_stream
        if key not in self._by_stream:
            self._by_stream[key] = _Graph(self._forward, self._example)
        return self._by_stream[key]


class TorchBackend(Backend):
    """The generator run by PyTorch under ``torch.inference_mode()``.

    On CUDA, ``infer`` runs on the current stream and returns without synchronising; ``prepare``
    runs one batch of ``max_batch`` frames so that cuDNN's algorithm search (and compilation)
    happens there, not in the first ``infer``, and captures the current stream's CUDA graph.
    """

    name = "torch"
    config_class = TorchConfig
    precisions = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
    auto_rank = {"cuda": 10, "cpu": 0}  # below tensorrt on CUDA, openvino on CPU

    def __init__(
        self,
        net: nn.Module,
        *,
        precision: str = "auto",
        device: str | torch.device = "auto",
        config: TorchConfig | None = None,
    ):
        super().__init__(net, precision=precision, device=device, config=config)
        cuda = self.device.type == "cuda"
        self.channels_last = self.config.channels_last
        self._memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self._dtype = _DTYPES[self.precision]
        if cuda and self.config.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.net.to(self.device, self._dtype, memory_format=self._memory_format)
        self._module = self.net
        if self.config.compile is not None:
            self._module = torch.compile(self.net, mode=self.config.compile, dynamic=False)
        self.cuda_graphs = cuda and self.config.cuda_graphs

    @classmethod
    def supported_precisions(cls, device: torch.device) -> tuple[Precision, ...]:
        """fp32 and bf16 on CPU; fp32, fp16 and (Ampere and newer) bf16 on CUDA."""
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return ("fp32", "fp16")
        return super().supported_precisions(device)

    @classmethod
    def default_precision(cls, device: torch.device) -> Precision:
        """fp16 on CUDA; fp32 on CPU (see :class:`TorchConfig` for why not bf16)."""
        if device.type == "cuda":
            return "fp16"
        return hardware.default_precision(hardware.cpu_capabilities(), cls.name)  # type: ignore[return-value]

    def describe(self) -> str:
        """E.g. ``"torch 2.14.1 CUDA (NVIDIA H100 80GB HBM3), fp16, CUDA graphs"``."""
        where = "CPU"
        if self.device.type == "cuda":
            where = f"CUDA ({torch.cuda.get_device_name(self.device)})"
        extras = [
            "channels_last" * self.channels_last,
            "CUDA graphs" * self.cuda_graphs,
            f"compiled ({self.config.compile})" * (self.config.compile is not None),
        ]
        return ", ".join([f"torch {torch.__version__.split('+')[0]} {where}", self.precision,
                          *filter(None, extras)])

    def _build(self, max_batch: int, height: int, width: int) -> _Graphs | None:
        """Run once (autotuning, compilation); on CUDA with graphs, capture the current stream's."""
        if self.device.type != "cuda" and self.config.compile is None:
            return None
        x = torch.zeros(max_batch, 3, height, width, device=self.device)
        if not self.cuda_graphs:
            self._forward(x)
            return None
        # Warm up on a side stream, as CUDA graph capture wants (lazy initialisation, autotuning).
        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            self._forward(x)
        stream.wait_stream(side)
        graphs = _Graphs(self._forward, x)
        graphs.for_current_stream()
        return graphs

    def _run(self, built: _Graphs | None, batch: torch.Tensor) -> torch.Tensor:
        if built is None:
            return self._forward(batch)
        return built.for_current_stream()(batch)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = batch.to(dtype=self._dtype, memory_format=self._memory_format)  # (N, 3, H, W)
            return self._module(x).float()
