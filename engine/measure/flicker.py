"""``gtacity eval flicker``: how much a translated video flickers, given the motion in its input.

The measure is the warping error of Lai et al., "Learning Blind Video Temporal Consistency" (ECCV
2018). For every pair of consecutive frames ``t, t+1``, optical flow and an occlusion mask are
computed on the INPUT video; the OUTPUT frame ``t+1`` is warped back onto ``t`` along that flow and
compared with output frame ``t`` where the mask says the flow is reliable::

    E_pair(t) = sum_x M_t(x) * ||O_t(x) - warp(O_{t+1})(x)||^2 / (3 * sum_x M_t(x))   (RGB in [0, 1])
    E_warp    = mean over the pairs of E_pair(t)

Motion the flow explains costs nothing; what changes without moving (colours, textures popping from
frame to frame) does. The same measure of the input itself is reported next to it, as a reference:
what the scene itself scores (flow errors, lighting changes, codec noise). It is not a floor: a
remedy that blends frames (``--temporal flow``) smooths those too and can score below it.

::

    from gtacity.engine import FlickerConfig, evaluate_flicker
    report = evaluate_flicker(FlickerConfig("drive.mp4", "drive_city.mp4", plot="flicker.png"))
    print(report.summary())

Both videos are streamed side by side: two frames of each are held at a time, whatever the length.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from gtacity.engine.media.sources import open_source
from gtacity.engine.temporal.optical_flow import PRESETS, FlowPair, grey, warp
from gtacity.errors import GtacityError
from gtacity.files import written_whole
from gtacity.images import IMAGE_EXTENSIONS


class FlickerError(GtacityError):
    """Two videos that cannot be compared frame by frame; the message says why and what to do."""


@dataclass
class FlickerReport:
    """The warping error of an output video and of its input.

    Attributes:
        input, output: the two videos (or image folders) compared.
        frames: frames in each.
        output_error: E_warp of the output (mean over pairs).
        input_error: E_warp of the input with the same flow and masks: the reference (not a floor).
        output_curve, input_curve: E_pair(t) for each pair ``t, t+1``.
        reliable: mean fraction of pixels the occlusion masks kept.
    """

    input: str
    output: str
    frames: int = 0
    output_error: float = 0.0
    input_error: float = 0.0
    output_curve: list[float] = field(default_factory=list)
    input_curve: list[float] = field(default_factory=list)
    reliable: float = 0.0

    @property
    def excess(self) -> float:
        """Output error over the input's own (1.0: as much as the scene itself; below 1 is possible)."""
        return self.output_error / self.input_error if self.input_error > 0 else float("inf")

    def summary(self) -> str:
        """Three lines for a terminal."""
        return (
            f"warping error  {self.output_error:.6f}  {self.output}\n"
            f"input itself   {self.input_error:.6f}  {self.input}  (output / input: {self.excess:.2f})\n"
            f"{self.frames} frames, {len(self.output_curve)} pairs, "
            f"{100 * self.reliable:.1f}% of pixels with reliable flow"
        )

    def to_json(self) -> str:
        """Everything above, as one JSON object (curves included; ``excess`` null when the input's is 0)."""
        excess = self.excess if np.isfinite(self.excess) else None  # a still input scores 0
        return json.dumps({**asdict(self), "excess": excess}, indent=2)


@dataclass(frozen=True)
class FlickerConfig:
    """One ``gtacity eval flicker`` job.

    Attributes:
        input: the video (or image folder) that was translated; the flow comes from it.
        output: its translation.
        plot: also draw the per-pair curves into this image file (PNG); None draws nothing.
        preset: DIS preset (see :data:`gtacity.engine.temporal.optical_flow.PRESETS`); "medium" is the accurate one.
        progress: a frame counter on stderr.
    """

    input: str | Path
    output: str | Path
    plot: str | Path | None = None
    preset: str = "medium"
    progress: bool = True


def evaluate_flicker(cfg: FlickerConfig) -> FlickerReport:
    """Measure (and plot, if asked) the warping error of ``cfg.output`` against ``cfg.input``.

    The plot path is checked before any work: it must have an image extension (so it can never be
    one of the two videos).

    Raises:
        GtacityError: unreadable or mismatched videos, a plot path that cannot be used.
    """
    if cfg.preset not in PRESETS:
        raise FlickerError(f"unknown flow preset {cfg.preset!r}; choose {', '.join(PRESETS)}")
    if cfg.plot is not None:
        plot = Path(cfg.plot)
        if plot.suffix.lower() not in IMAGE_EXTENSIONS:
            raise FlickerError(f"{plot}: the plot is an image; give it a .png name")
    # delay: a file refused at once leaves its one error line alone on stderr, without a bar.
    with tqdm(unit="frame", disable=not cfg.progress, desc="flicker", dynamic_ncols=True, delay=1.0) as bar:
        report = measure_flicker(cfg.input, cfg.output, preset=cfg.preset, on_frame=bar.update)
    if cfg.plot is not None:
        plot_curves(report, cfg.plot)
    return report


def pair_error(frame: np.ndarray, warped_next: np.ndarray, mask: np.ndarray) -> float:
    """E_pair: mean squared RGB difference in [0, 1] units over the pixels where ``mask`` holds.

    Args:
        frame, warped_next: ``(H, W, 3)`` uint8; the second already warped onto the first.
        mask: ``(H, W)`` bool; an empty mask counts every pixel, as Lai et al.'s code does.
    """
    diff = (frame.astype(np.float32) - warped_next.astype(np.float32)) / 255.0
    squared = np.square(diff).sum(-1)  # (H, W)
    if not mask.any():
        return float(squared.mean() / 3)
    return float(squared[mask].mean() / 3)


def measure_flicker(
    input: str | Path,
    output: str | Path,
    *,
    preset: str = "medium",
    on_frame: Callable[[int], None] | None = None,
) -> FlickerReport:
    """Warping error of ``output`` (a translation of ``input``), next to that of ``input``.

    Args:
        input: the video (or image folder) that was translated; the flow comes from it.
        output: its translation, frame for frame (same count, same size).
        preset: DIS preset, a key of :data:`gtacity.engine.temporal.optical_flow.PRESETS`.
        on_frame: called with 1 after each frame (progress bars).

    Raises:
        GtacityError: a file that cannot be read (SourceError), or two videos that do not match
            frame for frame (FlickerError).
    """
    report = FlickerReport(str(input), str(output))
    flow = FlowPair(preset)
    masks: list[float] = []
    previous = None  # (input frame, input grey, output frame) of frame t
    with open_source(input) as src, open_source(output) as out:
        inputs, outputs = iter(src), iter(out)
        while (fin := next(inputs, None)) is not None and (fout := next(outputs, None)) is not None:
            _check_sizes(report.frames, fin.image, fout.image, report)
            current = (fin.image, grey(fin.image), fout.image)
            if previous is not None:
                forward, reliable = flow(previous[1], current[1])
                masks.append(float(reliable.mean()))
                report.input_curve.append(pair_error(previous[0], warp(current[0], forward), reliable))
                report.output_curve.append(pair_error(previous[2], warp(current[2], forward), reliable))
            previous = current
            report.frames += 1
            if on_frame:
                on_frame(1)
        if fin is not None or next(outputs, None) is not None:
            longer, shorter = (input, output) if fin is not None else (output, input)
            raise FlickerError(
                f"{longer}: has more frames than {shorter}, which ends after {report.frames}; "
                "compare a translation with the very input it was made from"
            )
    if report.frames < 2:
        raise FlickerError(f"{input}: has {report.frames} frame(s); flicker needs at least 2")
    report.output_error = float(np.mean(report.output_curve))
    report.input_error = float(np.mean(report.input_curve))
    report.reliable = float(np.mean(masks))
    return report


def _check_sizes(index: int, a: np.ndarray, b: np.ndarray, report: FlickerReport) -> None:
    if a.shape != b.shape:
        size = lambda im: f"{im.shape[1]}x{im.shape[0]}"  # noqa: E731
        raise FlickerError(
            f"{report.output}: frame {index} is {size(b)} but {report.input} has {size(a)}; "
            "compare a translation with the very input it was made from"
        )


# Line colours (BGR, what OpenCV draws with), in the order curves are given; the last is grey for
# the input itself.
_PALETTE = ((40, 90, 230), (200, 120, 30), (60, 160, 60), (150, 60, 160))
_FLOOR_BGR, _INK = (150, 150, 150), (40, 40, 40)


def plot_curves(report: FlickerReport, path: str | Path) -> Path:
    """Draw E_pair(t) of the output and of the input itself as a PNG; see :func:`draw_curves`."""
    return draw_curves({"output": report.output_curve}, report.input_curve, path)


def draw_curves(
    curves: dict[str, list[float]], floor: list[float], path: str | Path, size: tuple[int, int] = (900, 320)
) -> Path:
    """Draw per-pair warping-error curves against the frame pair, with OpenCV (no plotting deps).

    Args:
        curves: label -> E_pair(t), one line each (at most four); the legend shows each mean.
        floor: E_pair(t) of the input, drawn in grey.
        path: the image file to write (its extension picks the format).
        size: ``(width, height)`` in pixels.

    Raises:
        FlickerError: the image cannot be written there.
    """
    width, height = size
    left, right, top, bottom = 78, 20, 26 + 18 * len(curves), 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    peak = max(max(c) for c in (*curves.values(), floor)) * 1.1 or 1.0
    pairs = len(floor)

    def point(i: int, value: float) -> tuple[int, int]:
        x = left + (width - left - right) * (i / max(pairs - 1, 1))
        y = height - bottom - (height - top - bottom) * (value / peak)
        return int(round(x)), int(round(y))

    for k in range(5):  # horizontal grid with the error scale
        value = peak * k / 4
        y = point(0, value)[1]
        cv2.line(canvas, (left, y), (width - right, y), (225, 225, 225), 1)
        _text(canvas, f"{value:.4f}", (6, y + 4))
    for i in range(0, pairs, max(1, pairs // 10)):
        _text(canvas, str(i), (point(i, 0)[0] - 4, height - bottom + 18))
    _text(canvas, "frame pair t, t+1", (width // 2 - 60, height - 6))
    lines = [("input itself", floor, _FLOOR_BGR)] + [
        (label, curve, colour) for (label, curve), colour in zip(curves.items(), _PALETTE)
    ]
    for row, (label, curve, colour) in enumerate(lines):
        points = np.array([point(i, v) for i, v in enumerate(curve)], np.int32)
        cv2.polylines(canvas, [points], False, colour, 2, cv2.LINE_AA)
        _text(canvas, f"{label}  E_warp {np.mean(curve):.5f}", (left + 8, 18 + 18 * row), colour)
    path = Path(path)
    try:
        with written_whole(path) as partial:
            if not cv2.imwrite(str(partial), canvas):
                raise FlickerError(f"{path}: the plot could not be written; use a .png name in a writable folder")
    except OSError as e:
        raise FlickerError(f"{path}: the plot could not be written ({e.strerror}); choose a writable folder") from None
    return path


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], colour=_INK) -> None:
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
