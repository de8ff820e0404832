"""TensorRT on NVIDIA GPUs: the generator as an fp16 engine, built once per shape and cached."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gtacity.engine.backends.base import Backend, BackendError, Precision
from gtacity.engine.exporters.plan import profile_for_batch
from gtacity.engine.exporters.tensorrt import (
    VIAS,
    BuildOptions,
    engine_for,
    gpu_identity,
    import_tensorrt,
    tensorrt_missing,
)


@dataclass(frozen=True)
class TensorRTConfig:
    """Options of the tensorrt backend.

    Each prepared frame size gets an engine whose optimisation profile runs batches of 1 to
    ``max_batch`` frames (optimised for ``max_batch``). Engines are cached on disk by their key
    (ONNX checksum, precision, profile, TensorRT version, GPU and compute capability; see
    :mod:`gtacity.engine.exporters.plan`): the first ``prepare`` of a shape builds, every later one,
    in this or any later process, loads the engine file instead.

    Precision: ``"auto"`` is fp16 (InstanceNorm statistics in fp32); fp32 runs convolutions in
    TF32 on TensorRT 10 (its default), in fp32 on TensorRT 11.

    Attributes:
        via: ``"onnx"`` (TensorRT's ONNX parser on the exported ONNX) or ``"torch-tensorrt"``.
        workspace_gib: TensorRT's scratch-memory limit while building.
        cache_dir: root of the engine/ONNX/timing caches; None = ``$GTACITY_CACHE_DIR`` or
            ``~/.cache/gtacity``; ``""`` = no cache (every process builds again).
    """

    via: str = "onnx"
    workspace_gib: float = 4.0
    cache_dir: str | None = None

    def __post_init__(self):
        if self.via not in VIAS:
            raise BackendError(f"tensorrt via must be one of {', '.join(VIAS)}, got {self.via!r}")


class _Engine:
    """One deserialised engine and its execution contexts, one per CUDA stream.

    A context holds shapes and addresses between enqueue calls, so two streams sharing one would
    race; per-stream contexts let the pipeline keep several batches in flight.
    """

    def __init__(self, trt, plan: bytes):
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))  # must outlive the engine
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError("TensorRT could not load the engine (its messages above say why); "
                               "delete the engine cache entry to rebuild it")
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.input_dtype = dtypes[self.engine.get_tensor_dtype(self.input)]
        self.output_dtype = dtypes[self.engine.get_tensor_dtype(self.output)]
        self._contexts: dict[int, Any] = {}

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Enqueue ``batch`` on the current stream; returns without synchronising."""
        stream = torch.cuda.current_stream(batch.device)
        context = self._contexts.get(stream.cuda_stream)
        if context is None:
            context = self._contexts[stream.cuda_stream] = self.engine.create_execution_context()
        x = batch.to(self.input_dtype).contiguous()  # (N, 3, H, W), owned by torch on this stream
        context.set_input_shape(self.input, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(self.output)), dtype=self.output_dtype,
                          device=batch.device)
        context.set_tensor_address(self.input, x.data_ptr())
        context.set_tensor_address(self.output, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT failed to enqueue a batch of shape {tuple(x.shape)}")
        return out.float()


class TensorRTBackend(Backend):
    """The generator as TensorRT engines (one per prepared frame size), run on torch CUDA streams.

    ``infer`` runs on ``torch.cuda.current_stream()`` and never synchronises; input and output
    buffers are torch tensors. ``prepare`` builds through the engine cache.

    Attributes:
        engines_built: engines this backend had to build (cache misses); 0 when every prepared
            shape came from the cache.
    """

    name = "tensorrt"
    config_class = TensorRTConfig
    precisions = {"cuda": ("fp32", "fp16")}
    auto_rank = {"cuda": 20}

    def __init__(
        self,
        net: nn.Module,
        *,
        precision: str = "auto",
        device: str | torch.device = "auto",
        config: TensorRTConfig | None = None,
    ):
        super().__init__(net, precision=precision, device=device, config=config)
        self._trt = import_tensorrt()
        self.net = copy.deepcopy(net).to("cpu", torch.float32).eval()  # exported on the CPU
        self.engines_built = 0

    @classmethod
    def unavailable_reason(cls, device: torch.device | None = None) -> str | None:
        """How to install TensorRT where it is missing; else CUDA's reason, if any."""
        return tensorrt_missing() or super().unavailable_reason(device)

    @classmethod
    def default_precision(cls, device: torch.device) -> Precision:
        """fp16, with InstanceNorm in fp32."""
        return "fp16"

    def describe(self) -> str:
        """E.g. ``"tensorrt 10.13.3 CUDA (NVIDIA H100 80GB HBM3), fp16, via onnx"``."""
        gpu = gpu_identity(self.device)[0]
        return f"tensorrt {self._trt.__version__} CUDA ({gpu}), {self.precision}, via {self.config.via}"

    def _build(self, max_batch: int, height: int, width: int) -> _Engine:
        options = BuildOptions(self.precision, self.config.via, self.config.workspace_gib,
                               self.config.cache_dir)
        entry = engine_for(self.net, None, profile_for_batch(max_batch, height, width), options,
                           self.device)
        self.engines_built += entry.built
        with torch.cuda.device(self.device):
            return _Engine(self._trt, entry.plan)

    def _run(self, engine: _Engine, batch: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            return engine.run(batch)
