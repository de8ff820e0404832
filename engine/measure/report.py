"""``gtacity eval report``: one self-contained HTML page to judge translations by eye and by number.

For a training run (every generator it saved) or a few generator files, the page shows:

* N fixed frames of a held-out set: input | translation | cycle reconstruction (translated, then
  back with the generator of the other direction: a run's own of the same step, else the bundled
  demo one) | a 1:1 detail, where a checkerboard shows that downscaled thumbnails hide;
* FID and KID of every generator against the real set, with "doing nothing" (the untranslated
  inputs) as a baseline, and for a run their curves over the training steps
  (:func:`~gtacity.engine.measure.realism_run.evaluate_run`, :class:`~gtacity.engine.measure.realism.Measurer`);
* the checkerboard scores (:mod:`gtacity.artifacts`);
* with a video, the flicker curve of each translation of it (a run: its best generator), by
  :func:`~gtacity.engine.measure.flicker.evaluate_flicker`;
* with a ``gtacity eval miou --json`` or ``gtacity eval segmentation`` result, its class IoUs.

The images are embedded as ``data:`` URIs and the charts are inline SVG: the page is one file that
fetches nothing (its Content-Security-Policy forbids it) and runs no script.

::

    from gtacity.engine import ReportConfig, build_report
    from gtacity.engine.measure.realism import RealismSettings
    build_report(ReportConfig(("runs/exp1",), "gta5/val", "report.html", RealismSettings(real="city/val")))
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gtacity.artifacts import peak_prominence, score_from
from gtacity.checkpoint import DIRECTIONS, bundled_generator, generator_path, load_generator, read_generator_file
from gtacity.engine.backends import Backend, create_backend
from gtacity.engine.frames import Frame
from gtacity.engine.measure.flicker import FlickerConfig, evaluate_flicker
from gtacity.engine.measure.realism import Measurer, RealismError, RealismSettings, compression_notes, frames, prepare
from gtacity.engine.measure.realism_run import (
    RunRealismConfig,
    evaluate_run,
    run_generators,
    score_generator,
    translate_frame,
)
from gtacity.engine.measure.report_page import Entry, PageData, Sample, image_uri, render_page
from gtacity.engine.measure.report_segmentation import read_segmentation
from gtacity.engine.translation import TranslateConfig, translate
from gtacity.files import written_whole
from gtacity.quality import psnr

_DETAIL = 96  # side of the 1:1 detail crop: 24 periods of a period-4 checkerboard


class ReportError(RealismError):
    """A report that cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ReportConfig:
    """One ``gtacity eval report``.

    Attributes:
        generators: one ``gtacity train``/``distill`` run folder, or generator files (or bundled
            names such as ``gta2city_demo``).
        images: held-out source-domain frames (folder, video or image): all are scored (at most
            ``settings.max_frames``), ``frames`` of them are shown.
        output: the page, an ``.html`` file (written whole or not at all; images embedded).
        settings: the real set, the feature network and the statistics, as for ``eval realism``.
        frames: frames shown per generator, spread evenly over ``images``.
        direction: with a run folder: which of its generators are judged.
        back: the generator that translates back for the cycle reconstruction; None: a run's own
            generator of the same step, else the bundled demo of the other direction.
        video: a source-domain clip: each generator's translation of it is measured for flicker
            (a run: only its best generator).
        segmentation: a JSON written by ``gtacity eval miou --json`` or ``gtacity eval segmentation``.
        backend, precision: as for ``translate``; the device is ``settings.device``.
        thumb_width: width in pixels of the shown frames.
        title: the page's heading.
    """

    generators: tuple[str, ...]
    images: str | Path
    output: str | Path
    settings: RealismSettings
    frames: int = 4
    direction: str = "gta2city"
    back: str | None = None
    video: str | Path | None = None
    segmentation: str | Path | None = None
    backend: str = "auto"
    precision: str = "auto"
    thumb_width: int = 320
    title: str = "gtacity translation report"


@dataclass(frozen=True)
class ReportSummary:
    """What was written: the page and what it holds."""

    output: Path
    generators: int
    frames_scored: int
    frames_shown: int
    best: str

    def line(self) -> str:
        """One line for the terminal."""
        return (f"report of {self.generators} generator{'s' * (self.generators != 1)} ({self.frames_scored} frames "
                f"scored, {self.frames_shown} shown; best by KID: {self.best}) -> {self.output}")


def build_report(cfg: ReportConfig) -> ReportSummary:
    """Translate, score and draw everything :class:`ReportConfig` asks for into one HTML page.

    Raises:
        GtacityError: (subclasses) an output that is not ``.html``, no generators, unreadable frames,
            weights or segmentation JSON, too few frames for FID/KID.
    """
    output = _check(cfg)
    segmentation = read_segmentation(cfg.segmentation) if cfg.segmentation is not None else None
    backs = {str(path): _back(cfg, path) for path in _generator_files(cfg)}  # a missing file fails before work
    measurer = prepare(cfg.settings)
    entries = _scored(cfg, measurer, backs)
    inputs = list(frames(cfg.images, cfg.settings.max_frames))
    baseline, n_inputs = measurer.score(measurer.features(inputs)), len(inputs)
    shown = [(int(i), inputs[int(i)]) for i in np.unique(np.linspace(0, len(inputs) - 1, cfg.frames).round())]
    del inputs
    loaded: dict[str, Backend] = {}
    entries = [_with_samples(e, shown, cfg, loaded) for e in entries]
    flicker = _flicker(cfg, entries) if cfg.video is not None else []
    net = measurer.net
    page = PageData(cfg.title, str(cfg.images), str(cfg.settings.real), len(measurer.real), net.description,
                    net.standard, tuple(entries), baseline, compression_notes(cfg.images, cfg.settings.real),
                    tuple(flicker), segmentation, _is_run(cfg), str(cfg.video) if cfg.video else None)
    with written_whole(output) as partial:
        partial.write_text(render_page(page), encoding="utf-8")
    best = next(e.label for e in entries if e.best)
    return ReportSummary(output, len(entries), n_inputs, len(shown), best)


def _check(cfg: ReportConfig) -> Path:
    output = Path(cfg.output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{output}: the report is an HTML page; give -o a .html name")
    if not cfg.generators:
        raise ReportError("give a training run folder or one or more generator files to report on")
    if cfg.frames < 1:
        raise ReportError(f"--frames {cfg.frames}: show at least 1 frame")
    if cfg.direction not in DIRECTIONS:
        raise ReportError(f"unknown direction {cfg.direction!r}; use gta2city or city2gta")
    if _is_run(cfg) and len(cfg.generators) > 1:
        raise ReportError(f"{cfg.generators[0]} is a run folder: report on one run at a time, "
                          "or give generator files only")
    for path in (cfg.images, cfg.settings.real, *([cfg.video] if cfg.video else [])):
        if Path(path).resolve() == output.resolve():
            raise ReportError(f"{output}: is one of the inputs; write the report elsewhere")
    return output


def _is_run(cfg: ReportConfig) -> bool:
    return len(cfg.generators) >= 1 and Path(cfg.generators[0]).is_dir()


def _generator_files(cfg: ReportConfig) -> list[Path]:
    if _is_run(cfg):
        return [path for _step, path in run_generators(cfg.generators[0], cfg.direction)]
    return [generator_path(name) for name in cfg.generators]


def _scored(cfg: ReportConfig, measurer: Measurer, backs: dict[str, str]) -> list[Entry]:
    """One entry per generator with its FID/KID and artifact summary, the best (by KID) marked."""
    s = cfg.settings
    if _is_run(cfg):
        run = evaluate_run(RunRealismConfig(cfg.generators[0], cfg.images, s, cfg.direction, cfg.backend,
                                            cfg.precision), measurer.net)
        return [Entry(f"step {r.step}", r.path, backs[r.path], r.distances, r.artifacts, i == run.best, r.step)
                for i, r in enumerate(run.rows)]
    input_peaks = [peak_prominence(im) for im in frames(cfg.images, s.max_frames)]
    entries = []
    for name in cfg.generators:
        path = generator_path(name)
        dist, art = score_generator(path, cfg.images, measurer, input_peaks, cfg.backend, cfg.precision)
        entries.append(Entry(str(name), str(path), backs[str(path)], dist, art, False))
    best = min(range(len(entries)), key=lambda i: entries[i].distances.kid)
    return [e if i != best else e.marked_best() for i, e in enumerate(entries)]


def _back(cfg: ReportConfig, path: Path) -> str:
    """The generator file that translates ``path``'s output back."""
    if cfg.back is not None:
        return str(generator_path(cfg.back))
    direction = read_generator_file(path)[1].direction or cfg.direction
    other = DIRECTIONS[1 - DIRECTIONS.index(direction)]
    sibling = path.with_name(path.name.replace(f"_{direction}.", f"_{other}."))
    if sibling != path and sibling.is_file():
        return str(sibling)
    shipped = bundled_generator(other)
    if shipped is None:
        raise ReportError(f"{path}: no {other} generator beside it to translate back with; pass --back FILE")
    return str(shipped)


def _backend(path: str, cfg: ReportConfig, loaded: dict[str, Backend]) -> Backend:
    """A backend for ``path``, kept while one generator's samples are made (the back one is shared)."""
    if path not in loaded:
        net, _info = load_generator(path)
        loaded[path] = create_backend(cfg.backend, net, precision=cfg.precision, device=cfg.settings.device)
    return loaded[path]


def _with_samples(entry: Entry, shown: list[tuple[int, np.ndarray]], cfg: ReportConfig,
                  loaded: dict[str, Backend]) -> Entry:
    """``entry`` with its shown frames translated, translated back, scored and encoded."""
    forward, back = _backend(entry.path, cfg, loaded), _backend(entry.back, cfg, loaded)
    samples = []
    for index, image in shown:
        out = translate_frame(forward, Frame(image, index))
        cycle = translate_frame(back, Frame(out, index))
        art = score_from(peak_prominence(image), peak_prominence(out)).score
        samples.append(Sample(index, image_uri(image, cfg.thumb_width), image_uri(out, cfg.thumb_width),
                              image_uri(cycle, cfg.thumb_width), _detail(image), _detail(out),
                              min(_DETAIL, image.shape[1]), art, _psnr(image, cycle)))
    for path in list(loaded):
        if path != entry.back:
            del loaded[path]  # a run's checkpoints are many: hold one generator at a time
    return entry.with_samples(tuple(samples))


def _detail(image: np.ndarray, side: int = _DETAIL) -> str:
    """The centre of ``image`` at 1:1 (the page shows it twice as large, pixels kept sharp)."""
    h, w = image.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image_uri(image[y:y + side, x:x + side], None, lossless=True)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of the cycle reconstruction against the input, in 8-bit units."""
    to = lambda im: torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None].double() / (
        65535.0 if im.dtype == np.uint16 else 255.0)
    return float(psnr(to(a), to(b))[0])


def _flicker(cfg: ReportConfig, entries: list[Entry]):
    """(label, FlickerReport) for each generator's translation of the video (a run: the best one)."""
    chosen = [e for e in entries if e.best] if _is_run(cfg) else entries
    results = []
    with tempfile.TemporaryDirectory(prefix="gtacity-report-") as tmp:
        for n, entry in enumerate(chosen):
            video = Path(cfg.video)
            out = Path(tmp) / f"translation_{n}{video.suffix if video.is_file() else ''}"  # a folder: a folder
            translate(TranslateConfig(cfg.video, out, weights=entry.path, backend=cfg.backend,
                                      precision=cfg.precision, device=cfg.settings.device,
                                      progress=cfg.settings.progress))
            results.append((entry.label, evaluate_flicker(FlickerConfig(cfg.video, out,
                                                                        progress=cfg.settings.progress))))
    return results
