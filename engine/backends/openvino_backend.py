"""OpenVINO on the CPU: the fastest way to run the generator without a GPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gtacity import hardware
from gtacity.engine.backends.base import Backend, BackendError, Precision
from gtacity.engine.exporters import int8
from gtacity.engine.exporters.cache import cache_root, weights_checksum
from gtacity.engine.exporters.openvino import compile_fp32, core, load_or_convert, model_key, ov_version, read_stored

try:
    import openvino as ov
except ImportError:
    ov = None

_HINTS = ("LATENCY", "THROUGHPUT")
_OV_TYPE = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_PRECISION = {ov_type: precision for precision, ov_type in _OV_TYPE.items()}
_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "INT8"}
# Upper bounds of the exported graph's dynamic dims; each prepared shape is compiled static inside.


@dataclass(frozen=True)
class OpenVINOConfig:
    """Options of the openvino backend.

    Precision: ``"auto"`` is bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) and fp32 elsewhere,
    decided by :mod:`gtacity.hardware`; the precision it really uses is read back from the compiled
    model. fp16 is offered only where the CPU reports it (AVX512-FP16 / AMX-FP16, ARM).

    Measured with torch 2.14.1 and OpenVINO 2026.4.1 on a 2-core AMD EPYC with AVX512-BF16 (no
    AMX), ngf 64, 9 blocks, 256x256; frames/s relative to eager torch fp32 at the same batch, every
    variant in one run (a shared CPU moves absolute numbers, not much the ratios):

        ===============  ===============  =============================
        variant          quiet CPU        CPU shared with a training job
                         batch 1  batch 4 batch 1  batch 4
        ===============  ===============  =============================
        bf16 LATENCY     2.3x     2.6x    3.2x     2.5x
        bf16 THROUGHPUT  1.2x     2.6x*   2.9x     2.8x
        fp32 LATENCY     1.1x     1.3x    1.6x     1.4x
        ===============  ===============  =============================

    (quiet: torch fp32 1.8 and 1.6 frames/s, openvino bf16 LATENCY 4.1 frames/s at both batches;
    * from a separate run, where THROUGHPUT with two requests in flight gave 3.78 frames/s and
    LATENCY 3.73.)
    LATENCY is the default: one stream on every core. THROUGHPUT makes one stream per core here, and
    ``infer`` splits a batch across them, so a batch smaller than the stream count leaves cores idle
    (batch 1: half speed on a quiet CPU); at batch 4 it only matches LATENCY on a quiet CPU and wins
    a little when other processes take cores (single-thread streams have no threads to wait for).
    OpenVINO's guidance is that it pays more on many-core machines; that could not be measured here.

    The batch dimension of each prepared shape is dynamic (1..max_batch): as fast as a static batch
    (medians within 1%, single runs within 5%), and a short last batch costs only its own frames, where padding
    it to max_batch would run the full batch.

    The conversion from PyTorch (``torch.export`` + ``convert_model``, ~4.5 s even for the small demo
    generator, most of a short job) is cached on disk as OpenVINO IR, keyed by a checksum of the
    weights and the torch and OpenVINO versions; a cached model loads in ~0.1 s.

    Attributes:
        cache_dir: where converted models are kept; None = ``$GTACITY_CACHE_DIR`` or
            ``~/.cache/gtacity``; ``""`` = no cache.
        performance_hint: ``"LATENCY"`` (one stream using every core) or ``"THROUGHPUT"`` (several
            streams; a batch is split across them).
        num_threads: CPU threads for inference; 0 = OpenVINO's choice (all physical cores), the
            default. Capping it to leave a core to video decoding and encoding loses on a few
            cores: measured side by side on a quiet 2-core AVX2 EPYC (benchmarks/cpu_threads.py,
            demo generator, 256x256 H.264 clip, RESULTS.md), one inference thread of two ran the
            whole translation at 0.58x (fp32) and 0.56x (int8) of all cores, because decoding,
            colour and libx264 take only ~5% of the run there (end to end 7.3 vs 7.7 frames/s for
            the model alone, int8). THROUGHPUT with batch 2 came within noise (1.01x, 1.04x). On a
            many-core CPU a cap may pay; that is the check to repeat there.
        min_psnr_db: int8 only: the least PSNR vs fp32 (worst calibration frame) an int8 model
            must reach to be used (see :mod:`gtacity.engine.exporters.int8`).
    """

    performance_hint: str = "LATENCY"
    num_threads: int = 0
    cache_dir: str | None = None
    min_psnr_db: float = int8.MIN_PSNR_DB

    def __post_init__(self):
        if self.performance_hint not in _HINTS:
            raise BackendError(
                f"openvino performance_hint must be one of {', '.join(_HINTS)}, "
                f"got {self.performance_hint!r}"
            )
        if self.num_threads < 0:
            raise BackendError(
                f"openvino num_threads must be 0 (automatic) or more, got {self.num_threads}"
            )


class OpenVINOBackend(Backend):
    """The generator converted once to OpenVINO and compiled for the CPU per prepared frame size.

    Input and output tensors are handed to OpenVINO as views of torch memory: nothing is copied on
    the way in (for a contiguous batch) or out.

    Attributes:
        from_cache: whether the converted model came from the on-disk cache (see OpenVINOConfig).
    """

    name = "openvino"
    config_class = OpenVINOConfig
    precisions = {"cpu": ("fp32", "bf16", "fp16", "int8")}
    auto_rank = {"cpu": 10}

    def __init__(
        self,
        net: nn.Module,
        *,
        precision: str = "auto",
        device: str | torch.device = "auto",
        config: OpenVINOConfig | None = None,
    ):
        super().__init__(net, precision=precision, device=device, config=config)
        # int8 models keep their unquantised ops (norms, element-wise ops) in fp32.
        self._precision_hint = _OV_TYPE.get(self.precision, "f32")
        self._model, self.from_cache = load_or_convert(net, self.config.cache_dir)
        self._weights_key = model_key(net)
        self._checksum = weights_checksum(net)  # names a shipped int8 model, whatever file the weights came from
        self.int8_check: int8.Int8Check | None = None

    @classmethod
    def unavailable_reason(cls, device: torch.device | None = None) -> str | None:
        """``"openvino not installed"`` without the package; ``None`` otherwise."""
        if ov is None:
            return "openvino not installed (pip install openvino)"
        return super().unavailable_reason(device)

    @classmethod
    def supported_precisions(cls, device: torch.device) -> tuple[Precision, ...]:
        """fp32, plus bf16, fp16 and int8 where the CPU reports them as optimisation capabilities."""
        capabilities = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return tuple(p for p in cls.precisions["cpu"] if p == "fp32" or _CAPABILITY[p] in capabilities)

    @classmethod
    def default_precision(cls, device: torch.device) -> Precision:
        """bf16 where the CPU has it natively, else fp32 (:func:`gtacity.hardware.default_precision`)."""
        return hardware.default_precision(hardware.cpu_capabilities(), cls.name)  # type: ignore[return-value]

    def describe(self) -> str:
        """E.g. ``"openvino 2026.4.1 CPU, bf16, LATENCY"``."""
        return f"openvino {ov_version()} CPU, {self.precision}, {self.config.performance_hint}"

    def needs_calibration(self) -> bool:
        """True for int8 until :meth:`calibrate` has run."""
        return self.precision == "int8" and self.int8_check is None

    def calibrate(self, frames: list[torch.Tensor], progress: bool = True) -> None:
        """int8: quantise on ``frames`` (or load the cached model), then check it against fp32;
        ``progress``: NNCF's progress bars on stderr (False: none).

        Sets :attr:`int8_check`; see :mod:`gtacity.engine.exporters.int8` for the method and its cost.

        Raises:
            BackendError: NNCF missing, or the int8 model below ``config.min_psnr_db``.
        """
        if self.precision != "int8":
            return
        root = cache_root(self.config.cache_dir, "openvino")
        name = int8.cache_name(self._weights_key)
        self._model, self.int8_check = int8.calibrated(self._model, frames, root, name, self._compile_fp32,
                                                       self.config.min_psnr_db, progress)

    def reuse_calibration(self, frames: list[torch.Tensor]) -> bool:
        """int8: the generator's int8 model made by an earlier calibration (cached) or shipped with a
        bundled generator, checked against fp32 on ``frames`` of this job; False when there is none.

        Raises:
            BackendError: the model falls below ``config.min_psnr_db`` on these frames.
        """
        if self.precision != "int8":
            return False
        stored = read_stored(cache_root(self.config.cache_dir, "openvino"),
                             int8.cache_name(self._weights_key))
        reused = "cached"
        if stored is None:
            shipped = int8.shipped_model(self._checksum)
            if shipped is None:
                return False
            stored, reused = (core().read_model(str(shipped)), {}), "shipped"
        self.int8_check = int8.check(self._compile_fp32, self._model, stored[0], frames, self.config.min_psnr_db,
                                     from_cache=True, reused=reused)
        self._model = stored[0]
        return True

    def _compile_fp32(self, model: "ov.Model") -> Any:
        return compile_fp32(model, cache_root(self.config.cache_dir, "openvino"))

    def _build(self, max_batch: int, height: int, width: int) -> list[Any]:
        if self.needs_calibration():
            raise BackendError("int8 needs calibration frames first: call calibrate(frames) before prepare")
        model = self._model.clone()
        model.reshape([ov.Dimension(1, max_batch), 3, height, width])
        properties: dict[str, Any] = {"PERFORMANCE_HINT": self.config.performance_hint}
        properties["INFERENCE_PRECISION_HINT"] = self._precision_hint
        if self.config.num_threads:
            properties["INFERENCE_NUM_THREADS"] = self.config.num_threads
        compiled = core().compile_model(model, "CPU", properties)
        if self.precision != "int8":
            self.precision = _PRECISION[compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()]
        n_requests = min(max_batch, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        # The requests keep the compiled model alive.
        return [compiled.create_infer_request() for _ in range(n_requests)]

    def _run(self, requests: list[Any], batch: torch.Tensor) -> torch.Tensor:
        x = batch.detach().contiguous()  # (N, 3, H, W)
        out = torch.empty_like(x)
        requests = requests[: len(x)]
        parts = zip(requests, x.tensor_split(len(requests)), out.tensor_split(len(requests)))
        for request, x_part, out_part in parts:
            request.set_input_tensor(ov.Tensor(x_part.numpy(), shared_memory=True))
            request.set_output_tensor(ov.Tensor(out_part.numpy(), shared_memory=True))
            request.start_async()
        for request in requests:
            request.wait()
        return out
