"""Huge frames through a generator with a memory appetite: :class:`TiledBackend` wraps any backend.

(Tiny and odd-sized frames are the batch conversion's business: :mod:`gtacity.engine.stream.convert`.)

Inference memory grows with the pixel count (about
  ``24 * ngf`` bytes per pixel on the CPU, measured), so a 9000x6000 photo would need ~27 GB with
  the demo generator. Such frames are translated in overlapping square tiles whose overlaps are
  blended with linear ramps and normalised weights; the generator only ever sees one tile batch,
  so its memory follows the tile, and the rest follows the image (its float input and output).
  It wraps the backend, so the pipeline needs no change: ``translate`` is the one caller.

InstanceNorm normalises each tile with its own statistics, so a tiled translation is not the
untiled one: on a real frame the colours differ from the whole-frame translation by ~25 levels
(mean, 8-bit) with tiles of 512, and the ramps hide the seams (see benchmarks/RESULTS.md). Tiling
is therefore used only where a frame cannot be translated whole within the memory budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from gtacity.nets import SIZE_MULTIPLE

# Peak inference memory per pixel and per unit of generator width (ngf), fp32 on the CPU: measured
# 12-23 bytes (torch and OpenVINO, ngf 8 and 32, 1-4 Mpx); rounded up to stay on the safe side.
BYTES_PER_NGF_PIXEL = 24
# Above this estimated need for one frame, translate tiles unless the user chose (--tile).
MEMORY_BUDGET = 4 * 2**30
DEFAULT_TILE = 1024
# Overlap between neighbouring tiles, in pixels. Measured on a real 2048x1024 Cityscapes frame
# (benchmarks/tile_seams.py, tiles of 512): without overlap a seam is a 22-level step; with 32 or
# 64 px of ramp it is under 1 level more than the whole-frame picture has there. 64 leaves margin.
DEFAULT_OVERLAP = 64
# What a frame costs outside the generator, per pixel: the decoded file and its RGB copy, the float32
# batch in and out, the uint8 translation and the encoder's copy. Measured 54-60 bytes (peak RSS over
# a 64x48 run; 8-bit PNGs of 12 and 24 Mpx, tiles of 512); 16-bit frames cost more.
FRAME_BYTES_PER_PIXEL = 64


@dataclass(frozen=True)
class Tiling:
    """When and how to tile.

    Attributes:
        tile: tile side in pixels (rounded down to a multiple of 4); None decides per frame from
            the memory estimate (tiles of :data:`DEFAULT_TILE` when one frame would need more than
            ``budget``); 0 never tiles.
        overlap: pixels shared by neighbouring tiles (clipped to half a tile).
        ngf: the generator's width, for the memory estimate.
        budget: bytes one frame's inference may take before tiles are used automatically.
    """

    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    ngf: int = 64
    budget: int = MEMORY_BUDGET

    def tile_for(self, height: int, width: int) -> int | None:
        """The tile side for a frame of this size, or None to translate it whole."""
        if self.tile == 0:
            return None
        if self.tile is None:
            if estimated_bytes(height, width, self.ngf) <= self.budget:
                return None
            tile = DEFAULT_TILE
        else:
            tile = self.tile - self.tile % SIZE_MULTIPLE
        return tile if max(height, width) > tile else None


def estimated_bytes(height: int, width: int, ngf: int) -> int:
    """Peak inference memory to translate one ``height`` x ``width`` frame whole (an estimate)."""
    return BYTES_PER_NGF_PIXEL * ngf * height * width


def max_frame_pixels(tiling: Tiling, free: int) -> int:
    """The most pixels one frame may have for its translation to fit in ``free`` bytes: the frame's
    own buffers plus the generator's memory for one tile (or for the whole frame when ``tiling``
    never tiles). Any bigger frame would exhaust the memory, so it is refused before decoding."""
    if tiling.tile == 0:
        return free // (FRAME_BYTES_PER_PIXEL + BYTES_PER_NGF_PIXEL * tiling.ngf)
    tile = DEFAULT_TILE if tiling.tile is None else tiling.tile
    inference = min(estimated_bytes(tile, tile, tiling.ngf), tiling.budget)
    return max(0, free - inference) // FRAME_BYTES_PER_PIXEL


class TiledBackend:
    """A backend that sends frames :meth:`Tiling.tile_for` picks through the wrapped backend in
    tiles; every other attribute is the wrapped backend's."""

    def __init__(self, backend, tiling: Tiling):
        self._backend, self._tiling = backend, tiling
        self._max_batch = 1

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def prepare(self, max_batch: int, height: int, width: int) -> None:
        """Prepare the wrapped backend for whole frames, or for tiles of a frame this size."""
        self._max_batch = max_batch
        tile = self._tiling.tile_for(height, width)
        if tile is None:
            self._backend.prepare(max_batch, height, width)
        else:
            self._backend.prepare(max_batch, min(tile, height), min(tile, width))

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> the translation, in tiles when the frame size calls for them."""
        tile = self._tiling.tile_for(x.shape[-2], x.shape[-1])
        if tile is None:
            return self._backend.infer(x)
        overlap = min(self._tiling.overlap, tile // 2)
        return torch.cat([infer_in_tiles(image[None], self._backend.infer, tile, overlap,
                                         self._max_batch) for image in x])


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of tiles of ``tile`` pixels covering ``length``, overlapping by at least
    ``overlap``; every tile is whole (the last one ends at ``length``)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(size: int, rising: bool, falling: bool, overlap: int) -> torch.Tensor:
    """1-D blend weights: linear ramps over the overlaps that have a neighbour, 1 elsewhere."""
    weights = torch.ones(size)
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    if rising and overlap:
        weights[:overlap] = ramp
    if falling and overlap:
        weights[-overlap:] = torch.minimum(weights[-overlap:], ramp.flip(0))
    return weights


def infer_in_tiles(
    x: torch.Tensor, infer: Callable[[torch.Tensor], torch.Tensor], tile: int, overlap: int,
    max_batch: int,
) -> torch.Tensor:
    """Translate one ``(1, 3, H, W)`` frame as overlapping tiles and blend them.

    Tile rows are processed top to bottom; output rows are normalised as soon as no later tile
    touches them, so the blending buffers hold one band of ``tile`` rows, never the whole frame.
    """
    _, channels, height, width = x.shape
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    out = torch.empty_like(x)
    carry = None  # (weighted sum, weights) of rows this band shares with the next one
    for r, y0 in enumerate(ys):
        acc = torch.zeros(channels, th, width, dtype=torch.float32, device=x.device)
        wsum = torch.zeros(1, th, width, dtype=torch.float32, device=x.device)
        if carry is not None:
            acc[:, : carry[0].shape[1]] += carry[0]
            wsum[:, : carry[1].shape[1]] += carry[1]
        wy = _ramp(th, r > 0, r < len(ys) - 1, overlap).to(x.device)
        tiles = [x[:, :, y0 : y0 + th, x0 : x0 + tw] for x0 in xs]
        done = torch.cat([infer(torch.cat(tiles[i : i + max_batch]))
                          for i in range(0, len(tiles), max_batch)])
        for c, x0 in enumerate(xs):
            wx = _ramp(tw, c > 0, c < len(xs) - 1, overlap).to(x.device)
            weights = (wy[:, None] * wx[None])[None]  # (1, th, tw)
            acc[:, :, x0 : x0 + tw] += weights * done[c].float()
            wsum[:, :, x0 : x0 + tw] += weights
        end = ys[r + 1] - y0 if r + 1 < len(ys) else th  # rows no later band touches
        out[0, :, y0 : y0 + end] = (acc[:, :end] / wsum[:, :end]).to(x.dtype)
        carry = (acc[:, end:], wsum[:, end:])
    return out
