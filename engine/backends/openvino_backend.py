"""OpenVINO on the CPU: the fastest way to run the generator without a GPU."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.export import Dim

from gtacity import hardware
from gtacity.engine.backends.base import Backend, BackendError, Precision
from gtacity.engine.exporters import int8
from gtacity.engine.exporters.cache import cache_root, feed_weights
from gtacity.nets import MAX_BATCH, MAX_SIDE, MIN_SIZE, SIZE_MULTIPLE

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


@functools.cache
def _core() -> "ov.Core":
    return ov.Core()


def _ov_version() -> str:
    return ov.__version__.split("-")[0]


def _side_dim(name: str) -> Any:
    """A height or width that can be any multiple of 4 from 8 to 16384."""
    return SIZE_MULTIPLE * Dim(name, min=MIN_SIZE // SIZE_MULTIPLE, max=MAX_SIDE // SIZE_MULTIPLE)


# Bumped when the conversion changes the graph it makes, so cached models of an older one are not reused.
CONVERSION = "mvn-norms-v1"


class _MVNInstanceNorm(nn.Module):
    """InstanceNorm (affine=False) spelled as OpenVINO's MVN fusion pattern expects it.

    ``torch.export`` lowers ``F.instance_norm`` to a batch norm over a reshaped tensor, which OpenVINO
    runs as two ReduceMeans and a chain of element-wise ops, each a pass over memory. Written as
    ``(x - mean) / sqrt(mean((x - mean)^2) + eps)`` the same maths becomes one MVN node, with the
    following ReLU fused into it. Measured on a 2-core AVX2 EPYC, openvino fp32 at 512x284: the
    norms of the distilled demo student fell from ~20 to ~10 ms a frame, the demo generator's from
    ~33 to ~19 ms (benchmarks/openvino_norms.py, RESULTS.md); outputs within 2e-4 of the torch form.
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean((2, 3), keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean((2, 3), keepdim=True) + self.eps)


def _use_mvn_norms(net: nn.Module) -> None:
    """In place: every InstanceNorm of ``net`` (affine=False, no running stats) becomes an MVN one."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
                setattr(parent, name, _MVNInstanceNorm(child.eps))


def to_openvino(net: nn.Module, mvn_norms: bool = True) -> "ov.Model":
    """The generator as an OpenVINO model with dynamic batch, height and width, converted from a copy.

    ``mvn_norms``: InstanceNorms as :class:`_MVNInstanceNorm` (the backend's way; False gives
    ``torch.export``'s own lowering, for benchmarks/openvino_norms.py).

    ``torch.export`` with dynamic dims, not ``convert_model(net, example_input=...)``: that traces
    with ``torch.jit.trace``, which bakes the example's shape into the graph (through
    instance_norm's reshapes), so every frame size would need a new trace of several seconds.
    """
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()
    if mvn_norms:
        _use_mvn_norms(net)
    dims = {0: Dim("batch", min=1, max=MAX_BATCH), 2: _side_dim("h4"), 3: _side_dim("w4")}
    # Batch 2, not 1: torch.export specialises dims whose example size is 0 or 1.
    example = torch.zeros(2, 3, 8 * SIZE_MULTIPLE, 8 * SIZE_MULTIPLE)
    with torch.no_grad():
        exported = torch.export.export(net, (example,), dynamic_shapes=(dims,))
    return ov.convert_model(exported)


def _cache_key(net: nn.Module) -> str:
    """Checksum of every weight (names, shapes, values) plus the versions that shape the IR."""
    digest = hashlib.sha256(
        f"{type(net).__name__} torch {torch.__version__} ov {ov.__version__} {CONVERSION}".encode()
    )
    feed_weights(digest, net)
    return digest.hexdigest()[:32]


def _load_or_convert(net: nn.Module, cache_dir: str | None) -> tuple["ov.Model", bool]:
    """(model, whether it came from the cache); a fresh conversion is stored for next time."""
    return _cached(cache_root(cache_dir, "openvino"), _cache_key(net), lambda: to_openvino(net))


def _cached(root: Path | None, name: str, make: Callable[[], "ov.Model"]) -> tuple["ov.Model", bool]:
    """(the model stored as ``root/name``, or ``make()``'s, stored there for next time; from cache)."""
    if root is None:
        return make(), False
    entry = root / name
    if (entry / "model.xml").is_file():
        try:
            return _core().read_model(str(entry / "model.xml")), True
        except RuntimeError:
            shutil.rmtree(entry, ignore_errors=True)  # damaged entry: make it again below
    model = make()
    with contextlib.suppress(OSError):  # a read-only or full cache only costs the next run time
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{entry.name}.partial-", dir=root))
        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        try:
            staging.rename(entry)  # atomic: readers see a whole entry or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process stored it first
    return model, False


def _isa_key() -> str:
    """This CPU's instruction sets as OpenVINO's kernels see them, as a file-name-safe key."""
    caps = hardware.cpu_capabilities()
    return "-".join(f.name for f in fields(caps) if getattr(caps, f.name) is True) or "none"


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
        self._model, self.from_cache = _load_or_convert(net, self.config.cache_dir)
        self._weights_key = _cache_key(net)
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
        capabilities = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return tuple(p for p in cls.precisions["cpu"] if p == "fp32" or _CAPABILITY[p] in capabilities)

    @classmethod
    def default_precision(cls, device: torch.device) -> Precision:
        """bf16 where the CPU has it natively, else fp32 (:func:`gtacity.hardware.default_precision`)."""
        return hardware.default_precision(hardware.cpu_capabilities(), cls.name)  # type: ignore[return-value]

    def describe(self) -> str:
        """E.g. ``"openvino 2026.4.1 CPU, bf16, LATENCY"``."""
        return f"openvino {_ov_version()} CPU, {self.precision}, {self.config.performance_hint}"

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
        seconds = []

        def quantize() -> "ov.Model":
            start = time.perf_counter()
            model = int8.quantize(self._model, frames, progress)
            seconds.append(time.perf_counter() - start)
            return model

        name = int8.cache_name(f"{self._weights_key} ov {ov.__version__}", frames)
        root = cache_root(self.config.cache_dir, "openvino")
        quantized, from_cache = _cached(root, name, quantize)
        # The comparison with fp32 (two compilations and 2 x 8 inferences: 3-11 s a job on 2 cores) is kept
        # with the cached model, per instruction set: int8 kernels round differently on AVX2, VNNI
        # and AMX, so a cache shared by other CPUs checks again there.
        check_file = None if root is None else root / name / f"check-{_isa_key()}.json"
        self.int8_check = int8.check(
            self._compile_fp32, self._model, quantized, frames, self.config.min_psnr_db,
            quantize_s=sum(seconds), from_cache=from_cache, stored=check_file if from_cache else None,
        )
        if check_file is not None and self.int8_check.rechecked:
            int8.store_check(self.int8_check, check_file)
        self._model = quantized

    def _compile_fp32(self, model: "ov.Model") -> Any:
        return _core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def _build(self, max_batch: int, height: int, width: int) -> list[Any]:
        if self.needs_calibration():
            raise BackendError("int8 needs calibration frames first: call calibrate(frames) before prepare")
        model = self._model.clone()
        model.reshape([ov.Dimension(1, max_batch), 3, height, width])
        properties: dict[str, Any] = {"PERFORMANCE_HINT": self.config.performance_hint}
        properties["INFERENCE_PRECISION_HINT"] = self._precision_hint
        if self.config.num_threads:
            properties["INFERENCE_NUM_THREADS"] = self.config.num_threads
        compiled = _core().compile_model(model, "CPU", properties)
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
