"""``translate``: the one call behind ``gtacity translate`` (and any script that wants the same job).

::

    from gtacity.engine.translate import TranslateConfig, translate
    report = translate(TranslateConfig("drive.mp4", "out.mp4"))
    print(report.summary())
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from gtacity.checkpoint import DIRECTIONS, GeneratorInfo, bundled_generator, load_generator
from gtacity.engine.backends import create_backend
from gtacity.engine.int8 import calibration_frames
from gtacity.engine.pipeline import StageTimes, run_pipeline
from gtacity.engine.sinks import open_sink
from gtacity.engine.sources import open_source
from gtacity.errors import GtacityError


class TranslateError(GtacityError):
    """A translate job that cannot start as asked."""


@dataclass(frozen=True)
class TranslateConfig:
    """One translation job.

    Attributes:
        input: a video, a folder tree of images, or one image.
        output: a video file, a folder (mirrors the input tree), or an image file.
        direction: ``gta2city`` or ``city2gta``; None takes the generator file's own (gta2city for
            official files, which do not record it).
        weights: a generator file (ours or an official ``latest_net_G_*.pth``); None uses the
            bundled demo generator for ``direction``.
        backend, precision, device: see :func:`gtacity.engine.backends.create_backend`.
        batch_size: frames per inference call; None picks 1 on the CPU (bigger batches gain nothing
            on a few cores and cost memory) and 8 on CUDA.
        streams: batches in flight at once (on CUDA each on its own CUDA stream, so copies and
            compute of different batches overlap); None = 3. Must be at least 1.
        crf, preset: libx264 quality and speed for video output.
        overwrite: replace an existing output (never the input).
        progress: show a progress bar on stderr.
        calibration: int8 only: a video, image folder or image to calibrate on; None = the job's
            own input (up to 32 frames spread over it; see :mod:`gtacity.engine.int8`).
    """

    input: str | Path
    output: str | Path
    direction: str | None = None
    weights: str | Path | None = None
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    streams: int | None = None
    crf: int = 18
    preset: str = "medium"
    overwrite: bool = False
    progress: bool = True
    calibration: str | Path | None = None


@dataclass(frozen=True)
class TranslateReport:
    """What a finished job did."""

    output: Path
    frames: int
    times: StageTimes
    backend: str
    precision: str
    generator: GeneratorInfo

    def summary(self) -> str:
        """One line: frames, seconds, fps, backend, precision, output."""
        t = self.times
        return (
            f"translated {self.frames} frame{'s' * (self.frames != 1)} in {t.wall:.1f} s "
            f"({t.fps:.2f} fps) with {self.backend} {self.precision} -> {self.output}"
        )


def translate(cfg: TranslateConfig) -> TranslateReport:
    """Translate ``cfg.input`` into ``cfg.output``; the output appears only when complete.

    Raises:
        GtacityError: (subclasses) bad input, refused output, weights that don't fit, a backend
            that can't run here. Nothing that looks finished is left at the output path.
    """
    if cfg.direction is not None and cfg.direction not in DIRECTIONS:
        raise TranslateError(f"unknown direction {cfg.direction!r}; choose {' or '.join(DIRECTIONS)}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise TranslateError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.streams is not None and cfg.streams < 1:
        raise TranslateError(f"--streams must be at least 1, got {cfg.streams}")
    net, info = _generator(cfg)
    backend = create_backend(cfg.backend, net, precision=cfg.precision, device=cfg.device)
    _calibrate(backend, cfg)
    batch_size = cfg.batch_size or (8 if backend.device.type == "cuda" else 1)
    with open_source(cfg.input) as source:
        sink = open_sink(cfg.output, source, overwrite=cfg.overwrite, crf=cfg.crf, preset=cfg.preset)
        total = len(source)
        with tqdm(total=total, unit="frame", disable=not cfg.progress or total < 2, dynamic_ncols=True,
                  desc=f"{info.direction} {backend.name}") as bar:
            times = run_pipeline(source, sink, backend, batch_size=batch_size, streams=cfg.streams,
                                 on_frames=bar.update)
    return TranslateReport(Path(sink.path), times.frames, times, backend.name, backend.precision, info)


def _calibrate(backend, cfg: TranslateConfig) -> None:
    """Quantised precisions: calibrate on the job's frames and say how close to fp32 they come."""
    if not backend.needs_calibration():
        if cfg.calibration is not None:
            raise TranslateError(f"--calibration is for --precision int8; this job runs {backend.precision}")
        return
    backend.calibrate(calibration_frames(cfg.calibration or cfg.input))
    print(backend.int8_check.line(), file=sys.stderr)


def _generator(cfg: TranslateConfig):
    weights = cfg.weights
    if weights is None:
        direction = cfg.direction or "gta2city"
        weights = bundled_generator(direction)
        if weights is None:
            raise TranslateError(
                f"no bundled {direction} generator in this installation; pass --weights FILE "
                "(a run's gta2city.safetensors from `gtacity train`, or an official latest_net_G_A.pth)"
            )
    net, info = load_generator(weights, direction=cfg.direction)
    if info.direction is None:  # an official file and no --direction: the project's default
        info = replace(info, direction="gta2city")
    return net, info

