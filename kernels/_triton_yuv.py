"""Triton bodies of :mod:`gtacity.kernels.yuv` (imported only when Triton runs a CUDA tensor).

The integer arithmetic is the reference's, operation for operation, so the bytes agree exactly on
every device; the float steps are the shared helpers of :mod:`gtacity.kernels._triton_layout`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gtacity.kernels._triton_layout import (
    BLOCK_H,
    BLOCK_W,
    NUM_WARPS,
    byte_value,
    grid,
    model_out,
    model_value,
    on_device,
    reflect,
    store_model_value,
    tile,
)
from gtacity.kernels.common import SHIFT, YuvCoefficients, padded


@triton.jit
def _chroma_taps(i, chroma_size, COSITED: tl.constexpr):
    """The two chroma samples luma index ``i`` interpolates between: centred, the nearest (weight
    3) and the next nearest (1); co-sited, the sample at or left of ``i`` and the next (2 and 2;
    the same sample twice on even ``i``)."""
    near = i // 2
    if COSITED:
        far = near + i % 2
    else:
        far = tl.where(i % 2 == 0, near - 1, near + 1)
    return near, tl.minimum(tl.maximum(far, 0), chroma_size - 1)


@triton.jit
def _chroma_sum16(
    plane, s_h, s_w, row_near, row_far, col_near, col_far, mask, COSITED: tl.constexpr
):
    """16x the bilinearly upsampled chroma, centred on 0: rows weighted 3 and 1, columns 3 and 1
    (centred) or 2 and 2 (co-sited): 9, 3, 3, 1 or 6, 6, 2, 2 in all."""
    if COSITED:
        w_near = 2
    else:
        w_near = 3
    near = plane + row_near * s_h
    far = plane + row_far * s_h
    total = 3 * w_near * tl.load(near + col_near * s_w, mask=mask, other=0).to(tl.int32)
    total += 3 * (4 - w_near) * tl.load(near + col_far * s_w, mask=mask, other=0).to(tl.int32)
    total += w_near * tl.load(far + col_near * s_w, mask=mask, other=0).to(tl.int32)
    total += (4 - w_near) * tl.load(far + col_far * s_w, mask=mask, other=0).to(tl.int32)
    return total - 128 * 16


@triton.jit
def _to_byte(fixed, SHIFT_OUT: tl.constexpr):
    """Fixed point with ``SHIFT_OUT`` fraction bits -> int32 0..255, rounded half up."""
    return _clamp_byte((fixed + (1 << (SHIFT_OUT - 1))) >> SHIFT_OUT)


@triton.jit
def _clamp_byte(value):
    return tl.minimum(tl.maximum(value, 0), 255)


@triton.jit
def _yuv420_to_model_input_kernel(
    y_ptr, u_ptr, v_ptr, dst, H, W, HP, WP, HC, WC,
    sy_n, sy_h, sy_w, su_n, su_h, su_w, sv_n, sv_h, sv_w,
    LUMA, R_V, G_U, G_V, B_U, Y_OFFSET,
    SHIFT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BF16_BITS: tl.constexpr,
    CHROMA_LEFT: tl.constexpr,
):
    rows, cols, n = tile(BLOCK_H, BLOCK_W)
    mask = (rows < HP) & (cols < WP)
    i, j = reflect(rows, H), reflect(cols, W)
    luma = tl.load(y_ptr + n * sy_n + i * sy_h + j * sy_w, mask=mask, other=0).to(tl.int32)
    luma = (luma - Y_OFFSET) * LUMA * 16
    row_near, row_far = _chroma_taps(i, HC, False)
    col_near, col_far = _chroma_taps(j, WC, CHROMA_LEFT)
    u16 = _chroma_sum16(
        u_ptr + n * su_n, su_h, su_w, row_near, row_far, col_near, col_far, mask, CHROMA_LEFT
    )
    v16 = _chroma_sum16(
        v_ptr + n * sv_n, sv_h, sv_w, row_near, row_far, col_near, col_far, mask, CHROMA_LEFT
    )
    out = dst + n * 3 * HP * WP + rows * WP + cols
    r = _to_byte(luma + R_V * v16, SHIFT + 4)
    g = _to_byte(luma - G_U * u16 - G_V * v16, SHIFT + 4)
    b = _to_byte(luma + B_U * u16, SHIFT + 4)
    store_model_value(out, model_value(r), mask, BF16_BITS)
    store_model_value(out + HP * WP, model_value(g), mask, BF16_BITS)
    store_model_value(out + 2 * HP * WP, model_value(b), mask, BF16_BITS)


@triton.jit
def _model_output_to_yuv420_kernel(
    src, dst, H, W, s_n, s_c, s_h, s_w,
    Y_R, Y_G, Y_B, U_R, U_G, U_B, V_R, V_G, V_B, Y_OFFSET, CHROMA_ROUND,
    SHIFT: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # One program: a tile of chroma samples, the 2x2 luma under each, and the rows either side
    # that the vertical 1-3-3-1 chroma filter reads.
    rows_c, cols_c, n = tile(BLOCK_H, BLOCK_W)
    HC = H // 2
    WC = W // 2
    mask = (rows_c < HC) & (cols_c < WC)
    frame = dst + n * (H * W + 2 * HC * WC)
    sum_r = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.int32)
    sum_g = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.int32)
    sum_b = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.int32)
    for o in tl.static_range(4):
        row = tl.minimum(tl.maximum(rows_c * 2 + o - 1, 0), H - 1)
        for dc in tl.static_range(2):
            col = cols_c * 2 + dc
            pixel = src + n * s_n + row * s_h + col * s_w
            r = byte_value(tl.load(pixel, mask=mask, other=0.0))
            g = byte_value(tl.load(pixel + s_c, mask=mask, other=0.0))
            b = byte_value(tl.load(pixel + 2 * s_c, mask=mask, other=0.0))
            if o % 3 == 0:  # rows 2k-1 and 2k+2: chroma only, weight 1
                sum_r += r
                sum_g += g
                sum_b += b
            else:  # rows 2k and 2k+1: weight 3, and their luma
                sum_r += 3 * r
                sum_g += 3 * g
                sum_b += 3 * b
                luma = Y_R * r + Y_G * g + Y_B * b + (Y_OFFSET << SHIFT)
                tl.store(frame + row * W + col, _to_byte(luma, SHIFT).to(tl.uint8), mask=mask)
    chroma = frame + H * W + rows_c * WC + cols_c
    centre = (128 << (SHIFT + 4)) + CHROMA_ROUND
    u = (U_R * sum_r + U_G * sum_g + U_B * sum_b + centre) >> (SHIFT + 4)
    v = (V_R * sum_r + V_G * sum_g + V_B * sum_b + centre) >> (SHIFT + 4)
    tl.store(chroma, _clamp_byte(u).to(tl.uint8), mask=mask)
    tl.store(chroma + HC * WC, _clamp_byte(v).to(tl.uint8), mask=mask)


def yuv420_to_model_input(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    k: YuvCoefficients,
    dtype: torch.dtype,
    multiple: int,
    chroma_left: bool = False,
) -> torch.Tensor:
    """Triton :func:`gtacity.kernels.yuv.yuv420p_to_model_input` (arguments already checked)."""
    n, h, w = y.shape
    hp, wp = padded(h, multiple), padded(w, multiple)
    out = torch.empty((n, 3, hp, wp), dtype=dtype, device=y.device)
    dst, bf16_bits = model_out(out)
    with on_device(y.device):
        _yuv420_to_model_input_kernel[grid(hp, wp, n)](
            y, u, v, dst, h, w, hp, wp, u.shape[1], u.shape[2],
            *y.stride(), *u.stride(), *v.stride(),
            k.luma, k.r_v, k.g_u, k.g_v, k.b_u, k.y_offset,
            SHIFT=SHIFT, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, BF16_BITS=bf16_bits,
            CHROMA_LEFT=chroma_left, num_warps=NUM_WARPS,
        )
    return out


def model_output_to_yuv420(
    out: torch.Tensor, height: int, width: int, k: YuvCoefficients
) -> torch.Tensor:
    """Triton :func:`gtacity.kernels.yuv.model_output_to_yuv420p` (arguments already checked)."""
    n = out.shape[0]
    frames = torch.empty((n, height * 3 // 2, width), dtype=torch.uint8, device=out.device)
    with on_device(out.device):
        _model_output_to_yuv420_kernel[grid(height // 2, width // 2, n)](
            out, frames, height, width, *out.stride(),
            k.y_r, k.y_g, k.y_b, k.u_r, k.u_g, k.u_b, k.v_r, k.v_g, k.v_b, k.y_offset,
            k.chroma_round,
            SHIFT=SHIFT, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, num_warps=NUM_WARPS,
        )
    return frames
