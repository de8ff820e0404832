"""Image files as the engine and the trainer both read them.

OpenCV decodes a file cut short without a word (a JPEG's missing lower half comes back grey), so
every file is first checked to be whole: its format's own end marker must be there (PNG's IEND
chunk, JPEG's EOI marker after the last scan, a RIFF or BMP file as long as its header says;
libtiff itself refuses a short TIFF).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

# The formats gtacity reads and writes, matched case-insensitively.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# Formats whose files can hold an alpha channel / 16-bit samples (OpenCV's writers).
ALPHA_EXTENSIONS = (".png", ".webp", ".tif", ".tiff")
DEEP_EXTENSIONS = (".png", ".tif", ".tiff")
# Containers gtacity writes video into (libx264 output can live in them).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov")


class ImageDecodeError(ValueError):
    """An image file that is damaged, cut short or of a kind gtacity does not translate."""


def decode_rgb(path: str | Path) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB (grey and 16-bit converted, alpha dropped), or None when the file is
    missing, damaged, cut short or not an image OpenCV can decode."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if cut_short(data):
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_full(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An image at its full depth: ``(H, W, 3)`` RGB and the ``(H, W)`` alpha plane or None, both
    uint8, or both uint16 for 16-bit files. Grey becomes RGB. JPEG orientation (EXIF) is applied.

    Raises:
        OSError: the file cannot be read.
        ImageDecodeError: damaged, cut short, or samples that are not 8/16-bit integers.
    """
    data = Path(path).read_bytes()
    reason = cut_short(data)
    if reason:
        raise ImageDecodeError(reason)
    # JPEG holds neither alpha nor 16 bits; decoding it as colour keeps OpenCV's EXIF rotation,
    # which IMREAD_UNCHANGED skips.
    flags = cv2.IMREAD_COLOR if data[:2] == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if pixels is None:
        raise ImageDecodeError("not a readable image")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(f"{pixels.dtype} samples; save it as an 8- or 16-bit image")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    alpha = pixels[:, :, -1].copy() if channels in (2, 4) else None
    colour = pixels[:, :, : 3 if channels >= 3 else 1]
    rgb = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB if channels >= 3 else cv2.COLOR_GRAY2RGB)
    return rgb, alpha


def cut_short(data: bytes) -> str | None:
    """Why ``data`` is not a whole image file of its format, or None when it is (or the format has
    no check here)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if _png_whole(data) else "cut short (no IEND chunk at the end of the PNG)"
    if data.startswith(b"\xff\xd8"):
        return None if _jpeg_whole(data) else "cut short (the JPEG ends before its EOI marker)"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = int.from_bytes(data[4:8], "little") + 8
        return None if len(data) >= size else f"cut short ({len(data)} of {size} bytes)"
    if data[:2] == b"BM":
        size = int.from_bytes(data[2:6], "little")
        return None if len(data) >= size else f"cut short ({len(data)} of {size} bytes)"
    return None


def _png_whole(data: bytes) -> bool:
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos <= len(data)
    return False


# In entropy-coded data 0xFF is followed by 0x00 (a stuffed byte) or a restart marker; anything
# else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_whole(data: bytes) -> bool:
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xD9:  # EOI: anything after it (a phone's appended video) is not ours
            return True
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:  # start of scan: skip its entropy-coded data
                found = _NEXT_MARKER.search(data, pos)
                if found is None:
                    return False
                pos = found.start()
    return False
