"""The Triton kernels against their torch references, and the colour kernels against the CPU path.

On a CUDA machine the kernels are compiled and run on the GPU. Everywhere else they run under
Triton's interpreter (``TRITON_INTERPRET=1``, on numpy), which is fixed when a function is
decorated: tests/conftest.py sets it before any test imports Triton. Interpreted programs are
slow, so the shapes stay small; every odd/even side, batch 1 and 5, padding of 0-3, a second
column tile, and strided inputs are covered.

Tolerances: every result is exact. The uint8 and YUV results by construction (integer arithmetic);
the float model inputs because the kernel rounds ``(2x - 255) / 255`` once with IEEE division and
rounds to bfloat16 on the bits, as torch does.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from kernel_cases import cpu_decode, cpu_encode, level_errors, real_frames, synthetic_frames, to_nv12

from gtacity.kernels import common, layout, yuv

triton = pytest.importorskip("triton", reason="Triton is not installed (Linux only)")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# (N, H, W): odd and even sides, pads of 0-3, batch 1 and 5, a width past one 128-column tile.
SHAPES = ((1, 37, 45), (5, 9, 14), (1, 6, 130), (5, 3, 7), (1, 4, 4))
_MODULES = ("gtacity.kernels._triton_layout", "gtacity.kernels._triton_yuv")


@pytest.fixture(scope="module")
def kernels():
    """The Triton kernel modules: compiled on CUDA, interpreted on a CPU (tests/conftest.py sets
    ``TRITON_INTERPRET=1`` before anything imports Triton)."""
    modules = [importlib.import_module(m) for m in _MODULES]
    if DEVICE == "cpu" and not triton.knobs.runtime.interpret:
        pytest.fail("no CUDA and TRITON_INTERPRET is not 1: the kernels cannot run on this machine")
    return modules


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bytes(shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=_seeded(seed))


def _on_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_to_model_input_equals_reference(kernels, shape):
    triton_layout, _ = kernels
    pixels = _bytes((*shape, 3), seed=sum(shape))
    for dtype in DTYPES:
        got = triton_layout.to_model_input(*_on_device(pixels), dtype=dtype, multiple=4)
        want = layout.to_model_input_reference(pixels, dtype=dtype, multiple=4)
        padded = (shape[0], 3, common.padded(shape[1], 4), common.padded(shape[2], 4))
        assert got.shape == want.shape == padded
        assert got.dtype == dtype and got.is_contiguous()
        assert torch.equal(got.cpu(), want), dtype


def test_to_model_input_reads_strided_pixels(kernels):
    """A transposed crop of a larger batch is a view, read in place without a copy."""
    triton_layout, _ = kernels
    frames = _bytes((2, 20, 12, 3), seed=1)
    view = frames[:, 3:17, 1:10].transpose(1, 2)  # (2, 9, 14, 3), no unit stride but channels
    got = triton_layout.to_model_input(*_on_device(view), dtype=torch.float32, multiple=4)
    assert torch.equal(got.cpu(), layout.to_model_input_reference(view, multiple=4))


def _model_values(shape, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Model outputs past [-1, 1] both ways, every half level, two exact float32 ties (128.5 and
    130.5 levels), and NaN / +-inf."""
    n, h, w = shape
    y = torch.randn((n, 3, h, w), generator=_seeded(seed)) * 1.2
    flat = y.view(-1)
    ties = torch.arange(511, dtype=torch.float32) / 255 - 1  # (k + 0.5) / 127.5 - 1 and whole ones
    flat[: min(511, flat.numel())] = ties[: flat.numel()]
    flat[-5:] = torch.tensor([1 / 127.5, 3 / 127.5, float("nan"), float("inf"), -float("inf")])
    return y.to(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_from_model_output_equals_reference(kernels, shape):
    triton_layout, _ = kernels
    n, h, w = shape
    for dtype in DTYPES:
        y = _model_values((n, h + 3, w + 2), dtype, seed=h * w)
        got = triton_layout.from_model_output(*_on_device(y), h, w)
        want = layout.from_model_output_reference(y, h, w)
        assert got.shape == (n, h, w, 3) and got.dtype == torch.uint8
        assert torch.equal(got.cpu(), want), dtype


# (N, H, W, matrix, full range, dtype): every matrix/range/dtype, odd sides, batch 1 and 5.
YUV_CASES = (
    (1, 36, 46, "bt709", False, torch.float32),
    (5, 7, 13, "bt601", True, torch.float16),
    (2, 6, 4, "bt709", True, torch.bfloat16),
    (1, 10, 134, "bt601", False, torch.float16),
)


@pytest.mark.parametrize("chroma_left", (False, True), ids=("centred", "left"))
@pytest.mark.parametrize("case", YUV_CASES, ids=lambda c: "x".join(map(str, c[:3])) + f"-{c[3]}")
def test_yuv420p_to_model_input_equals_reference(kernels, case, chroma_left):
    _, triton_yuv = kernels
    n, h, w, matrix, full_range, dtype = case
    chroma = (n, (h + 1) // 2, (w + 1) // 2)
    y, u, v = _bytes((n, h, w), 1), _bytes(chroma, 2), _bytes(chroma, 3)
    k = common.YuvCoefficients.of(matrix, full_range)
    got = triton_yuv.yuv420_to_model_input(*_on_device(y, u, v), k, dtype, 4, chroma_left)
    want = yuv.yuv420p_to_model_input(
        y, u, v, matrix=matrix, full_range=full_range, dtype=dtype, chroma_left=chroma_left
    )
    assert got.shape == want.shape and torch.equal(got.cpu(), want)


def test_nv12_reads_interleaved_chroma(kernels):
    """NV12's UV plane goes in as two strided views: the same result as separate planes."""
    _, triton_yuv = kernels
    y, uv = _bytes((2, 10, 12), 4), _bytes((2, 5, 6, 2), 5)
    k = common.YuvCoefficients.of("bt709", False)
    y_d, uv_d = _on_device(y, uv)
    got = triton_yuv.yuv420_to_model_input(y_d, uv_d[..., 0], uv_d[..., 1], k, torch.float32, 4)
    want = yuv.nv12_to_model_input(y, uv, matrix="bt709", full_range=False)
    assert torch.equal(got.cpu(), want)
    separate = yuv.yuv420p_to_model_input(
        y, uv[..., 0].contiguous(), uv[..., 1].contiguous(), matrix="bt709", full_range=False
    )
    assert torch.equal(want, separate)


@pytest.mark.parametrize(
    "case",
    ((1, 36, 46, "bt709", False), (5, 8, 14, "bt601", True), (2, 6, 260, "bt601", False)),
    ids=lambda c: "x".join(map(str, c[:3])) + f"-{c[3]}",
)
def test_model_output_to_yuv420p_equals_reference(kernels, case):
    _, triton_yuv = kernels
    n, h, w, matrix, full_range = case
    out = _model_values((n, h + 2, w + 3), torch.float16, seed=w)
    k = common.YuvCoefficients.of(matrix, full_range)
    got = triton_yuv.model_output_to_yuv420(*_on_device(out), h, w, k)
    want = yuv.model_output_to_yuv420p(out, h, w, matrix=matrix, full_range=full_range)
    assert got.shape == (n, h * 3 // 2, w) and torch.equal(got.cpu(), want)


def _check_against_cpu_path(triton_yuv, frames: dict) -> None:
    """Decode and encode each frame with the kernels and with engine/colour.py (swscale): at most
    1 level apart anywhere, 0.05 on average (the full-frame numbers are in benchmarks/RESULTS.md,
    from benchmarks/kernels_colour.py)."""
    for name, rgb in frames.items():
        h, w = rgb.shape[:2]
        for matrix, full_range in (("bt709", False), ("bt601", True)):
            k = common.YuvCoefficients.of(matrix, full_range)
            planes = cpu_encode(rgb, matrix, full_range)
            y, u, v = yuv.split_yuv420p(torch.from_numpy(planes)[None])
            x = triton_yuv.yuv420_to_model_input(*_on_device(y, u, v), k, torch.float32, 4)
            decoded = layout.from_model_output_reference(x.cpu(), h, w)[0].numpy()
            worst, mean = level_errors(decoded, cpu_decode(planes, matrix, full_range))
            assert worst <= 1 and mean <= 0.05, (name, matrix, "decode", worst, mean)
            model = layout.to_model_input_reference(torch.from_numpy(rgb)[None])
            encoded = triton_yuv.model_output_to_yuv420(*_on_device(model), h, w, k)
            worst, mean = level_errors(encoded.cpu()[0].numpy(), planes)
            assert worst <= 1 and mean <= 0.05, (name, matrix, "encode", worst, mean)


def test_colour_kernels_match_the_cpu_path_on_synthetic_frames(kernels):
    _check_against_cpu_path(kernels[1], synthetic_frames(64, 12))


def test_colour_kernels_match_the_cpu_path_on_real_frames(kernels):
    """Centre crops of a real GTA5 and a real Cityscapes frame."""
    frames = real_frames(crop=(12, 128))
    if not frames:
        pytest.skip("no real frames (shared/data/real); the synthetic-frame test still ran")
    _check_against_cpu_path(kernels[1], frames)


def test_nv12_from_a_real_decoder_layout(kernels):
    """PyAV's NV12 array (luma rows, then interleaved UV rows) through the kernel == swscale."""
    _, triton_yuv = kernels
    rgb = np.ascontiguousarray(np.random.default_rng(7).integers(0, 256, (8, 24, 3), np.uint8))
    nv12 = to_nv12(cpu_encode(rgb, "bt601", False))
    packed = torch.from_numpy(nv12)[None]
    y, uv = packed[:, :8], packed[:, 8:].reshape(1, 4, 12, 2)
    k = common.YuvCoefficients.of("bt601", False)
    y_d, uv_d = _on_device(y, uv)
    x = triton_yuv.yuv420_to_model_input(y_d, uv_d[..., 0], uv_d[..., 1], k, torch.float32, 4)
    decoded = layout.from_model_output_reference(x.cpu(), 8, 24)[0].numpy()
    assert level_errors(decoded, cpu_decode(nv12, "bt601", False, pix_fmt="nv12"))[0] <= 1


# Compiles each kernel the way a GPU run would (Triton -> PTX -> cubin with the ptxas Triton ships),
# for an H100 (sm_90): catches what only the compiler rejects, on a machine without a GPU.
_COMPILE_SCRIPT = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from gtacity.kernels import _triton_layout as L, _triton_yuv as Y

POINTERS = {"src", "dst", "y_ptr", "u_ptr", "v_ptr"}
blocks = {"BLOCK_H": L.BLOCK_H, "BLOCK_W": L.BLOCK_W}
cases = [
    (L._to_model_input_kernel, {"src": "*u8", "dst": "*i16"}, {**blocks, "BF16_BITS": True}),
    (L._from_model_output_kernel, {"src": "*fp16", "dst": "*u8"}, blocks),
    *((Y._yuv420_to_model_input_kernel, {"y_ptr": "*u8", "u_ptr": "*u8", "v_ptr": "*u8",
       "dst": "*fp16"}, {**blocks, "SHIFT": 16, "BF16_BITS": False, "CHROMA_LEFT": left})
      for left in (False, True)),
    (Y._model_output_to_yuv420_kernel, {"src": "*fp32", "dst": "*u8"}, {**blocks, "SHIFT": 16}),
]
for kernel, pointers, constexprs in cases:
    signature = {
        name: "constexpr" if name in constexprs else pointers.get(name, "i32")
        for name in kernel.arg_names
    }
    assert set(pointers) == POINTERS & set(kernel.arg_names), kernel
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": L.NUM_WARPS},
    )
    assert compiled.asm["cubin"], kernel
    print(kernel.__name__, "compiled", len(compiled.asm["cubin"]), "bytes of sm_90 code")
"""


@pytest.mark.skipif(DEVICE == "cuda", reason="on a GPU the tests above run the compiled kernels")
def test_kernels_compile_for_a_cuda_gpu(tmp_path):
    """The interpreter runs Python, not the compiler: compile every kernel for sm_90 here, in a
    process without TRITON_INTERPRET, so a kernel only a GPU could reject fails on any CI."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled") == 5, run.stdout
