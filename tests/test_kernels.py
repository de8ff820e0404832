"""gtacity.kernels on any device: what the references compute (the kernels equal them exactly, see
test_kernels_triton.py), how bad input is refused, and the colour against the CPU path (swscale).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_cases import cpu_decode, cpu_encode, level_errors, synthetic_frames, to_nv12

from gtacity import kernels

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_to_model_input_scales_and_reflect_pads(dtype):
    pixels = _frames(2, 5, 7)
    x = kernels.to_model_input(pixels, dtype=dtype)
    assert x.shape == (2, 3, 8, 8) and x.dtype == dtype and x.is_contiguous()
    scaled = pixels.numpy().transpose(0, 3, 1, 2) / 127.5 - 1  # float64, (N, 3, H, W)
    want = np.pad(scaled, ((0, 0), (0, 0), (0, 3), (0, 1)), mode="reflect")
    ulp = torch.finfo(dtype).eps  # the values lie in [-1, 1]: one rounding to dtype
    assert np.abs(x.float().numpy() - want).max() <= ulp / 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_model_input_and_output_round_trip_exactly(dtype):
    """Every byte survives bytes -> model values -> bytes in each dtype (odd sizes cropped back)."""
    pixels = _frames(1, 3, 256)
    pixels[0, 0, :, 0] = torch.arange(256, dtype=torch.uint8)
    x = kernels.to_model_input(pixels, dtype=dtype)
    assert torch.equal(kernels.from_model_output(x, 3, 256), pixels)


def test_from_model_output_clamps_rounds_and_zeroes_nan():
    values = [-2.0, -1.0, 0.0, 1.0, 2.0, float("nan"), float("inf"), -float("inf")]
    y = torch.tensor(values).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    got = kernels.from_model_output(y, 1, 8)[0, 0, :, 0].tolist()
    assert got == [0, 0, 128, 255, 255, 0, 255, 0]
    # Half a level rounds to even, like torch.round: 128.5 and 130.5 levels -> 128, 130.
    ties = torch.tensor([1 / 127.5, 3 / 127.5])
    assert ((ties + 1) * 127.5).tolist() == [128.5, 130.5]  # exact ties in float32
    y = ties.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert kernels.from_model_output(y, 1, 2)[0, 0, :, 0].tolist() == [128, 130]


def test_bad_input_is_refused_in_one_clear_line():
    with pytest.raises(ValueError, match="too small to reflect-pad"):
        kernels.to_model_input(_frames(1, 2, 8))
    with pytest.raises(ValueError, match="expected uint8 pixels"):
        kernels.to_model_input(_frames(1, 8, 8).float())
    with pytest.raises(ValueError, match="model dtype"):
        kernels.to_model_input(_frames(1, 8, 8), dtype=torch.float64)
    with pytest.raises(ValueError, match="cannot crop"):
        kernels.from_model_output(torch.zeros(1, 3, 8, 8), 9, 8)
    y, u = torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown colour matrix 'bt470'"):
        kernels.yuv420p_to_model_input(y, u, u, matrix="bt470", full_range=False)
    with pytest.raises(ValueError, match="do not fit luma"):
        kernels.yuv420p_to_model_input(y, u[:, :3], u, matrix="bt709", full_range=False)
    with pytest.raises(ValueError, match="even width and height"):
        kernels.model_output_to_yuv420p(
            torch.zeros(1, 3, 8, 8), 7, 8, matrix="bt709", full_range=False
        )


def test_package_imports_nothing_else_of_gtacity():
    """kernels stands alone (ARCHITECTURE.md): its modules import only torch, triton, the standard
    library and each other."""
    import ast
    import sys
    from pathlib import Path

    allowed = {"torch", "triton", "gtacity"} | set(sys.stdlib_module_names)
    for path in Path(kernels.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, (path.name, name)
                if name.startswith("gtacity"):
                    assert name.startswith("gtacity.kernels"), (path.name, name)


@pytest.mark.parametrize("matrix", ("bt601", "bt709"))
@pytest.mark.parametrize("full_range", (False, True), ids=("limited", "full"))
def test_colour_matches_the_cpu_path_on_synthetic_frames(matrix, full_range):
    """Decode (yuv420p and NV12) and encode against engine/colour.py (swscale), whole frames."""
    for name, rgb in synthetic_frames(96, 64).items():
        planes = cpu_encode(rgb, matrix, full_range)  # (H * 3 // 2, W), the sink's conversion
        y, u, v = kernels.split_yuv420p(torch.from_numpy(planes)[None])
        x = kernels.yuv420p_to_model_input(y, u, v, matrix=matrix, full_range=full_range)
        decoded = kernels.from_model_output(x, 64, 96)[0].numpy()
        worst, mean = level_errors(decoded, cpu_decode(planes, matrix, full_range))
        assert worst <= 1 and mean <= 0.05, (name, "decode", worst, mean)

        nv12 = torch.from_numpy(to_nv12(planes))[None]
        x_nv12 = kernels.nv12_to_model_input(
            nv12[:, :64], nv12[:, 64:].reshape(1, 32, 48, 2), matrix=matrix, full_range=full_range
        )
        assert torch.equal(x_nv12, x)

        out = kernels.to_model_input(torch.from_numpy(rgb)[None])
        encoded = kernels.model_output_to_yuv420p(out, 64, 96, matrix=matrix, full_range=full_range)
        assert encoded.shape == (1, 96, 96)
        worst, mean = level_errors(encoded[0].numpy(), planes)
        assert worst <= 1 and mean <= 0.05, (name, "encode", worst, mean)


@pytest.mark.cuda
def test_cuda_tensors_run_triton_and_agree_with_the_reference():
    """On a GPU the public functions dispatch to Triton; the bytes equal the CPU reference's."""
    pixels = _frames(5, 37, 45)
    x = kernels.to_model_input(pixels.cuda(), dtype=torch.float16)
    assert x.is_cuda and torch.equal(x.cpu(), kernels.to_model_input(pixels, dtype=torch.float16))
    assert torch.equal(kernels.from_model_output(x, 37, 45).cpu(), pixels)
    bt709 = {"matrix": "bt709", "full_range": False}
    encoded = kernels.model_output_to_yuv420p(x[..., :44], 36, 44, **bt709)
    want = kernels.model_output_to_yuv420p(x.cpu()[..., :44], 36, 44, **bt709)
    assert torch.equal(encoded.cpu(), want)
    planes = kernels.split_yuv420p(want)
    got = kernels.yuv420p_to_model_input(*(p.cuda() for p in planes), **bt709)
    assert torch.equal(got.cpu(), kernels.yuv420p_to_model_input(*planes, **bt709))


@pytest.mark.cuda
def test_pipeline_cuda_path_gives_the_cpu_path_bytes():
    """The engine's to_batch / to_frames on CUDA (Triton) produce exactly what they do on the CPU."""
    from gtacity.engine.frames import Frame
    from gtacity.engine.stream.convert import to_batch, to_frames

    frames = [Frame(img, i) for i, img in enumerate(_frames(3, 37, 53).numpy())]
    on_gpu = to_batch(frames, torch.device("cuda"))
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), to_batch(frames, torch.device("cpu")))
    translated = torch.tanh(on_gpu * 3)  # any model output in [-1, 1]
    for gpu, cpu in zip(to_frames(translated, frames), to_frames(translated.cpu(), frames)):
        assert np.array_equal(gpu.image, cpu.image)
