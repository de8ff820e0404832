"""What this CPU does natively, read in one place, and the defaults that follow from it.

::

    from gtacity import hardware
    caps = hardware.cpu_capabilities()           # detected once per process
    hardware.train_amp(caps)                     # "bf16" where native, else "off" (fp32)
    hardware.default_precision(caps, "openvino") # "bf16" where native, else "fp32"
    hardware.emulation_reason(caps, "bf16")      # None where native, else why it is slow here

Detection combines three reports, because none is complete alone: torch's dispatch level
(``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512), the CPU flags the kernel
lists in ``/proc/cpuinfo`` (Linux; on other systems torch's own probes stand in), and OpenVINO's
``OPTIMIZATION_CAPABILITIES`` (FP32, BF16, FP16, INT8). The decisions are pure functions of the
resulting :class:`CpuCapabilities`, so each capability set is testable on any machine.

Why it matters: on a CPU without AVX512-BF16 or AMX, bf16 is emulated in software. On a 2-core AMD
EPYC with AVX2 only, eager bf16 convolutions ran 17-23x slower than fp32 and a bf16 training step
17x slower; a default that picks bf16 there is a trap.
"""

from __future__ import annotations

import functools
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import torch

# /proc/cpuinfo flag -> CpuCapabilities field.
_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "avx512_fp16": "avx512_fp16",
    "amx_fp16": "amx_fp16",
}
REDUCED = ("bf16", "fp16", "int8")


@dataclass(frozen=True)
class CpuCapabilities:
    """The instruction sets that decide which precisions run fast on this CPU.

    Attributes:
        avx2 .. amx_fp16: the CPU has that extension (as the kernel, torch or OpenVINO report it).
        torch_level: torch's vectorised-kernel level, e.g. ``"AVX2"``, ``"AVX512"``, ``"DEFAULT"``.
        openvino: OpenVINO's optimisation capabilities for the CPU (empty without OpenVINO).
    """

    avx2: bool = False
    avx512f: bool = False
    avx512_bf16: bool = False
    avx512_vnni: bool = False
    avx_vnni: bool = False
    amx_bf16: bool = False
    amx_int8: bool = False
    avx512_fp16: bool = False
    amx_fp16: bool = False
    torch_level: str = "DEFAULT"
    openvino: frozenset[str] = frozenset()

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware: AVX512-BF16 dot products or AMX-BF16 tiles."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def native_fp16(self) -> bool:
        """fp16 arithmetic in hardware: AVX512-FP16 or AMX-FP16."""
        return self.avx512_fp16 or self.amx_fp16

    @property
    def vnni(self) -> bool:
        """int8 dot products in one instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return self.avx512_vnni or self.avx_vnni or self.amx_int8

    def describe(self) -> str:
        """E.g. ``"AVX2; native: fp32, int8 (no VNNI); emulated: bf16, fp16"``."""
        native = ["fp32"] + [p for p in REDUCED if emulation_reason(self, p) is None]
        emulated = [p for p in REDUCED if emulation_reason(self, p) is not None]
        if "int8" in native and not self.vnni:
            native[native.index("int8")] = "int8 (no VNNI)"
        text = f"{self.torch_level}; native: {', '.join(native)}"
        return text + (f"; emulated: {', '.join(emulated)}" if emulated else "")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor in a ``/proc/cpuinfo`` text (empty if it lists none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def from_reports(flags: frozenset[str], torch_level: str, openvino: frozenset[str],
                 torch_probes: dict[str, bool] | None = None) -> CpuCapabilities:
    """Capabilities from the raw reports (pure; :func:`cpu_capabilities` gathers them here).

    Args:
        flags: ``/proc/cpuinfo`` flags; empty where the system has no such file.
        torch_level: ``torch.backends.cpu.get_cpu_capability()``.
        openvino: OpenVINO's ``OPTIMIZATION_CAPABILITIES`` for the CPU.
        torch_probes: field -> bool from torch's own CPU probes, used where ``flags`` is empty.
    """
    values = {field: flag in flags for flag, field in _FLAGS.items()}
    if not flags and torch_probes:
        values.update({k: v for k, v in torch_probes.items() if k in values})
    values["avx2"] = values["avx2"] or torch_level in ("AVX2", "AVX512")
    values["avx512f"] = values["avx512f"] or torch_level == "AVX512"
    return CpuCapabilities(**values, torch_level=torch_level, openvino=openvino)


@functools.cache
def cpu_capabilities() -> CpuCapabilities:
    """This machine's capabilities (detected once per process)."""
    try:
        flags = parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        flags = frozenset()
    return from_reports(flags, torch.backends.cpu.get_cpu_capability(), _openvino_capabilities(),
                        _torch_probes())


def _torch_probes() -> dict[str, bool]:
    """torch's cpuinfo-based probes (private API, hence each one optional)."""
    probes = {"avx2": "_is_avx2_supported", "avx512f": "_is_avx512_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported",
              "amx_int8": "_is_amx_tile_supported", "amx_fp16": "_is_amx_fp16_supported",
              "avx512_vnni": "_is_vnni_supported"}
    found = {}
    for field, name in probes.items():
        probe = getattr(torch.cpu, name, None)
        if probe is not None:
            found[field] = bool(probe())
    return found


def _openvino_capabilities() -> frozenset[str]:
    try:
        import openvino as ov
    except ImportError:
        return frozenset()
    try:
        return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return frozenset()


def emulation_reason(caps: CpuCapabilities, precision: str) -> str | None:
    """None if ``precision`` runs natively on this CPU, else one line saying why it is slow here.

    fp32 is always native. int8 counts as native wherever OpenVINO runs it (AVX2's integer dot
    products already beat fp32: 2x on an AVX2-only EPYC); VNNI and AMX make it faster still.
    """
    if precision == "fp32":
        return None
    if precision == "bf16" and not caps.native_bf16:
        return "no AVX512-BF16 or AMX-BF16 on this CPU: bf16 is emulated (17-23x slower than fp32 on AVX2)"
    if precision == "fp16" and not caps.native_fp16:
        return "no AVX512-FP16 or AMX-FP16 on this CPU: fp16 is emulated"
    if precision == "int8" and "INT8" not in caps.openvino:
        return "OpenVINO reports no INT8 support on this CPU"
    return None


def train_amp(caps: CpuCapabilities) -> str:
    """``--amp auto`` for CPU training: ``"bf16"`` where native, else ``"off"`` (fp32)."""
    return "bf16" if caps.native_bf16 else "off"


def default_precision(caps: CpuCapabilities, backend: str) -> str:
    """``--precision auto`` of a CPU backend.

    openvino: bf16 where native (2.3-2.6x eager torch fp32 on AVX512-BF16), else fp32. torch: fp32
    always, because it is the reference every other backend is checked against.
    """
    if backend == "openvino" and caps.native_bf16 and "BF16" in caps.openvino:
        return "bf16"
    return "fp32"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a Slurm or container CPU limit shows
    here, where ``os.cpu_count()`` would report the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_memory() -> int:
    """Bytes this process can still allocate: the least of the memory the kernel reports available,
    what its cgroup (a container's or Slurm job's limit) leaves, and what its address-space limit
    (``ulimit -v``) leaves."""
    available = _proc_kib("/proc/meminfo", "MemAvailable:")
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    found = [available, _cgroup_headroom()]
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        found.append(limit - (_proc_kib("/proc/self/status", "VmSize:") or 0))
    return max(0, min(v for v in found if v is not None))


def _proc_kib(path: str, field: str) -> int | None:
    """A ``FIELD: N kB`` line of a /proc file, in bytes (None where there is no such file)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_headroom() -> int | None:
    """cgroup v2's ``memory.max`` minus ``memory.current`` for this process's group, if limited."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("\n")[0].split(":", 2)[2]
        folder = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None
