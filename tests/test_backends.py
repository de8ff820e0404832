"""Inference backends: openvino and torch agree, shapes survive, shapes are cached, errors say why.

Tolerances were measured on the tiny random generators (ngf 8, 2 blocks, seeds 0-3, 32-128 px,
random inputs in [-1, 1]) against eager torch fp32:

    openvino fp32   max abs 1.3e-6
    openvino bf16   max abs 0.029, mean abs 0.0037
    torch bf16      max abs 0.020, mean abs 0.0029

(the full ngf 64, 9-block generator at 256x256: openvino bf16 max 0.078, mean 0.0087). The bf16
bounds below leave a 2x margin; 0.06 is under 8 of 255 grey levels. The CUDA fp16 bounds could not
be measured (no GPU where this was written): fp16 keeps 3 more mantissa bits than bf16, so they are
the bf16 ones divided by 3, still several times the expected error.
"""

from __future__ import annotations

import copy

import pytest
import torch

from gtacity.engine.backends import (
    BACKENDS,
    BackendError,
    OpenVINOBackend,
    TorchBackend,
    auto_order,
    available_backends,
    backend_class,
    create_backend,
)

FP32_MAX = 1e-4
BF16_MAX, BF16_MEAN = 0.06, 0.01
FP16_MAX, FP16_MEAN = 0.02, 0.003
# (max_batch, height, width, the batch sizes run at that shape: a full one and short last ones)
SHAPES = [(4, 32, 32, (4, 1)), (3, 64, 96, (3, 2)), (2, 128, 128, (2, 1)), (1, 40, 72, (1,))]


def frames(n: int, height: int, width: int, device: str = "cpu", seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, height, width, generator=generator) * 2 - 1).to(device)


def reference(net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(batch.cpu())


def openvino_precisions() -> tuple[str, ...]:
    return OpenVINOBackend.supported_precisions(torch.device("cpu"))


def nchw_view_of_nhwc(batch: torch.Tensor) -> torch.Tensor:
    """The same frames as a non-contiguous view, the way a pipeline sees decoded NHWC frames."""
    return batch.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def test_openvino_fp32_matches_torch_at_every_shape_and_batch(tiny_generator):
    backends = [create_backend(name, tiny_generator, precision="fp32") for name in ("openvino", "torch")]
    for max_batch, height, width, batch_sizes in SHAPES:
        for backend in backends:
            backend.prepare(max_batch, height, width)
        for n in batch_sizes:
            x = frames(n, height, width)
            if n == 1:
                x = nchw_view_of_nhwc(x)
            out_ov, out_torch = (backend.infer(x) for backend in backends)
            assert out_ov.shape == out_torch.shape == x.shape
            assert out_ov.dtype == out_torch.dtype == torch.float32
            assert (out_ov - out_torch).abs().max().item() < FP32_MAX
    assert backends[0].precision == "fp32"


@pytest.mark.parametrize("name", ["openvino", "torch"])
def test_bf16_stays_close_to_fp32(tiny_generator, name):
    if name == "openvino" and "bf16" not in openvino_precisions():
        pytest.skip("this CPU has no bf16 for OpenVINO")
    backend = create_backend(name, tiny_generator, precision="bf16")
    backend.prepare(3, 64, 96)
    x = frames(3, 64, 96)
    error = (backend.infer(x) - reference(tiny_generator, x)).abs()
    assert backend.precision == "bf16"
    assert error.max().item() < BF16_MAX and error.mean().item() < BF16_MEAN
    assert next(tiny_generator.parameters()).dtype == torch.float32, "the caller's net was modified"


def test_auto_picks_openvino_on_cpu_with_its_default_precision(tiny_generator):
    backend = create_backend("auto", tiny_generator, device="cpu")
    assert isinstance(backend, OpenVINOBackend) and backend.name == "openvino"
    assert backend.device == torch.device("cpu")
    expected = "bf16" if "bf16" in openvino_precisions() else "fp32"
    assert backend.precision == expected
    backend.prepare(2, 32, 32)
    assert backend.precision == expected, "the compiled model reports another precision"
    out = backend.infer(torch.stack([torch.full((3, 32, 32), -1.0), torch.full((3, 32, 32), 1.0)]))
    assert out.abs().max().item() <= 1.0 and torch.isfinite(out).all()
    assert backend.describe().startswith("openvino ") and f"CPU, {expected}" in backend.describe()


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means CUDA where there is one")
def test_auto_device_without_cuda_is_openvino_and_torch_defaults_to_cpu_fp32(tiny_generator):
    assert backend_class("auto") is OpenVINOBackend
    backend = create_backend("torch", tiny_generator)
    assert (backend.device, backend.precision) == (torch.device("cpu"), "fp32")
    assert backend.describe().endswith("CPU, fp32")


def test_reprepare_builds_each_shape_once(tiny_generator):
    backend = create_backend("openvino", tiny_generator, precision="fp32")
    backend.prepare(2, 32, 32)
    backend.prepare(2, 64, 48)
    assert backend.builds == 2
    backend.prepare(2, 32, 32)
    backend.prepare(1, 64, 48)
    assert backend.builds == 2, "a shape prepared before was built again"
    for height, width in ((64, 48), (32, 32)):
        x = frames(2, height, width)
        assert (backend.infer(x) - reference(tiny_generator, x)).abs().max().item() < FP32_MAX
    backend.prepare(4, 32, 32)
    assert backend.builds == 3, "a larger max_batch must rebuild"
    assert backend.infer(frames(4, 32, 32)).shape == (4, 3, 32, 32)


def test_throughput_hint_splits_a_batch_and_still_agrees(tiny_generator):
    backend = create_backend("openvino", tiny_generator, precision="fp32", performance_hint="THROUGHPUT")
    backend.prepare(4, 32, 64)
    for n in (4, 3, 1):
        x = frames(n, 32, 64)
        out = backend.infer(x)
        assert out.shape == x.shape
        assert (out - reference(tiny_generator, x)).abs().max().item() < FP32_MAX
    assert "THROUGHPUT" in backend.describe()


def test_infer_rejects_unprepared_shapes_and_wrong_batches(tiny_generator):
    backend = create_backend("torch", tiny_generator)
    backend.prepare(2, 32, 32)
    with pytest.raises(ValueError, match=r"call prepare\(2, 32, 64\) first"):
        backend.infer(frames(2, 32, 64))
    with pytest.raises(ValueError, match=r"call prepare\(3, 32, 32\) first"):
        backend.infer(frames(3, 32, 32))
    with pytest.raises(ValueError, match="float32 on cpu, got torch.float16"):
        backend.infer(frames(2, 32, 32).half())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) tensor, got \(3, 32, 32\)"):
        backend.infer(frames(1, 32, 32)[0])


@pytest.mark.parametrize("size", [(30, 32), (32, 30), (4, 32)])
def test_prepare_rejects_sizes_the_pipeline_must_pad(tiny_generator, size):
    backend = create_backend("torch", tiny_generator)
    with pytest.raises(ValueError, match="multiple of 4 and at least 8"):
        backend.prepare(1, *size)


def test_unsupported_precision_says_what_is_supported(tiny_generator):
    message = "^the torch backend supports fp32, bf16 on cpu here, not fp16$"
    with pytest.raises(BackendError, match=message):
        create_backend("torch", tiny_generator, precision="fp16", device="cpu")
    if "fp16" not in openvino_precisions():
        supported = ", ".join(openvino_precisions())
        message = f"^the openvino backend supports {supported} on cpu here, not fp16$"
        with pytest.raises(BackendError, match=message):
            create_backend("openvino", tiny_generator, precision="fp16")
    with pytest.raises(BackendError, match="unknown precision 'int4'; use auto, fp32, fp16, bf16, int8"):
        create_backend("torch", tiny_generator, precision="int4")
    with pytest.raises(BackendError, match="^the torch backend supports fp32, bf16 on cpu here, not int8$"):
        create_backend("torch", tiny_generator, precision="int8")


def test_bad_names_devices_and_options_raise_backend_errors(tiny_generator):
    with pytest.raises(BackendError, match="unknown backend 'trt9'; choose from auto, torch, openvino"):
        create_backend("trt9", tiny_generator)
    with pytest.raises(BackendError, match="the openvino backend runs on cpu, not cuda"):
        create_backend("openvino", tiny_generator, device="cuda")
    with pytest.raises(BackendError, match="unknown device 'gpu'"):
        create_backend("torch", tiny_generator, device="gpu")
    with pytest.raises(BackendError, match="option.s. streams; it takes performance_hint, num_threads"):
        create_backend("openvino", tiny_generator, streams=2)
    with pytest.raises(BackendError, match="performance_hint must be one of LATENCY, THROUGHPUT"):
        create_backend("openvino", tiny_generator, performance_hint="FAST")


def test_available_backends_reports_every_backend_and_reasons():
    available = available_backends()
    assert list(available) == list(BACKENDS) == ["torch", "openvino", "tensorrt"]
    assert available["torch"] is None and available["openvino"] is None  # installed for the tests
    # TensorRT cannot be installed everywhere: where it is missing, the reason says how to get it
    assert available["tensorrt"] is None or 'pip install "gtacity[tensorrt]"' in available["tensorrt"]
    if not torch.cuda.is_available():
        assert TorchBackend.unavailable_reason(torch.device("cuda")) == "CUDA not available"
        with pytest.raises(BackendError, match="cannot run on cuda: CUDA not available"):
            create_backend("torch", torch.nn.Identity(), device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 0.02), (torch.bfloat16, 0.08)])
def test_instance_norm_in_half_precision_on_cuda_keeps_the_statistics_of_a_1080p_map(dtype, tolerance):
    # On CUDA the norm runs on the half-precision tensor itself (no fp32 copy): the kernel must still
    # accumulate in fp32. A 1080p map with mean 200 and spread 60: its sum of squares is ~1e11, far
    # past fp16's 65504, so a half-precision reduction would give inf or NaN, not a normalised map.
    from gtacity.nets import InstanceNorm2dFP32

    generator = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 4, 1080, 1920, device="cuda", generator=generator) * 60 + 200
    expected = torch.nn.functional.instance_norm(x, eps=1e-5)
    got = InstanceNorm2dFP32(4)(x.to(dtype))
    assert got.dtype == dtype
    assert (got.float() - expected).abs().max().item() < tolerance


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torch_cuda_reduced_precision_matches_fp32(tiny_generator, precision):
    if precision not in TorchBackend.supported_precisions(torch.device("cuda")):
        pytest.skip(f"this GPU has no {precision}")
    backend = create_backend("torch", tiny_generator, precision=precision, device="cuda")
    assert backend.device.type == "cuda" and not backend.channels_last
    backend.prepare(4, 64, 96)
    x = frames(3, 64, 96, device="cuda")
    out = backend.infer(x)
    assert out.shape == x.shape and out.dtype == torch.float32 and out.device == backend.device
    error = (out.cpu() - reference(tiny_generator, x)).abs()
    max_abs, mean_abs = (FP16_MAX, FP16_MEAN) if precision == "fp16" else (BF16_MAX, BF16_MEAN)
    assert error.max().item() < max_abs and error.mean().item() < mean_abs


@pytest.mark.cuda
def test_auto_on_cuda_is_torch_fp16_and_keeps_shapes(tiny_generator):
    backend = create_backend("auto", tiny_generator)
    assert isinstance(backend, TorchBackend)
    assert (backend.device.type, backend.precision) == ("cuda", "fp16")
    assert "CUDA (" in backend.describe()
    for max_batch, height, width, batch_sizes in SHAPES:
        backend.prepare(max_batch, height, width)
        for n in batch_sizes:
            x = frames(n, height, width, device="cuda")
            assert backend.infer(x).shape == x.shape
    assert backend.builds == len(SHAPES)


def test_openvino_conversion_is_cached_by_weights(tiny_generator, tmp_path):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    outputs = []
    for expect_cached in (False, True):
        backend = create_backend("openvino", tiny_generator, precision="fp32", cache_dir=str(tmp_path))
        assert backend.from_cache is expect_cached
        backend.prepare(1, 32, 32)
        outputs.append(backend.infer(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert [p.name for p in (tmp_path / "openvino").iterdir() if "partial" in p.name] == []
    changed = copy.deepcopy(tiny_generator)
    with torch.no_grad():
        changed.model[1].bias += 0.5  # other weights: another entry, never the cached model
    other = create_backend("openvino", changed, precision="fp32", cache_dir=str(tmp_path))
    assert other.from_cache is False and len(list((tmp_path / "openvino").iterdir())) == 2
    assert create_backend("openvino", changed, precision="fp32", cache_dir="").from_cache is False


class EngineOnlyBackend(TorchBackend):
    """Stands in for a GPU-only backend that is not installed (tensorrt on a machine without it)."""

    name = "engine-only"
    precisions = {"cuda": ("fp16",)}
    auto_rank = {"cuda": 20}

    @classmethod
    def unavailable_reason(cls, device=None):
        return "not installed here"


def test_auto_order_is_gpu_backends_by_rank_then_cpu_backends_by_rank(monkeypatch):
    monkeypatch.setitem(BACKENDS, EngineOnlyBackend.name, EngineOnlyBackend)
    order = [(cls.name, device) for cls, device in auto_order()]
    assert order == [("tensorrt", "cuda"), ("engine-only", "cuda"), ("torch", "cuda"), ("openvino", "cpu"),
                     ("torch", "cpu")]  # equal ranks keep registration order
    assert [(cls.name, d) for cls, d in auto_order("cpu")] == [("openvino", "cpu"), ("torch", "cpu")]
    assert [cls.name for cls, _ in auto_order("cuda:1")] == ["tensorrt", "engine-only", "torch"]
    with pytest.raises(BackendError, match="unknown device 'gpu'"):
        auto_order("gpu")
    if not torch.cuda.is_available():
        assert backend_class("auto") is OpenVINOBackend  # both CUDA ones unavailable: next in line
        with pytest.raises(BackendError, match="engine-only on cuda: not installed here; torch on cuda: "
                                               "CUDA not available"):
            backend_class("auto", "cuda")


def test_torch_cuda_options_are_checked_and_described(tiny_generator):
    with pytest.raises(BackendError, match="torch compile must be one of default, max-autotune-no-cudagraphs"):
        create_backend("torch", tiny_generator, compile="reduce-overhead")
    backend = create_backend("torch", tiny_generator, device="cpu", cuda_graphs=True)
    assert not backend.cuda_graphs and "CUDA graphs" not in backend.describe()  # CUDA only


def test_openvino_runs_each_instance_norm_as_one_fused_mvn(tiny_generator):
    """The conversion spells InstanceNorm so OpenVINO fuses it: one MVN per norm, no reductions left."""
    import openvino as ov

    from gtacity.engine.exporters.openvino import to_openvino

    model = to_openvino(tiny_generator)
    model.reshape([1, 3, 32, 32])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    norms = sum(isinstance(m, torch.nn.InstanceNorm2d) for m in tiny_generator.modules())
    assert norms > 0 and layers.count("MVN") == norms
    assert "Reduce" not in layers  # torch.export's own lowering runs as 2 Reduce layers per norm
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in tiny_generator.modules())  # caller's net untouched
