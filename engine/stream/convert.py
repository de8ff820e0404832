"""Frames <-> model batches: the one place frames become ``(N, 3, H, W)`` tensors in [-1, 1] and back.

8-bit frames of at least the generator's minimum size take the fused path (one Triton pass on CUDA,
:mod:`gtacity.kernels`); frames that came as YUV planes are converted in the same pass
(:mod:`gtacity.engine.media.planes`); 16-bit frames and frames below the minimum take the general
path here: normalised from their full depth, reflect-padded (edge-padded where a side is too short to
reflect) to a multiple of 4 and at least :data:`gtacity.nets.MIN_SIZE`, and cropped back after.
Output size == input size, always.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gtacity import kernels
from gtacity.engine.frames import Frame
from gtacity.engine.media.planes import planes_from_batch, planes_to_batch
from gtacity.engine.stream.slots import download, upload
from gtacity.nets import MIN_SIZE, SIZE_MULTIPLE


def to_batch(
    frames: list[Frame],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    host: torch.Tensor | None = None,
) -> torch.Tensor:
    """``N`` frames ``(H, W, 3)`` uint8 -> ``(N, 3, Hp, Wp)`` ``dtype`` in [-1, 1] on ``device``.

    The upload is uint8 (4x less traffic than float); scaling, HWC -> CHW, reflect-padding to a
    multiple of 4 and the cast happen on the device, in one Triton pass on CUDA
    (:func:`gtacity.kernels.to_model_input`). Frames carrying YUV planes are converted to RGB in
    the same pass (:func:`gtacity.engine.media.planes.planes_to_batch`).

    Args:
        host: a pinned ``(>= N, *frame.pixels.shape)`` uint8 buffer to stack the frames into; the
            upload from it is asynchronous on the current CUDA stream, so it must not be written
            again until that stream has passed this point. None: a fresh buffer (pinned on the
            way to CUDA).
    """
    if frames[0].planes is not None:
        return planes_to_batch(frames, device, dtype, host)
    if not fits_kernels(frames[0].image):  # 16-bit, or smaller than the generator takes
        return generic_to_batch(frames, device, dtype)
    pixels = upload([f.image for f in frames], device, host)  # (N, H, W, 3) uint8
    return kernels.to_model_input(pixels, dtype=dtype, multiple=SIZE_MULTIPLE)


def to_frames(y: torch.Tensor, frames: list[Frame], host: torch.Tensor | None = None) -> list[Frame]:
    """``(N, 3, Hp, Wp)`` in [-1, 1] -> the input frames carrying ``(H, W, 3)`` uint8 translations.

    Cropping, rounding, CHW -> HWC and the cast to uint8 happen where ``y`` is (one Triton pass on
    CUDA, :func:`gtacity.kernels.from_model_output`), so only bytes are downloaded. Frames that
    came as YUV planes leave as yuv420p planes (:func:`gtacity.engine.media.planes.planes_from_batch`).

    Args:
        host: a pinned ``(>= N, *frame.pixels.shape)`` uint8 buffer for a CUDA ``y``: the download
            into it is queued on the current stream and the returned pixels are views of it, valid
            once that stream has passed this point (wait on an event) and until the buffer is
            reused. None: a synchronous download into new arrays.
    """
    if frames[0].planes is not None:
        return planes_from_batch(y, frames, host)
    if not fits_kernels(frames[0].image):
        return generic_to_frames(y, frames)
    h, w = frames[0].size
    pixels = kernels.from_model_output(y, h, w)  # (N, H, W, 3) uint8, where y is
    return [f.with_image(img) for f, img in zip(frames, download(pixels, host).numpy())]


def fits_kernels(image: np.ndarray) -> bool:
    """Whether the pipeline's fused uint8 path takes this frame (8-bit, both sides >= 8)."""
    return image.dtype == np.uint8 and min(image.shape[:2]) >= MIN_SIZE


def generic_to_batch(frames: list[Frame], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Frames of any integer depth and size -> ``(N, 3, Hp, Wp)`` in [-1, 1], padded for the
    generator; a 16-bit frame is normalised from its full depth."""
    half = np.iinfo(frames[0].image.dtype).max / 2
    pixels = torch.from_numpy(np.stack([f.image for f in frames]).astype(np.float32)).to(device)
    x = pixels.permute(0, 3, 1, 2).div_(half).sub_(1.0)  # (N, 3, H, W)
    return pad_for_generator(x).to(dtype).contiguous()


def generic_to_frames(y: torch.Tensor, frames: list[Frame]) -> list[Frame]:
    """``(N, 3, Hp, Wp)`` in [-1, 1] -> the frames carrying translations of their own depth."""
    h, w = frames[0].image.shape[:2]
    depth = frames[0].image.dtype
    half = np.iinfo(depth).max / 2
    pixels = y[:, :, :h, :w].float().add(1.0).mul_(half).round_().clamp_(0, 2 * half)
    images = pixels.permute(0, 2, 3, 1).cpu().numpy().astype(depth)  # (N, H, W, 3)
    return [f.with_image(image) for f, image in zip(frames, images)]


def pad_for_generator(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> padded at the bottom/right so each side is a multiple of 4 and >= 8.

    Reflection where the side is long enough to reflect the padding, else the edge is repeated.
    """
    h, w = x.shape[-2:]
    pad_h = max(MIN_SIZE, h + -h % SIZE_MULTIPLE) - h
    pad_w = max(MIN_SIZE, w + -w % SIZE_MULTIPLE) - w
    if pad_h:
        x = F.pad(x, (0, 0, 0, pad_h), mode="reflect" if pad_h < h else "replicate")
    if pad_w:
        x = F.pad(x, (0, pad_w, 0, 0), mode="reflect" if pad_w < w else "replicate")
    return x
