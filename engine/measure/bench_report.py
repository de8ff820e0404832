"""What ``gtacity bench`` measures besides time, and how its report reads.

Here: the machine and library versions a result is quoted with, peak host and device memory per
configuration, the measured matmul rate of a GPU (the roofline a generator's GMAC/s is put against),
the records of one run (:class:`BenchReport` and its rows) with their JSON form and text table.
The method (what is timed, when, against what) is in :mod:`gtacity.engine.measure.bench`.

JSON (``--json``; :meth:`~gtacity.engine.measure.bench_report.BenchReport.to_json`), top-level fields:

- ``format`` ("gtacity-bench"), ``format_version`` (2: ``e2e`` rows carry ``bound_share``), ``date`` (ISO 8601 with time zone),
  ``ok`` (every checked configuration agreed).
- ``machine``: ``cpu``, ``cpu_cores_usable``, ``torch_threads``, ``memory_gib``, ``gpus`` (names),
  ``os``, ``host_peak_per_config`` (False: host peaks are the whole process's so far),
  ``matmul_tflops`` (GPU only: ``"<device> <dtype>"`` -> measured TFLOP/s of an 8192^3 matmul).
- ``versions``: ``python``, ``gtacity`` and each installed one of torch, torchvision, openvino,
  onnx, onnxruntime, tensorrt, av, numpy (plus cuda, cudnn with a GPU).
- ``settings``: the :class:`~gtacity.engine.measure.bench.BenchConfig` fields (``backends``, ``precisions``,
  ``device``, ``sizes``, ``batch_sizes``, ``weights``, ``direction``, ``warmup``, ``repeats``, ``e2e``,
  ``e2e_frames``, ``e2e_seconds``, ``json_path``, ``seed``) and the generator's ``arch``, ``ngf``, ``n_blocks``.
- ``tolerances``: precision -> ``{"max_abs", "mean_abs"}`` in [-1, 1] units (1/127.5 per 8-bit
  level).
- ``unavailable`` (cannot run here), ``skipped`` (not asked for, or a precision the backend lacks):
  ``{backend, device, precision, reason}``.
- ``agreement``: ``{backend, device, precision, size, batch, max_abs, mean_abs, tolerance, ok}``.
- ``results``: ``{backend, device, precision, describe, size ("WxH"), batch, fps,
  ms_per_frame_p50, ms_per_frame_p95, repeats, build_s, warmup_s, peak_host_mib, peak_device_mib
  (null on CPU), gmacs_per_frame, gmac_per_s, matmul_share (achieved / measured matmul rate; null
  on CPU)}``.
- ``e2e`` (``--e2e`` only): ``{backend, device, precision, describe, size, batch, frames (translated
  in this pass), input_frames (in the input), stopped_by (null, or the ``--frames``/``--seconds``
  limit that ended the pass early), wall_s, fps, stage_s (each stage's busy seconds), bound_by (the
  stage that worked longest), bound_share (its busy seconds / wall_s; 1.0 = every other stage hidden
  behind it), build_s, peak_host_mib, peak_device_mib, streams (batches in flight)}``. On a GPU with
  several streams, inference's busy seconds add up overlapping GPU work: there it can pass 1.0.
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import gtacity
from gtacity import hardware
from gtacity.engine.backends import Backend
from gtacity.engine.stream.stages import STAGES
from gtacity.files import write_json

# Distributions whose versions decide the numbers; the ones not installed are left out.
_DISTRIBUTIONS = (
    "torch", "torchvision", "openvino", "onnx", "onnxruntime", "tensorrt", "av", "numpy",
)
_MIB = 2**20
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_PROC_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def machine_info() -> dict[str, Any]:
    """CPU model and cores, memory, GPUs and OS of this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": _cpu_model(),
        "cpu_cores_usable": cpus,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "gpus": [],
        "os": platform.platform(),
        "cpu_precisions": hardware.cpu_capabilities().describe(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def describe_machine(machine: dict[str, Any]) -> str:
    """One line: CPU, usable cores, memory, torch threads, GPUs (what every quoted number needs)."""
    return (
        f"{machine['cpu']}, {machine['cpu_cores_usable']} cores, {machine['memory_gib']} GiB, "
        f"torch threads {machine['torch_threads']}; GPU: {', '.join(machine['gpus']) or 'none'}"
        + (f"; CPU {machine['cpu_precisions']}" if machine.get("cpu_precisions") else "")
    )


def describe_versions(found: dict[str, str]) -> str:
    """One line: ``python 3.11.7, gtacity 0.1.0, torch ...``."""
    return ", ".join(f"{k} {v}" for k, v in found.items())


def versions() -> dict[str, str]:
    """Python, gtacity and every installed library among torch, openvino, onnx, tensorrt, PyAV..."""
    found = {"python": platform.python_version(), "gtacity": gtacity.__version__}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
        found["cudnn"] = str(torch.backends.cudnn.version())
    return found


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
        match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    except OSError:
        return None
    return round(int(match.group(1)) / 2**20, 1) if match else None


class HostPeak:
    """Peak resident memory of this process, restartable per configuration where Linux allows it.

    Linux keeps the peak in ``VmHWM`` (``/proc/self/status``); writing ``5`` to
    ``/proc/self/clear_refs`` sets it back to the current resident size, so each configuration gets
    its own peak. Where that file cannot be written (other systems, some containers) the peak is
    the whole process's so far (``getrusage``), and :attr:`per_config` says so.
    """

    def __init__(self):
        self.per_config = self._clear()

    def reset(self) -> None:
        """Start a new peak here (a no-op where :attr:`per_config` is False)."""
        if self.per_config:
            self._clear()

    def peak_mib(self) -> float:
        """The peak resident memory since the last :meth:`reset`, in MiB."""
        if self.per_config:
            match = re.search(r"^VmHWM:\s+(\d+) kB", _PROC_STATUS.read_text(), re.MULTILINE)
            return int(match.group(1)) / 1024
        import resource  # Unix only; this fallback never runs on Linux with /proc

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        return maxrss / _MIB if platform.system() == "Darwin" else maxrss / 1024

    @staticmethod
    def _clear() -> bool:
        try:
            _CLEAR_REFS.write_text("5")
            return "VmHWM" in _PROC_STATUS.read_text()
        except OSError:
            return False


def reset_device_peak(device: torch.device) -> None:
    """Start a new peak of torch's CUDA allocator on ``device`` (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_mib(device: torch.device) -> float | None:
    """Peak of torch's CUDA allocator on ``device`` since the reset, in MiB; None on the CPU.

    Memory a library allocates outside torch's allocator is not in it.
    """
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / _MIB


@functools.cache
def matmul_rate(device: torch.device, precision: str) -> tuple[str, float] | None:
    """``("<device> <dtype>", TFLOP/s)`` of an 8192^3 matmul on a CUDA ``device``; None on the CPU.

    The median of 10 after 3 warm-ups, measured once per device and precision. For fp32 the matmul
    uses TF32 exactly when cuDNN convolutions do (torch's default: they do), so a generator's
    "fp32" convolutions are put against the rate they could actually reach.
    """
    if device.type != "cuda":
        return None
    n, dtype = 8192, _DTYPES[precision]
    label = "tf32" if precision == "fp32" and torch.backends.cudnn.allow_tf32 else precision
    stream = torch.cuda.current_stream(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = label == "tf32"
    try:
        for _ in range(3):
            a @ b
        seconds = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            a @ b
            end.record(stream)
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return f"{device} {label}", 2 * n**3 / statistics.median(seconds) / 1e12


MIN_REPEATS = 3


def time_calls(backend: Backend, x: torch.Tensor, repeats: int,
               budget_s: float | None = None) -> list[float]:
    """Seconds of each of ``repeats`` ``backend.infer(x)`` calls.

    With ``budget_s``, calls stop early once they have taken that long in all and at least
    :data:`MIN_REPEATS` are done: a slow CPU gets fewer samples, never a crawling bench.

    On CUDA each call sits between two events recorded on the current stream after a
    synchronisation (the GPU's own clock, no host launch jitter at the end); on the CPU
    ``perf_counter`` brackets the call, which returns finished results.
    """
    seconds = []
    cuda = backend.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(backend.device)
        stream = torch.cuda.current_stream(backend.device)  # the stream infer runs on
    for _ in range(repeats):
        if budget_s is not None and len(seconds) >= MIN_REPEATS and sum(seconds) >= budget_s:
            break
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            backend.infer(x)
            end.record(stream)
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            start_s = time.perf_counter()
            backend.infer(x)
            seconds.append(time.perf_counter() - start_s)
    return seconds


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on a CUDA ``device`` (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the sorted values."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Target:
    """A backend on a device at a precision, or the reason it is not run (``reason`` set)."""

    backend: str
    device: str
    precision: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Agreement:
    """One configuration's output against the torch fp32 CPU reference, in [-1, 1] units."""

    backend: str
    device: str
    precision: str
    size: str
    batch: int
    max_abs: float
    mean_abs: float
    tolerance: str
    ok: bool


@dataclass(frozen=True)
class _Configuration:
    """Which backend x device x precision x size x batch a result is for (fields: module docs)."""

    backend: str
    device: str
    precision: str
    describe: str
    size: str
    batch: int


@dataclass(frozen=True)
class ModelResult(_Configuration):
    """Timed ``infer`` calls of one backend x precision x size x batch (fields: module docs)."""

    fps: float
    ms_per_frame_p50: float
    ms_per_frame_p95: float
    repeats: int
    build_s: float
    warmup_s: float
    peak_host_mib: float
    peak_device_mib: float | None
    gmacs_per_frame: float
    gmac_per_s: float
    matmul_share: float | None


@dataclass(frozen=True)
class E2EResult(_Configuration):
    """One pass of the whole decode -> translate -> encode pipeline (fields: module docs)."""

    frames: int
    input_frames: int
    stopped_by: str | None
    wall_s: float
    fps: float
    stage_s: dict[str, float]
    bound_by: str
    bound_share: float
    build_s: float
    peak_host_mib: float
    peak_device_mib: float | None
    streams: int


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat("T", "seconds")


@dataclass
class BenchReport:
    """Everything one ``gtacity bench`` run found; :meth:`to_json` is the ``--json`` file."""

    machine: dict[str, Any]
    versions: dict[str, str]
    settings: dict[str, Any]
    tolerances: dict[str, dict[str, float]]
    date: str = field(default_factory=_now)
    unavailable: list[Target] = field(default_factory=list)
    skipped: list[Target] = field(default_factory=list)
    agreement: list[Agreement] = field(default_factory=list)
    results: list[ModelResult] = field(default_factory=list)
    e2e: list[E2EResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every checked configuration agreed with the reference."""
        return all(a.ok for a in self.agreement)

    def disagreements(self) -> list[Agreement]:
        """The configurations that were reported but not timed because they disagreed."""
        return [a for a in self.agreement if not a.ok]

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types (the fields are in this module's docstring)."""
        return {"format": "gtacity-bench", "format_version": 2, **asdict(self), "ok": self.ok}

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path`` (indented UTF-8)."""
        write_json(path, self.to_json())

    def format(self) -> str:
        """The human-readable report: machine, versions, settings, then the tables."""
        lines = [
            f"machine   {describe_machine(self.machine)}",
            f"versions  {describe_versions(self.versions)}",
            "settings  " + ", ".join(f"{k}={_setting(v)}" for k, v in self.settings.items()),
            f"date      {self.date}",
        ]
        lines += [f"unavailable  {t.backend} on {t.device}: {t.reason}" for t in self.unavailable]
        lines += [f"skipped      {t.backend} on {t.device}: {t.reason}" for t in self.skipped]
        lines.append(self._agreement_line())
        if self.results:
            lines += ["", *_table(_MODEL_COLUMNS, [_model_row(r) for r in self.results])]
        if self.e2e:
            lines += ["", *_table(_E2E_COLUMNS, [_e2e_row(r) for r in self.e2e]), E2E_NOTE]
        return "\n".join(lines)

    def _agreement_line(self) -> str:
        if not self.agreement:
            return "agreement    nothing was checked"
        bad = self.disagreements()
        if not bad:
            return (f"agreement    all {len(self.agreement)} configurations within their "
                    "precision's tolerance of torch fp32 on the CPU")
        return "agreement    DISAGREE (not timed): " + "; ".join(map(describe_disagreement, bad))


def describe_disagreement(a: Agreement) -> str:
    """One line naming the configuration, its error and the tolerance it broke."""
    return (f"{a.backend} {a.precision} on {a.device} at {a.size} batch {a.batch}: max abs "
            f"{a.max_abs:.3g}, mean abs {a.mean_abs:.3g} (tolerance {a.tolerance})")


_MODEL_COLUMNS = ("backend", "device", "precision", "size", "batch", "frames/s", "ms p50", "ms p95",
                  "host MiB", "dev MiB", "GMAC/s", "matmul%", "build s")
E2E_NOTE = ("frames: translated / in the input (a pass stops at --frames or --seconds); stage seconds: "
            "busy, not waiting; bound busy %: the share of the run the bounding stage was working "
            "(100 = every other stage hidden behind it)")
_E2E_COLUMNS = ("backend", "device", "precision", "size", "batch", "frames", "frames/s", "decode s",
                "preproc s", "infer s", "postproc s", "encode s", "bound by", "bound busy %", "streams")


def _setting(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "default"
    return str(value)


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _model_row(r: ModelResult) -> tuple[str, ...]:
    share = None if r.matmul_share is None else 100 * r.matmul_share
    return (r.backend, r.device, r.precision, r.size, str(r.batch), f"{r.fps:.2f}",
            f"{r.ms_per_frame_p50:.1f}", f"{r.ms_per_frame_p95:.1f}", f"{r.peak_host_mib:.0f}",
            _opt(r.peak_device_mib, ".0f"), f"{r.gmac_per_s:.1f}", _opt(share, ".1f"),
            f"{r.build_s:.2f}")


def _e2e_row(r: E2EResult) -> tuple[str, ...]:
    stages = tuple(f"{r.stage_s[s]:.2f}" for s in STAGES)
    frames = f"{r.frames}/{r.input_frames}"
    return (r.backend, r.device, r.precision, r.size, str(r.batch), frames, f"{r.fps:.2f}",
            *stages, r.bound_by, f"{100 * r.bound_share:.0f}", str(r.streams))


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = fmt.format(*("-" * w for w in widths))
    return [line.rstrip() for line in (fmt.format(*columns), rule, *(fmt.format(*r) for r in rows))]
