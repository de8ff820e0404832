"""The frame shapes a generator graph takes (``NxCxHxW``), and the error every export raises."""

from __future__ import annotations

from gtacity.errors import GtacityError
from gtacity.nets import MAX_SIDE, MIN_SIZE, SIZE_MULTIPLE


class ExportError(GtacityError):
    """An export that cannot run as asked (bad shape, output refused, a package missing)."""


def parse_shape(text: str, what: str = "--shape") -> tuple[int, int, int, int]:
    """``"8x3x512x1024"`` -> ``(8, 3, 512, 1024)`` (batch, channels, height, width).

    Raises:
        ExportError: not four whole numbers, or a shape the generator cannot take.
    """
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ExportError(f"{what} {text!r}: use NxCxHxW, e.g. 8x3x512x1024")
    shape = tuple(int(p) for p in parts)
    check_frame_shape(shape, what)  # type: ignore[arg-type]
    return shape  # type: ignore[return-value]


def check_frame_shape(shape: tuple[int, ...], what: str = "shape") -> None:
    """Raise :class:`ExportError` unless ``shape`` is ``(N >= 1, 3, H, W)`` with H, W multiples of 4."""
    text = "x".join(map(str, shape))
    if len(shape) != 4 or shape[0] < 1 or shape[1] != 3:
        raise ExportError(f"{what} {text}: the generator takes N x 3 x H x W with N >= 1")
    for side in shape[2:]:
        if side % SIZE_MULTIPLE or not MIN_SIZE <= side <= MAX_SIDE:
            raise ExportError(f"{what} {text}: height and width must be multiples of {SIZE_MULTIPLE} "
                              f"from {MIN_SIZE} to {MAX_SIDE} (frames are padded to that)")
