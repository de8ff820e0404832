"""``gtacity eval fidelity``: how closely a distilled student reproduces its teacher, and how fast each runs.

Every frame of the input is decoded once and translated by both generators through the same backend;
the student's output is compared with the teacher's as a user would see them (uint8 frames): PSNR
and SSIM (:mod:`gtacity.quality`). The speed of each is frames per second of the translate stage
(upload, padding, inference, download), timed per frame on this machine, after one untimed frame of
every size so that compilation is not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gtacity.checkpoint import GeneratorInfo, load_generator
from gtacity.engine.backends import Backend, create_backend
from gtacity.engine.media.sources import open_source
from gtacity.engine.stream.convert import to_batch, to_frames
from gtacity.errors import GtacityError
from gtacity.nets import count_macs
from gtacity.quality import psnr, ssim


class FidelityError(GtacityError):
    """A fidelity evaluation that cannot run as asked."""


@dataclass(frozen=True)
class FidelityConfig:
    """One comparison.

    Attributes:
        input: a video, a folder tree of images, or one image (source-domain frames).
        teacher, student: generator files of the same direction.
        backend, precision, device: as for ``translate``; both generators use the same.
        max_frames: stop after this many frames (None: all).
        progress: show a progress bar on stderr.
    """

    input: str | Path
    teacher: str | Path
    student: str | Path
    backend: str = "auto"
    precision: str = "auto"
    device: str = "auto"
    max_frames: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ModelResult:
    """One generator's side of the table."""

    role: str
    path: str
    info: GeneratorInfo
    gmacs_per_frame: float
    seconds: float
    frames: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True)
class FidelityReport:
    """PSNR/SSIM of student vs teacher (mean and worst frame) and each model's speed."""

    teacher: ModelResult
    student: ModelResult
    psnr_mean: float
    psnr_min: float
    ssim_mean: float
    ssim_min: float
    frames: int
    size: tuple[int, int]
    backend: str

    def format(self) -> str:
        """The side-by-side table printed by ``gtacity eval fidelity``."""
        w, h = self.size
        a = max(len(m.info.arch) for m in (self.teacher, self.student))
        lines = [f"{self.frames} frames of {w}x{h} (first frame's size), {self.backend}",
                 f"{'':8} {'arch':{a}} {'ngf':>4} {'blocks':>6} {'GMAC/frame':>11} {'frames/s':>9}"]
        for m in (self.teacher, self.student):
            lines.append(f"{m.role:8} {m.info.arch:{a}} {m.info.ngf:>4} {m.info.n_blocks:>6} "
                         f"{m.gmacs_per_frame:>11.2f} {m.fps:>9.2f}")
        t, s = self.teacher, self.student
        lines.append(f"student vs teacher: {t.gmacs_per_frame / s.gmacs_per_frame:.1f}x fewer MACs, "
                     f"{s.fps / t.fps:.1f}x the frames/s; PSNR {self.psnr_mean:.2f} dB (worst frame "
                     f"{self.psnr_min:.2f}), SSIM {self.ssim_mean:.4f} (worst {self.ssim_min:.4f})")
        return "\n".join(lines)


def evaluate_fidelity(cfg: FidelityConfig) -> FidelityReport:
    """Translate ``cfg.input`` with teacher and student; compare outputs and speeds.

    Raises:
        GtacityError: (subclasses) unreadable input or weights, generators of different directions,
            a backend that can't run here.
    """
    (teacher, t_info), (student, s_info) = load_generator(cfg.teacher), load_generator(cfg.student)
    if t_info.direction and s_info.direction and t_info.direction != s_info.direction:
        raise FidelityError(f"{cfg.student}: the student translates {s_info.direction}, "
                            f"the teacher {cfg.teacher} {t_info.direction}; compare generators of one direction")
    backends = [create_backend(cfg.backend, net, precision=cfg.precision, device=cfg.device) for net in (teacher, student)]
    seconds, macs = [0.0, 0.0], [0, 0]
    psnrs, ssims, size = [], [], None
    with open_source(cfg.input) as source:
        total = len(source) if cfg.max_frames is None else min(len(source), cfg.max_frames)
        with tqdm(total=total, unit="frame", disable=not cfg.progress or total < 2, dynamic_ncols=True,
                  desc="teacher+student") as bar:
            for n, frame in enumerate(source):
                if cfg.max_frames is not None and n >= cfg.max_frames:
                    break
                size = size or (frame.image.shape[1], frame.image.shape[0])
                outs = []
                for i, (backend, info) in enumerate(zip(backends, (t_info, s_info))):
                    image, took = _translate_timed(backend, frame)
                    outs.append(image)
                    seconds[i] += took
                    h, w = -(-frame.image.shape[0] // 4) * 4, -(-frame.image.shape[1] // 4) * 4
                    macs[i] += count_macs(info.ngf, info.n_blocks, h, w, arch=info.arch, upsample=info.upsample)
                a, b = (torch.from_numpy(o).permute(2, 0, 1)[None].double() / 255 for o in outs)
                psnrs.append(float(psnr(b, a)[0]))
                ssims.append(float(ssim(b, a)[0]) if min(a.shape[-2:]) >= 11 else float("nan"))
                bar.update(1)
    frames = len(psnrs)
    if frames == 0:
        raise FidelityError(f"{cfg.input}: no frames to compare")
    results = [ModelResult(role, str(path), info, m / frames / 1e9, s, frames)
               for role, path, info, m, s in zip(("teacher", "student"), (cfg.teacher, cfg.student),
                                                (t_info, s_info), macs, seconds)]
    return FidelityReport(results[0], results[1], float(np.mean(psnrs)), float(np.min(psnrs)),
                          float(np.nanmean(ssims)), float(np.nanmin(ssims)), frames, size,
                          f"{backends[0].name} {backends[0].precision}")


def _translate_timed(backend: Backend, frame) -> tuple[np.ndarray, float]:
    """One frame through ``backend`` -> (uint8 translation, seconds), the first of a size untimed."""
    x = to_batch([frame], backend.device)
    builds = backend.builds
    backend.prepare(1, x.shape[-2], x.shape[-1])
    if backend.builds != builds:  # a new size: compile and warm up outside the timing
        backend.infer(x)
    t0 = time.perf_counter()
    x = to_batch([frame], backend.device)
    y = backend.infer(x)
    if y.device.type == "cuda":
        torch.cuda.synchronize(y.device)
    image = to_frames(y, [frame])[0].image
    return image, time.perf_counter() - t0
