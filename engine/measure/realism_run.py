"""``gtacity eval realism --run``: every generator a run saved, on one held-out set, best marked.

``gtacity train`` and ``gtacity distill`` keep one generator file per checkpoint
(``<run>/generators/step_XXXXXXXX_<direction>.safetensors``). Each is loaded once into one backend,
translates the same held-out frames in-process (decoded again per generator, so memory does not
grow with the set), and its translations are scored like ``gtacity eval realism GENERATED``: FID,
KID and the checkerboard check against their inputs, whose spectra are measured once. The real
set's features are computed (or read from the cache) once for all generators.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gtacity.artifacts import ArtifactScore, ArtifactSummary, peak_prominence, score_from
from gtacity.checkpoint import load_generator, step_generators
from gtacity.engine.backends import Backend, create_backend
from gtacity.engine.frames import Frame
from gtacity.engine.measure.features import RESIZE_MODE, SIZE, FeatureNet
from gtacity.engine.measure.realism import Distances, Measurer, RealismError, RealismSettings, frames, prepare
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.files import written_whole


@dataclass(frozen=True)
class RunRealismConfig:
    """One ``gtacity eval realism --run RUN --images DIR``.

    Attributes:
        run: a ``gtacity train`` or ``gtacity distill`` run folder.
        images: held-out source-domain frames (folder, video or image) every generator translates.
        settings: the real set, network and statistics (as for ``eval realism``).
        direction: which of the run's generators (``gta2city`` or ``city2gta``).
        backend, precision: as for ``translate``; the device is ``settings.device``.
        best_to: copy the best generator file here (refused if it exists).
        best_by: ``"kid"`` or ``"fid"``: the distance that picks the best.
        plot: draw KID, FID and artifact score per step into this PNG.
    """

    run: str | Path
    images: str | Path
    settings: RealismSettings
    direction: str = "gta2city"
    backend: str = "auto"
    precision: str = "auto"
    best_to: str | Path | None = None
    best_by: str = "kid"
    plot: str | Path | None = None


@dataclass(frozen=True)
class RunRow:
    """One saved generator's scores."""

    step: int
    path: str
    distances: Distances
    artifacts: ArtifactSummary | None

    def to_dict(self) -> dict:
        d = self.distances
        return {"step": self.step, "path": self.path, "fid": d.fid, "kid": d.kid, "kid_std": d.kid_std,
                "artifacts": self.artifacts.to_dict() if self.artifacts else None}


@dataclass(frozen=True)
class RunReport:
    """The table of a run: one row per saved generator, the best marked."""

    run: str
    images: str
    real: str
    rows: tuple[RunRow, ...]
    best: int
    best_by: str
    n_images: int
    n_real: int
    network: str
    weights_sha256: str
    standard_weights: bool
    best_to: str | None = None
    plot: str | None = None

    def to_dict(self) -> dict:
        """The JSON form: the rows, the best step, what was used."""
        return {"run": self.run, "images": self.images, "real": self.real, "n_images": self.n_images,
                "n_real": self.n_real, "best_step": self.rows[self.best].step, "best_by": self.best_by,
                "rows": [r.to_dict() for r in self.rows], "mode": RESIZE_MODE, "size": [SIZE, SIZE],
                "network": self.network, "weights_sha256": self.weights_sha256,
                "standard_weights": self.standard_weights, "best_to": self.best_to, "plot": self.plot}

    def format(self) -> str:
        """The table ``gtacity eval realism --run`` prints."""
        star = "" if self.standard_weights else "*"
        lines = [f"{len(self.rows)} generators of {self.run} on {self.n_images} frames of {self.images} "
                 f"vs {self.n_real} real ({self.real})",
                 f"  {'step':>8} {'FID' + star:>10} {'KID' + star + ' x1e3':>12} {'+-':>8} {'artifacts':>10}"]
        for i, r in enumerate(self.rows):
            d, a = r.distances, r.artifacts
            art = f"{a.mean:.2f}x" if a else "-"
            mark = f"  <- best ({self.best_by.upper()})" if i == self.best else ""
            lines.append(f"  {r.step:>8} {d.fid:>10.2f} {d.kid * 1e3:>12.2f} {d.kid_std * 1e3:>8.2f} {art:>10}{mark}")
        lines += ["KID is the one to trust on a few hundred frames; artifacts: the outputs' period-2/4 spectral "
                  "peaks over their inputs' (~1 = no checkerboard)", f"features   {self.network}"]
        if not self.standard_weights:
            lines.append("* not the published FID network: compare only with numbers from this same network")
        lines += [f"best generator copied to {self.best_to}"] if self.best_to else []
        return "\n".join(lines + ([f"plot: {self.plot}"] if self.plot else []))

    def write_json(self, path: str | Path) -> None:
        with written_whole(path) as partial:
            partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def run_generators(run: str | Path, direction: str) -> list[tuple[int, Path]]:
    """(step, file) of every generator of ``direction`` a run saved, by step."""
    found = step_generators(run, direction)
    if not found:
        raise RealismError(f"{run}: no generators/step_*_{direction}.safetensors; point --run at a "
                           "gtacity train or distill run folder (one generator is kept per --checkpoint-every)")
    return found


def evaluate_run(cfg: RunRealismConfig, net: FeatureNet | None = None) -> RunReport:
    """Score every saved generator of a run on ``cfg.images`` against the real set.

    ``net``: a feature network already built; None builds the one ``cfg.settings`` names.

    Raises:
        GtacityError: (subclasses) no generators, unreadable frames or weights, too few frames,
            an existing ``best_to``.
    """
    s = cfg.settings
    if cfg.best_to is not None and Path(cfg.best_to).exists():
        raise RealismError(f"{cfg.best_to} exists; remove it or choose another --best-to")
    found = run_generators(cfg.run, cfg.direction)
    measurer = prepare(s, net)
    input_peaks = [peak_prominence(im) for im in frames(cfg.images, s.max_frames)]
    rows = [RunRow(step, str(path), *score_generator(path, cfg.images, measurer, input_peaks, cfg.backend,
                                                     cfg.precision))
            for step, path in found]
    key = (lambda r: r.distances.kid) if cfg.best_by == "kid" else (lambda r: r.distances.fid)
    best = min(range(len(rows)), key=lambda i: key(rows[i]))
    if cfg.best_to is not None:
        with written_whole(cfg.best_to) as partial:
            shutil.copyfile(rows[best].path, partial)
    if cfg.plot is not None:
        draw_curves(rows, best, cfg.plot, standard=measurer.net.standard)
    return RunReport(str(cfg.run), str(cfg.images), str(s.real), tuple(rows), best, cfg.best_by,
                     len(input_peaks), len(measurer.real), measurer.net.description, measurer.net.sha256,
                     measurer.net.standard, str(cfg.best_to) if cfg.best_to else None,
                     str(cfg.plot) if cfg.plot else None)


def score_generator(path: str | Path, images: str | Path, measurer: Measurer, input_peaks: list[float],
                    backend: str = "auto", precision: str = "auto") -> tuple[Distances, ArtifactSummary | None]:
    """FID/KID and the checkerboard check of one generator file's translations of ``images``.

    Args:
        input_peaks: :func:`peak_prominence` of each frame of ``images`` (measured once for many
            generators), at most ``measurer.settings.max_frames`` of them.
    """
    net, _info = load_generator(path)
    runner = create_backend(backend, net, precision=precision, device=measurer.settings.device)
    scores: list[ArtifactScore] = []

    def outputs() -> Iterator[np.ndarray]:
        for n, image in enumerate(_translated(runner, images, measurer.settings.max_frames)):
            scores.append(score_from(input_peaks[n], peak_prominence(image)))
            yield image

    feats = measurer.features(outputs())
    return measurer.score(feats), ArtifactSummary.of(scores)


def _translated(backend: Backend, images: str | Path, max_frames: int | None) -> Iterator[np.ndarray]:
    """Each frame of ``images`` through ``backend``, one at a time."""
    with open_source(images) as source:
        for n, frame in enumerate(source):
            if max_frames is not None and n >= max_frames:
                return
            yield translate_frame(backend, frame)


def translate_frame(backend: Backend, frame: Frame) -> np.ndarray:
    """One frame through ``backend`` (any size: padded and cropped back) -> ``(H, W, 3)`` uint8."""
    x = to_batch([frame], backend.device)
    backend.prepare(1, x.shape[-2], x.shape[-1])
    return to_frames(backend.infer(x), [frame])[0].image


def draw_curves(rows: list[RunRow], best: int, path: str | Path, standard: bool = True) -> Path:
    """KID, FID (each scaled to its own range) and artifact score per step, drawn with OpenCV."""
    w, h, m = 720, 400, 60
    img = np.full((h, w, 3), 255, np.uint8)
    steps = [r.step for r in rows]
    lo, hi = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    to_x = lambda s: int(m + (s - lo) / (hi - lo) * (w - 2 * m))
    star = "" if standard else "*"
    series = [(f"KID{star}", [r.distances.kid for r in rows], (200, 60, 0)),
              (f"FID{star}", [r.distances.fid for r in rows], (0, 140, 0)),
              ("artifacts", [r.artifacts.mean if r.artifacts else np.nan for r in rows], (0, 0, 200))]
    cv2.rectangle(img, (m, m // 2), (w - m, h - m), (180, 180, 180), 1)
    for k, (name, values, colour) in enumerate(series):
        v = np.asarray(values, dtype=np.float64)
        if not np.isfinite(v).any():
            continue
        vlo, vhi = np.nanmin(v), np.nanmax(v)
        span = vhi - vlo if vhi > vlo else 1.0
        pts = [(to_x(s), int(h - m - (x - vlo) / span * (h - 1.5 * m))) for s, x in zip(steps, v) if np.isfinite(x)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(img, f"{name} {vlo:.3g}..{vhi:.3g}", (m + 200 * k, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    bx = to_x(rows[best].step)
    cv2.line(img, (bx, m // 2), (bx, h - m), (0, 0, 0), 1)
    cv2.putText(img, f"best: step {rows[best].step}", (bx + 4, h - m - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    for s in steps:
        cv2.putText(img, str(s), (to_x(s) - 10, h - m + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1)
    cv2.putText(img, "training step (each curve scaled to its own range)", (m, h - 12),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img[:, :, ::-1])
    with written_whole(path) as partial:
        partial.write_bytes(png.tobytes())
    return Path(path)
