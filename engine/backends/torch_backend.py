"""Eager PyTorch on CPU or CUDA: the reference backend, and the fast one on NVIDIA GPUs."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from gtacity import hardware
from gtacity.engine.backends.base import Backend, Precision

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    channels_last is no faster on CPU eager (0.9x at batch 1 and 4), so it is off there by default.

    Attributes:
        channels_last: NHWC memory layout for weights and activations; ``None`` = on for CUDA
            (tensor cores want it) and off for CPU.
        cudnn_benchmark: let cuDNN time its convolution algorithms for every new shape (done in
            ``prepare``). Sets the process-wide ``torch.backends.cudnn.benchmark`` flag.
    """

    channels_last: bool | None = None
    cudnn_benchmark: bool = True


class TorchBackend(Backend):
    """The generator run eagerly by PyTorch under ``torch.inference_mode()``.

    On CUDA, ``infer`` runs on the current stream and returns without synchronising; ``prepare``
    runs one batch of ``max_batch`` frames so that cuDNN's algorithm search happens there, not
    in the first ``infer``.
    """

    name = "torch"
    config_class = TorchConfig
    precisions = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
    auto_rank = {"cuda": 10, "cpu": 0}

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
        self.channels_last = cuda if self.config.channels_last is None else self.config.channels_last
        self._memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self._dtype = _DTYPES[self.precision]
        if cuda and self.config.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.net.to(self.device, self._dtype, memory_format=self._memory_format)

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
        """E.g. ``"torch 2.14.1 CUDA (NVIDIA H100 80GB HBM3), fp16, channels_last"``."""
        where = "CPU"
        if self.device.type == "cuda":
            where = f"CUDA ({torch.cuda.get_device_name(self.device)})"
        layout = ", channels_last" if self.channels_last else ""
        return f"torch {torch.__version__.split('+')[0]} {where}, {self.precision}{layout}"

    def _build(self, max_batch: int, height: int, width: int) -> None:
        if self.device.type == "cuda":
            self._run(None, torch.zeros(max_batch, 3, height, width, device=self.device))

    def _run(self, built: None, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = batch.to(dtype=self._dtype, memory_format=self._memory_format)  # (N, 3, H, W)
            return self.net(x).float()
