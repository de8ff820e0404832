"""``gtacity translate --preview N``: a look at what a job would give, before running it.

N frames spread evenly over the input (a video's slice, when ``--start``/``--duration`` say which
part; the images of a folder) are translated with the job's own backend and precision and written
side by side, input | translation, one frame a row, into one PNG (``-o``), at their own size; no
video is written. A video is not decoded through: each frame is reached by seeking to it.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from gtacity.engine.backends import Backend
from gtacity.engine.frames import Frame
from gtacity.engine.media.sources import ImageFolderSource, open_source, read_image
from gtacity.engine.media.window import Window
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.errors import GtacityError
from gtacity.files import written_whole


class PreviewError(GtacityError):
    """A preview that cannot be made as asked."""


def write_preview(source: Path, output: Path, count: int, window: Window | None, backend: Backend,
                  overwrite: bool = False) -> tuple[int, float]:
    """Translate ``count`` frames spread over ``source`` and write input | translation rows to ``output``.

    Returns:
        (frames in the preview, seconds the whole preview took).

    Raises:
        PreviewError: ``output`` is not a .png, exists without ``overwrite``, or is the input.
        GtacityError: (subclasses) an unreadable input.
    """
    started = time.perf_counter()
    _check_output(source, output, count, overwrite)
    rows = []
    for frame in _frames(source, count, window):
        x = to_batch([frame], backend.device)
        backend.prepare(1, x.shape[-2], x.shape[-1])
        translated = to_frames(backend.infer(x), [frame])[0]
        rows.append(np.concatenate([_eight_bit(frame.image), _eight_bit(translated.image)], axis=1))
    width = max(row.shape[1] for row in rows)
    sheet = np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows])
    with written_whole(output) as partial:
        if not cv2.imwrite(str(partial), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise PreviewError(f"{output}: could not be written; check free disk space and permissions")
    return len(rows), time.perf_counter() - started


def _check_output(source: Path, output: Path, count: int, overwrite: bool) -> None:
    if count < 1:
        raise PreviewError(f"--preview must be at least 1 frame, got {count}")
    if output.suffix.lower() != ".png":
        raise PreviewError(f"{output}: with --preview, -o names the preview picture; name it .png")
    if output.resolve() == source.resolve():
        raise PreviewError(f"{output}: is the input, which gtacity never replaces; choose another output path")
    if output.exists() and not overwrite:
        raise PreviewError(f"{output}: already exists; pass --overwrite to replace it")


def _frames(source: Path, count: int, window: Window | None) -> list[Frame]:
    """``count`` frames spread evenly over a video's window, a folder's images, or the one image."""
    with open_source(source, window=window) as opened:
        kind, total = opened.kind, len(opened)
        if kind == "image":
            return [next(iter(opened))]
        if kind == "images":
            return [_image(opened, index) for index in _spread(len(opened.files), count)]
        start, rate = (window or Window()).start, opened.rate
    frames = []
    for index in _spread(max(total, 1), count):  # each reached by a seek, never decoded through
        with open_source(source, window=Window(start=start + Fraction(index) / rate, max_frames=1)) as one:
            frames += list(one)
    return frames


def _spread(total: int, count: int) -> list[int]:
    """The middle (rounded down) of each of ``count`` equal stretches of ``total`` items."""
    return sorted({(2 * i + 1) * total // (2 * count) for i in range(count)})


def _image(folder: ImageFolderSource, index: int) -> Frame:
    image, alpha = read_image(folder.path / folder.files[index])
    return Frame(image, index, meta=folder.files[index], alpha=alpha)


def _eight_bit(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.rint(image / 257.0).astype(np.uint8)
