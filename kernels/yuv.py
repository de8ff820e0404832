"""Video colour fused with the generator's layout: 4:2:0 planes <-> model tensors, one pass each.

The decoder's yuv420p / NV12 planes go to the GPU as they are (1.5 bytes per pixel instead of 3)
and the encoder gets yuv420p planes back, so the CPU never converts colour. The conversions follow
what the CPU path (``gtacity.engine.media.colour``, i.e. swscale with the flags it sets) does, measured
against it on real and synthetic frames:

- YUV -> RGB: chroma is upsampled bilinearly with chroma samples centred between luma samples
  (weights 9/16, 3/16, 3/16, 1/16, edges clamped), or, for ``chroma_left``, centred between rows
  but co-sited with the even columns (H.264/HEVC/MPEG-2's default "left" siting, which swscale
  follows when a decoder tags its frames so: each odd column the mean of its two neighbours,
  weights 6/16, 6/16, 2/16, 2/16), the video's matrix and range are applied, and
  the result is rounded to a byte, then to the model value exactly like
  :func:`~gtacity.kernels.layout.to_model_input`.
- RGB -> YUV: the model output is first rounded to bytes exactly like
  :func:`~gtacity.kernels.layout.from_model_output`; each chroma sample averages its two columns
  and filters four rows with weights 1, 3, 3, 1 (rows ``2k-1 .. 2k+2``, edges clamped).
- Matrices are integer fixed point (16 fraction bits), so every implementation (torch, Triton
  compiled, Triton interpreted) gives the same bytes. Results are rounded to nearest, except
  full-range chroma on the way to YUV, which swscale truncates (half a level low on average):
  it is truncated here too, so a video comes out the same whether its colour was converted on
  the CPU or the GPU.

Each kernel's plain torch reference is here; the Triton bodies live in
:mod:`gtacity.kernels._triton_yuv`, imported only for CUDA tensors.
"""

from __future__ import annotations

import torch

from gtacity.kernels.common import SHIFT, YuvCoefficients
from gtacity.kernels.layout import (
    check_dtype,
    check_output,
    check_pad,
    from_model_output_reference,
    to_model_input_reference,
    use_triton,
)


def yuv420p_to_model_input(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    *,
    matrix: str,
    full_range: bool,
    dtype: torch.dtype = torch.float32,
    multiple: int = 4,
    chroma_left: bool = False,
) -> torch.Tensor:
    """yuv420p planes -> ``(N, 3, Hp, Wp)`` model input in [-1, 1], reflect-padded, one pass.

    Args:
        y: uint8 luma ``(N, H, W)``.
        u, v: uint8 chroma ``(N, ceil(H/2), ceil(W/2))`` (any strides: NV12's interleaved plane is
            passed as two strided views, see :func:`nv12_to_model_input`).
        matrix: a :data:`MATRICES` name (the video's conversion matrix).
        full_range: YUV uses 0-255 ("pc"/"jpeg") rather than 16-235/240 ("tv"/"mpeg").
        dtype, multiple: as :func:`~gtacity.kernels.layout.to_model_input`.
        chroma_left: chroma samples sit on the even columns (H.264's "left" siting) rather than
            centred between two columns (JPEG's, and swscale's for frames that say nothing).

    Raises:
        ValueError: planes of the wrong dtype or shapes, an unknown matrix, a too small frame.
    """
    _check_planes(y, u, v)
    check_dtype(dtype)
    check_pad(y.shape[1], y.shape[2], multiple)
    coefficients = YuvCoefficients.of(matrix, full_range)
    if use_triton(y):
        from gtacity.kernels import _triton_yuv

        return _triton_yuv.yuv420_to_model_input(
            y, u, v, coefficients, dtype, multiple, chroma_left
        )
    rgb = yuv420_to_rgb_reference(y, u, v, coefficients, chroma_left)
    return to_model_input_reference(rgb, dtype=dtype, multiple=multiple)


def nv12_to_model_input(y: torch.Tensor, uv: torch.Tensor, **kwargs) -> torch.Tensor:
    """NV12 planes (luma ``(N, H, W)``, interleaved chroma ``(N, ceil(H/2), ceil(W/2), 2)``) ->
    model input; keyword arguments as :func:`yuv420p_to_model_input`."""
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"expected NV12 chroma (N, H/2, W/2, 2), got {tuple(uv.shape)}")
    return yuv420p_to_model_input(y, uv[..., 0], uv[..., 1], **kwargs)


def model_output_to_yuv420p(
    out: torch.Tensor, height: int, width: int, *, matrix: str, full_range: bool
) -> torch.Tensor:
    """``(N, 3, Hp, Wp)`` model output -> yuv420p frames ``(N, height * 3 // 2, width)``, one pass.

    The layout is PyAV's for yuv420p (``VideoFrame.from_ndarray(frames[i], format="yuv420p")``):
    ``height`` luma rows, then the U plane, then the V plane, each chroma row ``width // 2`` wide,
    two to a row. :func:`split_yuv420p` gives the three planes as views.

    Raises:
        ValueError: wrong dtype/shape, odd ``height`` or ``width``, an unknown matrix.
    """
    check_output(out, height, width)
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs an even width and height, got {width}x{height}")
    coefficients = YuvCoefficients.of(matrix, full_range)
    if use_triton(out):
        from gtacity.kernels import _triton_yuv

        return _triton_yuv.model_output_to_yuv420(out, height, width, coefficients)
    rgb = from_model_output_reference(out, height, width)
    return rgb_to_yuv420p_reference(rgb, coefficients)


def split_yuv420p(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, H * 3 // 2, W)`` yuv420p frames -> views ``y (N, H, W)``, ``u, v (N, H/2, W/2)``."""
    n, rows, width = frames.shape
    height = rows * 2 // 3
    flat = frames.reshape(n, rows * width)
    chroma = (height // 2, width // 2)
    luma_size, chroma_size = height * width, chroma[0] * chroma[1]
    y = flat[:, :luma_size].view(n, height, width)
    u = flat[:, luma_size : luma_size + chroma_size].view(n, *chroma)
    v = flat[:, luma_size + chroma_size :].view(n, *chroma)
    return y, u, v


def _check_planes(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> None:
    if any(p.dtype != torch.uint8 or p.dim() != 3 for p in (y, u, v)):
        raise ValueError("expected uint8 planes: y (N, H, W), u and v (N, H/2, W/2)")
    n, h, w = y.shape
    chroma = (n, (h + 1) // 2, (w + 1) // 2)
    if tuple(u.shape) != chroma or tuple(v.shape) != chroma:
        raise ValueError(
            f"chroma planes {tuple(u.shape)} and {tuple(v.shape)} do not fit luma {tuple(y.shape)}"
            f" in 4:2:0; expected {chroma}"
        )


def _upsample_sum16(c: torch.Tensor, size: int, dim: int, cosited: bool) -> torch.Tensor:
    """4x the bilinear 2x upsampling of chroma along ``dim``, edges clamped: samples centred
    between two pixels (weights 3 and 1) or co-sited with the even ones (2 and 2)."""
    i = torch.arange(size, device=c.device)
    near = i // 2
    if cosited:
        far = (near + i % 2).clamp_(0, c.shape[dim] - 1)
        return 2 * (c.index_select(dim, near) + c.index_select(dim, far))
    far = (near + torch.where(i % 2 == 0, -1, 1)).clamp_(0, c.shape[dim] - 1)
    return 3 * c.index_select(dim, near) + c.index_select(dim, far)


def yuv420_to_rgb_reference(
    y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, k: YuvCoefficients, chroma_left: bool = False
) -> torch.Tensor:
    """4:2:0 planes -> uint8 RGB ``(N, H, W, 3)`` in plain torch (the kernel's definition)."""
    h, w = y.shape[1:]
    luma = (y.int() - k.y_offset) * k.luma * 16
    u16, v16 = (
        _upsample_sum16(_upsample_sum16(c.int(), h, 1, False), w, 2, chroma_left) - 128 * 16
        for c in (u, v)
    )  # 16x the chroma at each pixel, centred on 0
    half = 1 << (SHIFT + 3)
    r = luma + k.r_v * v16
    g = luma - k.g_u * u16 - k.g_v * v16
    b = luma + k.b_u * u16
    rgb = torch.stack([r, g, b], dim=-1).add_(half) >> (SHIFT + 4)
    return rgb.clamp_(0, 255).to(torch.uint8)


def rgb_to_yuv420p_reference(rgb: torch.Tensor, k: YuvCoefficients) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` (even sides) -> yuv420p ``(N, H * 3 // 2, W)`` in plain torch."""
    n, h, w, _ = rgb.shape
    r, g, b = rgb.int().unbind(-1)
    y = (k.y_r * r + k.y_g * g + k.y_b * b + (k.y_offset << SHIFT) + (1 << (SHIFT - 1))) >> SHIFT
    # Chroma: pairs of columns summed, then rows 2k-1 .. 2k+2 weighted 1, 3, 3, 1 (16x in all).
    pairs = rgb.int().unflatten(2, (w // 2, 2)).sum(3)  # (N, H, W/2, 3)
    k2 = torch.arange(h // 2, device=rgb.device) * 2
    rows = [(k2 + offset).clamp_(0, h - 1) for offset in (-1, 0, 1, 2)]
    s = sum(wt * pairs.index_select(1, i) for wt, i in zip((1, 3, 3, 1), rows))
    sr, sg, sb = s.unbind(-1)
    centre = (128 << (SHIFT + 4)) + k.chroma_round
    u = (k.u_r * sr + k.u_g * sg + k.u_b * sb + centre) >> (SHIFT + 4)
    v = (k.v_r * sr + k.v_g * sg + k.v_b * sb + centre) >> (SHIFT + 4)
    planes = [p.clamp(0, 255).to(torch.uint8).reshape(n, -1) for p in (y, u, v)]
    return torch.cat(planes, dim=1).view(n, h * 3 // 2, w)
