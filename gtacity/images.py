"""Image files as the engine and the trainer both read them.

OpenCV decodes a file cut short without a word (a JPEG's missing lower half comes back grey), so
every file is first checked to be whole: its format's own end marker must be there (PNG's IEND
chunk, JPEG's EOI marker after the last scan, a RIFF or BMP file as long as its header says;
libtiff itself refuses a short TIFF).

A file's pixel count is read from its header before anything is decoded (:func:`image_size`), so a
caller can refuse a "memory bomb" (a few KB of PNG declaring 20000x20000 pixels, gigabytes once
decoded) before OpenCV allocates it; OpenCV's own cap (``CV_IO_MAX_IMAGE_PIXELS``, 2^30 pixels)
raises instead of returning None, and is reported like any unreadable file.
"""

from __future__ import annotations

import re
import struct
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


class ImageTooLargeError(ImageDecodeError):
    """An image whose header declares more pixels than the caller allows; nothing was decoded.

    Attributes:
        width, height: the size the header declares.
    """

    def __init__(self, width: int, height: int, max_pixels: int):
        super().__init__(f"{width}x{height} pixels, more than the {max_pixels} allowed")
        self.width, self.height = width, height


def decode_rgb(path: str | Path) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB (grey and 16-bit converted, alpha dropped), or None when the file is
    missing, damaged, cut short or not an image OpenCV can decode."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if cut_short(data):
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # over OpenCV's own pixel cap
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_full(path: str | Path, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """An image at its full depth: ``(H, W, 3)`` RGB and the ``(H, W)`` alpha plane or None, both
    uint8, or both uint16 for 16-bit files. Grey becomes RGB. JPEG orientation (EXIF) is applied.

    Args:
        path: the file.
        max_pixels: refuse, before decoding, a file whose header declares more pixels, or whose
            size cannot be read from its header (another format than those gtacity reads, which
            could hide a memory bomb); None decodes anything OpenCV accepts.

    Raises:
        OSError: the file cannot be read.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ImageDecodeError: damaged, cut short, over OpenCV's pixel cap, or samples that are not
            8/16-bit integers.
    """
    data = Path(path).read_bytes()
    reason = cut_short(data)
    if reason:
        raise ImageDecodeError(reason)
    if max_pixels is not None:
        size = image_size(data)
        if size is None:
            raise ImageDecodeError("not a PNG, JPEG, WebP, BMP or TIFF file")
        if size[0] * size[1] > max_pixels:
            raise ImageTooLargeError(*size, max_pixels)
    # JPEG holds neither alpha nor 16 bits; decoding it as colour keeps OpenCV's EXIF rotation,
    # which IMREAD_UNCHANGED skips.
    flags = cv2.IMREAD_COLOR if data[:2] == b"\xff\xd8" else cv2.IMREAD_UNCHANGED
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. "pixels <= CV_IO_MAX_IMAGE_PIXELS": OpenCV's own cap
        raise ImageDecodeError(f"OpenCV refuses it: {_opencv_reason(e)}") from None
    if pixels is None:
        raise ImageDecodeError("damaged, or a format OpenCV cannot decode")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageDecodeError(f"{pixels.dtype} samples; save it as an 8- or 16-bit image")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    alpha = pixels[:, :, -1].copy() if channels in (2, 4) else None
    colour = pixels[:, :, : 3 if channels >= 3 else 1]
    rgb = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB if channels >= 3 else cv2.COLOR_GRAY2RGB)
    return rgb, alpha


def _opencv_reason(error: Exception) -> str:
    """The assertion of an OpenCV error (``pixels <= CV_IO_MAX_IMAGE_PIXELS``), not its source path."""
    text = " ".join(str(error).split())
    found = re.search(r"error: \([^)]*\) (.*?) in function", text)
    return found[1] if found else text


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the header of a PNG, JPEG, WebP, BMP or TIFF file declares it (the
    first page of a TIFF, as OpenCV decodes), or None for another format or a header cut short.
    Nothing is decoded."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] == b"BM":
            header = int.from_bytes(data[14:18], "little")
            if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sides
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height: rows stored top-down
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_size(data)
    except (struct.error, IndexError):
        return None
    return None


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): all but DHT (C4),
# JPG (C8) and DAC (CC) of C0..CF.
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
        elif marker in _SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8 ":  # lossy: 14-bit sides after the frame tag and start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L":  # lossless: 14-bit sides minus one, packed after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: the canvas, 24-bit sides minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 8-byte offsets and counts
    if big:
        (offset,) = struct.unpack(order + "Q", data[8:16])
        (count,) = struct.unpack(order + "Q", data[offset : offset + 8])
        first, step, value_at = offset + 8, 20, 12
    else:
        (offset,) = struct.unpack(order + "I", data[4:8])
        (count,) = struct.unpack(order + "H", data[offset : offset + 2])
        first, step, value_at = offset + 2, 12, 8
    sides = {}
    for entry in range(first, first + step * min(count, 4096), step):
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG (LONG8 in BigTIFF)
            code = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if code is None:
                return None
            (sides[tag],) = struct.unpack_from(order + code, data, entry + value_at)
    return (sides[256], sides[257]) if len(sides) == 2 else None


def write_image_file(path: str | Path, pixels: np.ndarray, params: tuple[int, ...] = ()) -> None:
    """Encode ``pixels`` (OpenCV's layout: BGR, BGRA or grey) in the format ``path``'s extension
    names and write them there.

    Encoded in memory and written by Python, so any name the file system takes works:
    ``cv2.imwrite`` crashes the process on a name that is not valid UTF-8.

    Raises:
        OSError: the file cannot be written (disk full, read-only, no permission).
        ValueError: OpenCV cannot encode these pixels in that format.
    """
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, pixels, list(params))
    except cv2.error as e:
        raise ValueError(_opencv_reason(e)) from None
    if not ok:
        raise ValueError(f"OpenCV cannot write {path.suffix} images")
    with open(path, "wb") as file:
        file.write(encoded)


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
