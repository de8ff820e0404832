"""Frames in, frames out, in memory: :class:`Translator`, for notebooks and data loaders.

::

    import numpy as np
    from gtacity.engine import Translator

    gta2city = Translator("gta2city_demo", device="auto")
    city = gta2city(np.zeros((288, 512, 3), np.uint8))           # (H, W, 3) uint8 -> the same
    batch = gta2city(torch.zeros(4, 256, 256, 3, dtype=torch.uint8, device="cuda"))  # tensor -> tensor

It is ``translate`` without files: the backend, precision, padding and tiling are chosen by the same
code as for ``gtacity translate`` (:func:`gtacity.engine.translation.translate`), so for the same
weights, backend and precision a frame comes out pixel for pixel as it does from an image file
translated by ``translate`` (PNG, lossless). Each frame size is prepared (compiled, converted) once
and reused for every later call of that size.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gtacity import kernels
from gtacity.engine.frames import Frame
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.engine.translation import TranslateConfig, TranslateError, configured_backend, configured_generator
from gtacity.nets import MIN_SIZE, SIZE_MULTIPLE

_DEPTHS = (np.uint8, np.uint16)  # numpy frames: 8-bit, or 16-bit like a deep PNG/TIFF


class Translator:
    """A generator ready to translate frames held in memory.

    Call it with one ``(H, W, 3)`` RGB frame or an ``(N, H, W, 3)`` batch, as a numpy array
    (uint8, or uint16 for 16-bit frames) or a uint8 torch tensor on any device; it returns the
    translation in the same kind, shape and dtype (a tensor on the input's device). A list of
    frames of different sizes gives a list. Any size goes in: odd and tiny frames are padded and
    cropped back, huge ones are tiled, as ``translate`` does.

    On CUDA a uint8 tensor already on the backend's device never leaves it (the same fused
    kernels as ``translate``'s upload and download); anything else travels through the host.
    Calls are serialised (one at a time per Translator), so threads may share one.

    Attributes:
        backend: the backend in use (``backend.name``, ``backend.precision``, ``backend.device``).
        info: the generator file's metadata (direction, arch, ngf, ...).
        batch_size: frames per inference call.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        direction: str | None = None,
        backend: str = "auto",
        precision: str = "auto",
        device: str = "auto",
        batch_size: int | None = None,
        tile: int | None = None,
        calibration: str | Path | None = None,
        progress: bool = False,
    ):
        """Load the generator and make its backend, as ``translate`` would.

        Args:
            weights: a generator file (ours or an official ``latest_net_G_*.pth``) or a bundled
                generator's name (``gta2city_demo``, ``city2gta_demo``, ``..._fast``); None takes
                the bundled demo generator for ``direction``.
            direction, backend, precision, device, batch_size, tile: as in
                :class:`~gtacity.engine.translation.TranslateConfig`.
            calibration: ``precision="int8"`` only, and needed there: a video, image folder or
                image to calibrate on.
            progress: show a progress bar on stderr for batches of more than one frame.

        Raises:
            GtacityError: (subclasses) weights that cannot be read, a backend, device or precision
                that cannot run here, int8 without ``calibration``.
        """
        if precision == "int8" and calibration is None:
            raise TranslateError("Translator: precision int8 needs calibration= (a video, image folder or "
                                 "image to calibrate on)")
        # The same config translate() reads; ``input`` only matters to int8 calibration.
        cfg = TranslateConfig(input=calibration or "", output="", direction=direction, weights=weights,
                              backend=backend, precision=precision, device=device, batch_size=batch_size,
                              tile=tile, calibration=calibration, progress=progress)
        if batch_size is not None and batch_size < 1:
            raise TranslateError(f"Translator: batch_size must be at least 1, got {batch_size}")
        net, self.info = configured_generator(cfg)
        self.backend = configured_backend(cfg, net, self.info)
        self.batch_size = batch_size or (8 if self.backend.device.type == "cuda" else 1)
        self.progress = progress
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Translator({self.info.direction}, {self.backend.name} {self.backend.precision} "
                f"on {self.backend.device}, batch {self.batch_size})")

    def __call__(self, frames):
        """Translate ``frames``: ``(H, W, 3)``, ``(N, H, W, 3)`` or a list of ``(H, W, 3)``.

        Returns:
            The translations, of the same kind, shape and dtype (a tensor on the input's device).

        Raises:
            TranslateError: not an RGB frame or batch of a supported dtype.
        """
        if isinstance(frames, (list, tuple)):
            return [self(frame) for frame in frames]
        single = _check(frames)
        batch = frames[None] if single else frames
        if len(batch) == 0:
            return batch[:0].clone() if isinstance(batch, torch.Tensor) else batch[:0].copy()
        with self._lock:
            if isinstance(batch, torch.Tensor):
                out = self._tensor(batch)
            else:
                out = self._numpy(np.ascontiguousarray(batch))
        return out[0] if single else out

    def _numpy(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` host frames through the conversion ``translate``'s pipeline uses."""
        out = np.empty_like(images)
        with tqdm(total=len(images), unit="frame", disable=not self.progress or len(images) < 2,
                  desc=f"{self.info.direction} {self.backend.name}") as bar:
            for start in range(0, len(images), self.batch_size):
                frames = [Frame(image, start + i) for i, image in enumerate(images[start:start + self.batch_size])]
                x = to_batch(frames, self.backend.device)
                for i, frame in enumerate(to_frames(self._infer(x), frames)):
                    out[start + i] = frame.image
                bar.update(len(frames))
        return out

    def _tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 tensor; one on the backend's device stays there."""
        if pixels.device != self.backend.device or min(pixels.shape[1:3]) < MIN_SIZE:
            host = pixels.numpy(force=True)  # through the host (a tiny frame takes the general path)
            return torch.from_numpy(self._numpy(np.ascontiguousarray(host))).to(pixels.device)
        height, width = pixels.shape[1:3]
        out = torch.empty_like(pixels)
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start:start + self.batch_size].contiguous()
            # The same kernels as to_batch/to_frames once the frames are uploaded.
            x = kernels.to_model_input(chunk, dtype=torch.float32, multiple=SIZE_MULTIPLE)
            out[start:start + len(chunk)] = kernels.from_model_output(self._infer(x), height, width)
        return out

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        # Prepared for the full batch size, as the pipeline does, so a short last batch reuses it.
        self.backend.prepare(self.batch_size, x.shape[-2], x.shape[-1])
        return self.backend.infer(x)


def _check(frames) -> bool:
    """Whether ``frames`` is one frame (else a batch); raises TranslateError for anything else."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise TranslateError(f"Translator takes uint8 tensors, got {frames.dtype}; convert with "
                                 "(x * 255).round().to(torch.uint8) from a [0, 1] float")
    elif isinstance(frames, np.ndarray):
        if frames.dtype not in _DEPTHS:
            raise TranslateError(f"Translator takes uint8 (or uint16) arrays, got {frames.dtype}; convert "
                                 "with (x * 255).round().astype(np.uint8) from a [0, 1] float")
    else:
        raise TranslateError(f"Translator takes a numpy array or a torch tensor, got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if len(shape) not in (3, 4) or shape[-1] != 3 or 0 in shape[-3:]:
        raise TranslateError(f"Translator takes RGB frames (H, W, 3) or batches (N, H, W, 3), got shape {shape}")
    return len(shape) == 3
