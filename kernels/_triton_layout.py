"""Triton bodies of :mod:`gtacity.kernels.layout` (imported only when Triton runs a CUDA tensor).

Kept apart from the references because Triton is optional and decides at decoration time whether
a kernel is compiled or interpreted (``TRITON_INTERPRET=1``, how the tests run these on a CPU).
Each program handles one row segment of one frame for all three channels: the uint8 side is read
or written once, the float planes are touched once each, padding is resolved by index arithmetic.
The two value helpers are shared with :mod:`gtacity.kernels._triton_yuv`.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from gtacity.kernels.common import padded

# A program handles a BLOCK_H x BLOCK_W tile of one frame (all three channels): wide rows keep the
# float planes' accesses contiguous, a few rows per program keep the grid small.
BLOCK_H = 4
BLOCK_W = 128
NUM_WARPS = 4


@triton.jit
def model_value(byte):
    """Byte (any int type) -> float32 ``(2x - 255) / 255``, rounded once, like the reference."""
    return tl.math.div_rn(byte.to(tl.float32) * 2.0 - 255.0, 255.0)


@triton.jit
def store_model_value(ptr, v, mask, BF16_BITS: tl.constexpr):
    """Store float32 ``v`` rounded to nearest even in the output dtype.

    With ``BF16_BITS`` the output is bfloat16 viewed as int16 and the rounding is done on the bits:
    the interpreter's float32 -> bfloat16 cast truncates, a GPU's rounds; this agrees with both.
    """
    if BF16_BITS:
        bits = v.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        tl.store(ptr, bits.to(tl.int16), mask=mask)
    else:
        tl.store(ptr, v.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def byte_value(v):
    """Model value -> int32 0..255: ``(v + 1) * 127.5`` clamped, rounded half to even, NaN -> 0."""
    v = (v.to(tl.float32) + 1.0) * 127.5
    v = tl.where(v == v, v, 0.0)
    v = tl.minimum(tl.maximum(v, 0.0), 255.0)
    low = v.to(tl.int32)  # truncation == floor, v >= 0
    frac = v - low.to(tl.float32)
    up = (frac > 0.5) | ((frac == 0.5) & ((low & 1) == 1))
    return low + up.to(tl.int32)


@triton.jit
def reflect(i, size):
    """Index into the padded axis -> index into the image (bottom/right reflect, pad < size)."""
    return tl.where(i < size, i, 2 * (size - 1) - i)


@triton.jit
def tile(BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's rows ``(BLOCK_H, 1)``, columns ``(1, BLOCK_W)`` and frame index (int64)."""
    rows = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return rows, cols, tl.program_id(2).to(tl.int64)


@triton.jit
def _to_model_input_kernel(
    src, dst, H, W, HP, WP, s_n, s_h, s_w, s_c,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BF16_BITS: tl.constexpr,
):
    rows, cols, n = tile(BLOCK_H, BLOCK_W)
    mask = (rows < HP) & (cols < WP)
    pixel = src + n * s_n + reflect(rows, H) * s_h + reflect(cols, W) * s_w
    out = dst + n * 3 * HP * WP + rows * WP + cols
    for c in tl.static_range(3):
        byte = tl.load(pixel + c * s_c, mask=mask, other=0)
        store_model_value(out + c * HP * WP, model_value(byte), mask, BF16_BITS)


@triton.jit
def _from_model_output_kernel(
    src, dst, H, W, s_n, s_c, s_h, s_w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr
):
    rows, cols, n = tile(BLOCK_H, BLOCK_W)
    mask = (rows < H) & (cols < W)
    value = src + n * s_n + rows * s_h + cols * s_w
    out = dst + ((n * H + rows) * W + cols) * 3
    for c in tl.static_range(3):
        v = tl.load(value + c * s_c, mask=mask, other=0.0)
        tl.store(out + c, byte_value(v).to(tl.uint8), mask=mask)


def grid(height: int, width: int, frames: int) -> tuple[int, int, int]:
    """Launch grid covering ``frames`` images of ``height x width`` with tiles."""
    return triton.cdiv(width, BLOCK_W), triton.cdiv(height, BLOCK_H), frames


def model_out(out: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The pointer to store model values through, and whether it holds bfloat16 bits."""
    if out.dtype == torch.bfloat16:
        return out.view(torch.int16), True
    return out, False


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device and stream: make the tensor's device current."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def to_model_input(pixels: torch.Tensor, *, dtype: torch.dtype, multiple: int) -> torch.Tensor:
    """Triton :func:`gtacity.kernels.layout.to_model_input` (arguments already checked)."""
    n, h, w, _ = pixels.shape
    hp, wp = padded(h, multiple), padded(w, multiple)
    out = torch.empty((n, 3, hp, wp), dtype=dtype, device=pixels.device)
    dst, bf16_bits = model_out(out)
    with on_device(pixels.device):
        _to_model_input_kernel[grid(hp, wp, n)](
            pixels, dst, h, w, hp, wp, *pixels.stride(),
            BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, BF16_BITS=bf16_bits, num_warps=NUM_WARPS,
        )
    return out


def from_model_output(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Triton :func:`gtacity.kernels.layout.from_model_output` (arguments already checked)."""
    out = torch.empty((y.shape[0], height, width, 3), dtype=torch.uint8, device=y.device)
    with on_device(y.device):
        _from_model_output_kernel[grid(height, width, y.shape[0])](
            y, out, height, width, *y.stride(),
            BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, num_warps=NUM_WARPS,
        )
    return out
