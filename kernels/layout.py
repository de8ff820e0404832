"""Frames in and out of the generator's layout: uint8 ``(N, H, W, 3)`` <-> float ``(N, 3, Hp, Wp)``.

Two kernels, each with its plain torch reference here and its Triton body in
:mod:`gtacity.kernels._triton_layout` (imported only when a CUDA tensor arrives, so this module
imports where Triton does not exist):

- :func:`to_model_input`: scale to [-1, 1], HWC -> CHW, reflect-pad to a multiple, cast; one read of
  each byte, one write of each value.
- :func:`from_model_output`: crop, clamp, round to nearest (half to even, like ``torch.round``),
  CHW -> HWC, cast to uint8; one read, one write.

Values: a byte ``x`` maps to ``(2x - 255) / 255`` computed in float32 and rounded once to the
output dtype (the correctly rounded ``x / 127.5 - 1``); a model value ``v`` maps to the byte
nearest ``(v + 1) * 127.5`` (float32), clamped to 0..255, NaN -> 0.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_pad(height: int, width: int, multiple: int) -> None:
    """Reflect padding mirrors inside the image, so each pad must be smaller than its side.

    Raises:
        ValueError: the image is too small to be reflect-padded to ``multiple``.
    """
    for name, size in (("height", height), ("width", width)):
        pad = -size % multiple
        if pad and pad >= size:
            raise ValueError(
                f"{name} {size} is too small to reflect-pad to a multiple of {multiple}; "
                f"frames need at least {multiple} pixels a side"
            )


@functools.cache
def triton_installed() -> bool:
    """Whether Triton can be imported (checked once, without importing it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(tensor: torch.Tensor) -> bool:
    """Triton runs the CUDA tensors; everything else goes to the torch reference."""
    return tensor.device.type == "cuda" and triton_installed()


def _check_pixels(pixels: torch.Tensor) -> None:
    if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[-1] != 3:
        raise ValueError(
            f"expected uint8 pixels (N, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}"
        )


def check_dtype(dtype: torch.dtype) -> None:
    """Raises ValueError unless ``dtype`` is a model dtype (float16, bfloat16, float32)."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"model dtype must be float16, bfloat16 or float32, got {dtype}")


def to_model_input(
    pixels: torch.Tensor, *, dtype: torch.dtype = torch.float32, multiple: int = 4
) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` -> ``(N, 3, Hp, Wp)`` in [-1, 1], reflect-padded, one pass.

    Args:
        pixels: uint8 RGB frames, any strides, on any device.
        dtype: float16, bfloat16 or float32 output.
        multiple: ``Hp`` and ``Wp`` are ``H`` and ``W`` rounded up to this (bottom/right padding).

    Returns:
        A contiguous tensor on ``pixels.device``.

    Raises:
        ValueError: wrong dtype/shape, or a side too small to reflect-pad.
    """
    _check_pixels(pixels)
    check_dtype(dtype)
    check_pad(pixels.shape[1], pixels.shape[2], multiple)
    if use_triton(pixels):
        from gtacity.kernels import _triton_layout

        return _triton_layout.to_model_input(pixels, dtype=dtype, multiple=multiple)
    return to_model_input_reference(pixels, dtype=dtype, multiple=multiple)


def to_model_input_reference(
    pixels: torch.Tensor, *, dtype: torch.dtype = torch.float32, multiple: int = 4
) -> torch.Tensor:
    """The unfused torch sequence :func:`to_model_input` must equal (one pass per step)."""
    # The divisor is a tensor on the pixels' device: CUDA divides by a Python number as a product with
    # its reciprocal (one bit lost, so a GPU and a CPU would differ), by a tensor it rounds once.
    x = pixels.permute(0, 3, 1, 2).float().mul_(2).sub_(255)  # (N, 3, H, W)
    x = x.div_(torch.full((), 255.0, device=x.device))
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x.to(dtype).contiguous()


def from_model_output(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 3, Hp, Wp)`` in [-1, 1] -> uint8 RGB ``(N, height, width, 3)``, one pass.

    Args:
        y: float16, bfloat16 or float32 model output, any strides.
        height, width: the frame size to crop back to (``<= Hp, Wp``).

    Returns:
        A contiguous uint8 tensor on ``y.device``.

    Raises:
        ValueError: wrong dtype/shape, or a crop larger than the output.
    """
    check_output(y, height, width)
    if use_triton(y):
        from gtacity.kernels import _triton_layout

        return _triton_layout.from_model_output(y, height, width)
    return from_model_output_reference(y, height, width)


def check_output(y: torch.Tensor, height: int, width: int) -> None:
    """Raises ValueError unless ``y`` is float ``(N, 3, H, W)`` with ``height x width`` inside."""
    if y.dtype not in FLOAT_DTYPES or y.dim() != 4 or y.shape[1] != 3:
        raise ValueError(
            f"expected float model output (N, 3, H, W), got {y.dtype} {tuple(y.shape)}"
        )
    if not (0 < height <= y.shape[2] and 0 < width <= y.shape[3]):
        raise ValueError(f"cannot crop {height}x{width} out of {y.shape[2]}x{y.shape[3]}")


def from_model_output_reference(y: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The unfused torch sequence :func:`from_model_output` must equal."""
    v = y[:, :, :height, :width].float().add(1).mul_(127.5)
    v = v.nan_to_num_(nan=0.0).clamp_(0, 255).round_()
    return v.to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (N, H, W, 3)
