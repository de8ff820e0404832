"""gtacity.hardware: the defaults each kind of CPU gets (pure decisions), and this machine's detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gtacity import hardware
from gtacity.engine.backends import OpenVINOBackend, TorchBackend
from gtacity.engine.measure.bench_plan import BenchConfig, plan
from gtacity.hardware import CpuCapabilities, default_precision, emulation_reason, train_amp
from gtacity.trainer.loop import _precision

OV_BASIC = frozenset({"FP32", "INT8", "BIN", "EXPORT_IMPORT"})
AVX2_ONLY = CpuCapabilities(avx2=True, torch_level="AVX2", openvino=OV_BASIC)  # AMD EPYC fam. 25 model 1
AVX512_NO_BF16 = CpuCapabilities(avx2=True, avx512f=True, avx512_vnni=True, torch_level="AVX512",
                                 openvino=OV_BASIC)  # Cascade Lake
AVX512_BF16 = CpuCapabilities(avx2=True, avx512f=True, avx512_vnni=True, avx512_bf16=True,
                              torch_level="AVX512", openvino=OV_BASIC | {"BF16"})  # Zen 4
AMX = CpuCapabilities(avx2=True, avx512f=True, avx512_vnni=True, avx512_bf16=True, amx_bf16=True,
                      amx_int8=True, avx512_fp16=True, torch_level="AVX512",
                      openvino=OV_BASIC | {"BF16", "FP16"})  # Sapphire Rapids
ALDER_LAKE = CpuCapabilities(avx2=True, avx_vnni=True, torch_level="AVX2", openvino=OV_BASIC)
NO_OPENVINO = CpuCapabilities(avx2=True, torch_level="AVX2")


@pytest.mark.parametrize(("caps", "amp", "openvino", "emulated", "vnni"), [
    (AVX2_ONLY, "off", "fp32", {"bf16", "fp16"}, False),
    (AVX512_NO_BF16, "off", "fp32", {"bf16", "fp16"}, True),
    (ALDER_LAKE, "off", "fp32", {"bf16", "fp16"}, True),
    (AVX512_BF16, "bf16", "bf16", {"fp16"}, True),
    (AMX, "bf16", "bf16", set(), True),
    (NO_OPENVINO, "off", "fp32", {"bf16", "fp16", "int8"}, False),
])
def test_each_cpu_gets_native_defaults_only(caps, amp, openvino, emulated, vnni):
    assert train_amp(caps) == amp
    assert default_precision(caps, "openvino") == openvino
    assert default_precision(caps, "torch") == "fp32"  # the reference, on every CPU
    assert {p for p in ("fp32", "bf16", "fp16", "int8") if emulation_reason(caps, p)} == emulated
    assert caps.vnni is vnni
    # no default ever lands on an emulated precision
    assert emulation_reason(caps, default_precision(caps, "openvino")) is None
    assert amp == "off" or emulation_reason(caps, amp) is None


def test_emulation_reasons_name_the_missing_instructions():
    assert "AVX512-BF16" in emulation_reason(AVX2_ONLY, "bf16")
    assert "AVX512-FP16" in emulation_reason(AVX512_BF16, "fp16")
    assert AVX2_ONLY.describe() == "AVX2; native: fp32, int8 (no VNNI); emulated: bf16, fp16"
    assert AMX.describe() == "AVX512; native: fp32, bf16, fp16, int8"


def test_reports_are_combined_flags_first_then_torch_probes():
    flags = hardware.parse_cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nflags : x\n")
    assert flags == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    caps = hardware.from_reports(flags, "AVX512", frozenset({"FP32", "BF16"}))
    assert caps.native_bf16 and caps.avx512f and not caps.vnni
    # no /proc/cpuinfo (macOS, Windows): torch's probes stand in; the dispatch level implies AVX2
    probed = hardware.from_reports(frozenset(), "AVX2", frozenset(), {"amx_bf16": True, "avx2": False})
    assert probed.amx_bf16 and probed.avx2 and probed.native_bf16
    assert hardware.parse_cpu_flags("no flags here") == frozenset()


def test_this_machines_detection_agrees_with_every_report():
    caps = hardware.cpu_capabilities()
    assert caps.torch_level == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = hardware.parse_cpu_flags(cpuinfo.read_text())
        assert caps.avx512_bf16 == ("avx512_bf16" in flags)
        assert caps.amx_bf16 == ("amx_bf16" in flags)
        assert caps.avx2 == ("avx2" in flags or caps.torch_level in ("AVX2", "AVX512"))
    if caps.torch_level == "AVX512":
        assert caps.avx512f
    # torch's own probe agrees on bf16
    assert caps.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()
    openvino = pytest.importorskip("openvino")
    assert caps.openvino == set(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def test_defaults_here_follow_the_decisions():
    caps = hardware.cpu_capabilities()
    cpu = torch.device("cpu")
    prec = _precision("auto", cpu)
    assert (prec.dtype == torch.bfloat16) is caps.native_bf16
    assert prec.dtype in (None, torch.bfloat16) and prec.scaler is None
    assert OpenVINOBackend.resolve_precision(cpu, "auto") == default_precision(caps, "openvino")
    assert TorchBackend.resolve_precision(cpu, "auto") == "fp32"


def test_bench_lists_emulated_precisions_and_times_them_only_by_name():
    caps = hardware.cpu_capabilities()
    runnable, _, skipped = plan(BenchConfig(backends=("torch",), device="cpu", precisions=("auto", "reduced")))
    timed = [t.precision for t in runnable]
    if caps.native_bf16:
        assert timed == ["fp32", "bf16"]
    else:
        assert timed == ["fp32"]
        [skip] = skipped
        assert skip.precision == "bf16"
        assert skip.reason.startswith("bf16 emulated here: slow, not timed (no AVX512-BF16")
        assert skip.reason.endswith("--precision bf16 times it")
    named, _, _ = plan(BenchConfig(backends=("torch",), device="cpu", precisions=("bf16",)))
    assert [t.precision for t in named] == ["bf16"]
