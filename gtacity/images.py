"""Image files as the engine and the trainer both read them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# The formats gtacity reads and writes, matched case-insensitively.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def decode_rgb(path: str | Path) -> np.ndarray | None:
    """``(H, W, 3)`` uint8 RGB (grey and 16-bit converted, alpha dropped), or None when the file is
    missing, damaged or not an image OpenCV can decode."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
