"""``translate``: the one call behind ``gtacity translate`` (and any script that wants the same job).

::

    from gtacity.engine import TranslateConfig, translate
    report = translate(TranslateConfig("drive.mp4", "out.mp4"))
    print(report.summary())
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import partial
from pathlib import Path

from tqdm import tqdm

from gtacity.checkpoint import DIRECTIONS, GeneratorInfo, bundled_generator, generator_path, load_generator
from gtacity.engine.backends import Backend, create_backend
from gtacity.engine.backends.base import FirstBatchCheck
from gtacity.engine.backends.tiling import TiledBackend, Tiling, max_frame_pixels
from gtacity.engine.exporters.int8 import calibration_frames, check_frames
from gtacity.engine.jobs.folder import FolderJob, JobSummary, job_settings, list_job, run_folder_job
from gtacity.engine.jobs.ray_runner import RayCluster
from gtacity.engine.jobs.shards import parse_shard
from gtacity.engine.media.damage import Damage
from gtacity.engine.media.planes import use_planes
from gtacity.engine.media.sinks import open_sink
from gtacity.engine.media.sources import PixelLimit, open_source
from gtacity.engine.media.trees import LABEL_MODES
from gtacity.engine.media.window import Window, parse_time
from gtacity.engine.preview import write_preview
from gtacity.engine.stream.imagepool import default_workers
from gtacity.engine.stream.pipeline import run_with_progress
from gtacity.engine.stream.stages import StageTimes
from gtacity.engine.temporal.remedies import FlowBlend, backend_for, check_mode, smooth_norm_stats, tile_setting
from gtacity.errors import GtacityError
from gtacity.hardware import free_memory
from gtacity.images import IMAGE_EXTENSIONS


class TranslateError(GtacityError):
    """A translate job that cannot start as asked."""


# Smaller tiles than this spend most of their pixels on the overlap and see too little context.
MIN_TILE = 64


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
        tile: translate frames with a side above this many pixels in overlapping tiles of this
            side (0: never); None tiles (1024 px) only frames whose estimated inference memory
            exceeds :data:`gtacity.engine.backends.tiling.MEMORY_BUDGET`.
        allow_damaged: return normally when the input video was damaged (decode errors, damaged
            frames, an early end); otherwise :class:`DamagedInputError` is raised once the
            output (kept, incomplete) is written.
        shard: folder inputs: ``"K/N"`` (do shard K of N, from 1), ``"auto"`` or ``"auto/N"`` (from
            a Slurm array or Kubernetes indexed Job); None does the whole folder.
        dataset: folder inputs: ``"gta5"`` (images/ + labels/) or ``"cityscapes"`` (leftImg8bit/ +
            gtFine/): label maps travel with their images.
        labels: with ``dataset``: ``"copy"`` (unchanged) or ``"trainids"`` (copied, plus Cityscapes
            train-ID maps beside them).
        workers: threads decoding and encoding a folder's images; None uses every core.
        ray: folder inputs: translate on a Ray cluster (``pip install "gtacity[ray]"``): ``"local"``
            (a cluster of this machine for this job), ``"auto"`` (``RAY_ADDRESS``, or the cluster
            ``ray start`` made here) or a cluster's address; None runs in this process. The same
            job, outputs and resume either way (see :mod:`gtacity.engine.jobs.ray_runner`).
        ray_workers: with ``ray``: translating actors; None: one per GPU of the cluster, or half
            its CPUs.
        temporal: flicker remedy, ``off``, ``stats`` (InstanceNorm statistics averaged over frames;
            torch backend only, which ``backend="auto"`` then picks) or ``flow`` (the previous output
            blended in along the optical flow; any backend). See :mod:`gtacity.engine.temporal.remedies`.

    A folder job resumes: rerunning it into the same output folder skips finished files. It
    records its settings in ``.gtacity-job/manifest.json`` there and refuses to resume with other settings
    unless ``overwrite`` (which redoes every file).
        calibration: int8 only: a video, image folder or image to calibrate on; None = the job's
            own input (up to 32 frames spread over it; see :mod:`gtacity.engine.exporters.int8`).
        max_pixels: refuse an input image with more pixels, before decoding it (in a folder job it
            is listed as failed and the rest is translated); None decides from the memory free
            when the job starts and what one frame costs
            (:func:`gtacity.engine.backends.tiling.max_frame_pixels`), so a small file declaring
            a huge picture cannot exhaust the memory.
        start, duration: videos only: translate from ``start`` (seconds from the first frame, or
            ``"HH:MM:SS.ms"``) for ``duration``; the slice's output starts at the video's own start,
            its audio with it (see :mod:`gtacity.engine.media.window`).
        max_frames: videos only: translate at most this many frames (from ``start``).
        preview: translate this many frames spread over the input (or its slice) and write them
            side by side with their inputs into ``output``, a PNG, instead of the job's output
            (see :mod:`gtacity.engine.preview`).
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
    tile: int | None = None
    allow_damaged: bool = False
    shard: str | None = None
    dataset: str | None = None
    labels: str = "copy"
    workers: int | None = None
    calibration: str | Path | None = None
    temporal: str = "off"
    max_pixels: int | None = None
    start: float | str | None = None
    duration: float | str | None = None
    max_frames: int | None = None
    preview: int | None = None
    ray: str | None = None
    ray_workers: int | None = None


@dataclass(frozen=True)
class TranslateReport:
    """What a finished job did."""

    output: Path
    frames: int
    times: StageTimes
    backend: str
    precision: str
    generator: GeneratorInfo
    damage: Damage | None = None
    job: JobSummary | None = None

    @property
    def complete(self) -> bool:
        """False when the input was damaged: the output lacks or has damaged frames."""
        return not self.damage

    def summary(self) -> str:
        """One line: frames, seconds, fps, backend, precision, output (a folder job: files too;
        a damaged input: what was lost)."""
        t = self.times
        line = (
            f"translated {self.frames} frame{'s' * (self.frames != 1)} in {t.wall:.1f} s "
            f"({t.fps:.2f} fps) with {self.backend} {self.precision} -> {self.output}"
        )
        if self.job is not None:
            line = f"{line}; {self.job.line()}"
        return line if self.complete else f"{line}; INCOMPLETE, damaged input: {self.damage.describe()}"


class DamagedInputError(TranslateError):
    """The job finished, but its input was damaged: the output is kept, marked incomplete."""

    def __init__(self, cfg: TranslateConfig, report: TranslateReport):
        super().__init__(
            f"{cfg.input}: damaged input: {report.damage.describe()}; the output {report.output} "
            f"({report.frames} frames) is kept but incomplete; pass --allow-damaged to accept it"
        )
        self.report = report


def translate(cfg: TranslateConfig) -> TranslateReport:
    """Translate ``cfg.input`` into ``cfg.output``; the output appears only when complete.

    Raises:
        GtacityError: (subclasses) bad input, refused output, weights that don't fit, a backend
            that can't run here, out of memory. Nothing that looks finished is left at the output
            path.
        DamagedInputError: the input video was damaged and ``cfg.allow_damaged`` is False; the
            output is kept (incomplete) and the error's ``report`` describes it.
    """
    _check_numbers(cfg)
    if cfg.ray is not None:
        cfg = _absolute(cfg)  # Ray workers run elsewhere: every path they get must name the same file
    shard = parse_shard(cfg.shard)
    folder = Path(cfg.input).is_dir()
    _check_folder_options(cfg, folder)
    window = _window(cfg, folder)
    if cfg.preview is not None:
        return _preview(cfg, window)
    items = list_job(Path(cfg.input), Path(cfg.output), cfg.dataset, cfg.labels) if folder else None
    check_mode(cfg.temporal, folder)
    if cfg.ray is not None:
        return _translate_on_ray(cfg, items, shard)
    net, info = configured_generator(cfg)
    backend, batch_size, limit = _prepare(cfg, net, info)
    if folder:
        return _translate_folder(cfg, items, shard, backend, info, batch_size, limit)
    return _translate_one(cfg, backend, info, batch_size, limit, window)


def _window(cfg: TranslateConfig, folder: bool) -> Window | None:
    """The slice ``--start/--duration/--max-frames`` ask for; refused for images, whose frames
    have no time (a preview spreads over a folder instead)."""
    given = [f"--{name.replace('_', '-')}" for name in ("start", "duration", "max_frames")
             if getattr(cfg, name) is not None]
    if not given:
        return None
    if folder or Path(cfg.input).suffix.lower() in IMAGE_EXTENSIONS:
        what = "a folder of images" if folder else "an image"
        raise TranslateError(f"{cfg.input}: {' and '.join(given)} take part of a video; {what} has no time "
                             "to slice: translate it whole (or use --preview N to try a few images)")
    return Window(start=Fraction(0) if cfg.start is None else parse_time(str(cfg.start), "--start"),
                  duration=None if cfg.duration is None else parse_time(str(cfg.duration), "--duration"),
                  max_frames=cfg.max_frames)


def _preview(cfg: TranslateConfig, window: Window | None) -> TranslateReport:
    """``--preview N``: N frames side by side with their inputs into the PNG ``cfg.output``."""
    if cfg.temporal != "off":
        raise TranslateError("--preview shows frames one at a time; drop --temporal (it needs consecutive frames)")
    net, info = configured_generator(cfg)
    backend = configured_backend(cfg, net, info)
    frames, seconds = write_preview(Path(cfg.input), Path(cfg.output), cfg.preview, window, backend, cfg.overwrite)
    return TranslateReport(Path(cfg.output), frames, StageTimes(wall=seconds, frames=frames), backend.name,
                           backend.precision, info)


def _check_numbers(cfg: TranslateConfig) -> None:
    if cfg.direction is not None and cfg.direction not in DIRECTIONS:
        raise TranslateError(f"unknown direction {cfg.direction!r}; choose {' or '.join(DIRECTIONS)}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise TranslateError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.streams is not None and cfg.streams < 1:
        raise TranslateError(f"--streams must be at least 1, got {cfg.streams}")
    if cfg.tile is not None and cfg.tile != 0 and cfg.tile < MIN_TILE:
        raise TranslateError(f"--tile must be 0 (never tile) or at least {MIN_TILE}, got {cfg.tile}")
    if cfg.max_pixels is not None and cfg.max_pixels < 1:
        raise TranslateError(f"--max-pixels must be at least 1, got {cfg.max_pixels}")


def _tiling(cfg: TranslateConfig, info: GeneratorInfo) -> Tiling:
    return Tiling(tile=tile_setting(cfg.temporal, cfg.tile), ngf=info.ngf)


def _prepare(cfg: TranslateConfig, net, info: GeneratorInfo) -> tuple[Backend, int, PixelLimit]:
    """The backend, batch size and pixel limit ``cfg`` asks for (on this machine)."""
    backend = configured_backend(cfg, net, info)
    return backend, cfg.batch_size or (8 if backend.device.type == "cuda" else 1), _pixel_limit(cfg, _tiling(cfg, info))


def configured_backend(cfg: TranslateConfig, net, info: GeneratorInfo) -> Backend:
    """The backend ``cfg`` asks for, calibrated, smoothed for ``--temporal stats``, tiling huge
    frames, its first output checked."""
    backend = create_backend(backend_for(cfg.temporal, cfg.backend), net, precision=cfg.precision, device=cfg.device)
    _calibrate(backend, cfg)
    if cfg.temporal == "stats":
        backend = smooth_norm_stats(backend)
    return FirstBatchCheck(TiledBackend(backend, _tiling(cfg, info)), str(_weights_path(cfg)))


def _pixel_limit(cfg: TranslateConfig, tiling: Tiling) -> PixelLimit:
    """``--max-pixels``, or what the memory free now (the generator loaded) can translate."""
    if cfg.max_pixels is not None:
        return PixelLimit(cfg.max_pixels, "set by --max-pixels")
    free = free_memory()
    why = f"what the {free / 2**30:.1f} GiB of memory free here can translate"
    return PixelLimit(max_frame_pixels(tiling, free), why)


def _translate_folder(cfg: TranslateConfig, items, shard, backend: Backend, info: GeneratorInfo,
                      batch_size: int, limit: PixelLimit) -> TranslateReport:
    job = _folder_job(cfg, items, shard, info, backend, limit)
    done = run_folder_job(job, items, backend, batch_size)
    return TranslateReport(job.output, done.frames, done.times, backend.name, backend.precision,
                           info, job=done)


def _folder_job(cfg: TranslateConfig, items, shard, info: GeneratorInfo, backend, limit: PixelLimit) -> FolderJob:
    """The folder job ``cfg`` asks for; ``backend`` gives the manifest its name and precision."""
    settings = job_settings(_weights_path(cfg), info.direction, backend, cfg.dataset, cfg.labels,
                            any(i.kind == "video" for i in items), cfg.crf, cfg.preset)
    return FolderJob(Path(cfg.input), Path(cfg.output), settings, cfg.overwrite, shard, cfg.dataset,
                     cfg.labels, cfg.workers or default_workers(), cfg.crf, cfg.preset, cfg.progress,
                     log=lambda line: tqdm.write(line, file=sys.stderr), streams=cfg.streams,
                     allow_damaged=cfg.allow_damaged, limit=limit)


def _translate_on_ray(cfg: TranslateConfig, items, shard) -> TranslateReport:
    """A folder job on a Ray cluster: every actor builds the backend this process would."""
    cluster = RayCluster(cfg.ray, cfg.ray_workers, cfg.device)  # without Ray: one line saying how to get it
    _, info = configured_generator(cfg)  # the direction, for the manifest; the driver never translates
    # An actor sees only its own GPU, as cuda:0.
    recipe = partial(_actor_backend, replace(cfg, device="cuda") if cfg.device.startswith("cuda") else cfg)
    with cluster:
        backend = cluster.probe(recipe)  # the pixel limit too: what a worker node's memory can translate
        job = _folder_job(cfg, items, shard, info, backend, backend.limit)
        done = cluster.run(job, items, recipe)
    return TranslateReport(job.output, done.frames, done.times, backend.name, backend.precision, info, job=done)


def _absolute(cfg: TranslateConfig) -> TranslateConfig:
    """``cfg`` with its input, output, weights and calibration files as absolute paths (a bundled
    generator's name stays a name: each node has its own installation)."""
    def resolved(path):
        return None if path is None else str(Path(path).absolute()) if Path(path).exists() else path
    return replace(cfg, input=Path(cfg.input).absolute(), output=Path(cfg.output).absolute(),
                   weights=resolved(cfg.weights), calibration=resolved(cfg.calibration))


def _actor_backend(cfg: TranslateConfig) -> tuple[Backend, int, PixelLimit]:
    """In a Ray actor: the backend, batch size and pixel limit :func:`translate` would use there."""
    net, info = configured_generator(cfg)
    return _prepare(cfg, net, info)


def _translate_one(cfg: TranslateConfig, backend: Backend, info: GeneratorInfo, batch_size: int,
                   limit: PixelLimit, window: Window | None = None) -> TranslateReport:
    """One video (or its ``window``) or image into ``cfg.output``."""
    # On CUDA a video's colour is converted on the GPU, fused with the generator's layout.
    with open_source(cfg.input, planes=use_planes(backend.device, cfg.temporal), limit=limit,
                     window=window) as source:
        sink = open_sink(cfg.output, source, overwrite=cfg.overwrite, crf=cfg.crf, preset=cfg.preset)
        frames = source
        if cfg.temporal == "flow":
            blend = FlowBlend()
            frames, sink = blend.watch(source), blend.wrap(sink)
        try:
            times = run_with_progress(frames, sink, backend, total=len(source), progress=cfg.progress,
                                      desc=f"{info.direction} {backend.name}", batch_size=batch_size,
                                      streams=cfg.streams)
        except BaseException as e:
            sink.abort()  # a signal before the pipeline took the sink over must not leak it
            if _out_of_memory(e):
                raise TranslateError(
                    f"{cfg.input}: out of memory while translating; try --tile 512 (or smaller) "
                    "or --batch-size 1, or close other programs"
                ) from None
            raise
    report = TranslateReport(Path(sink.path), times.frames, times, backend.name, backend.precision, info,
                             damage=getattr(source, "damage", None))
    if not report.complete and not cfg.allow_damaged:
        raise DamagedInputError(cfg, report)
    return report


def _out_of_memory(error: BaseException) -> bool:
    # torch reports a failed CPU allocation as a RuntimeError, CUDA's as OutOfMemoryError (also a
    # RuntimeError), OpenVINO as a RuntimeError naming std::bad_alloc; numpy raises MemoryError;
    # Python says "can't start new thread" when a pipeline thread's stack no longer fits.
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        words in text for words in ("can't allocate memory", "out of memory", "bad_alloc",
                                    "can't start new thread")
    )


def _check_folder_options(cfg: TranslateConfig, folder: bool) -> None:
    given = [f"--{name}" for name in ("shard", "dataset", "ray") if getattr(cfg, name) is not None]
    if given and not folder:
        raise TranslateError(f"{cfg.input}: {' and '.join(given)} work on a folder input; pass a folder")
    if cfg.labels not in LABEL_MODES:
        raise TranslateError(f"unknown --labels {cfg.labels!r}; choose {' or '.join(LABEL_MODES)}")
    if cfg.labels != "copy" and cfg.dataset is None:
        raise TranslateError("--labels needs --dataset gta5 or --dataset cityscapes (where the labels are)")
    if cfg.workers is not None and cfg.workers < 1:
        raise TranslateError(f"--workers must be at least 1, got {cfg.workers}")


def _weights_path(cfg: TranslateConfig) -> Path:
    if cfg.weights is not None:
        return generator_path(cfg.weights)  # a file, or a bundled generator's name
    direction = cfg.direction or "gta2city"
    weights = bundled_generator(direction)
    if weights is None:
        raise TranslateError(
            f"no bundled {direction} generator in this installation; pass --weights FILE "
            "(a run's gta2city.safetensors from `gtacity train`, or an official latest_net_G_A.pth)"
        )
    return Path(weights)


def _calibrate(backend, cfg: TranslateConfig) -> None:
    """Quantised precisions: calibrate on the job's frames and say how close to fp32 they come."""
    if not backend.needs_calibration():
        if cfg.calibration is not None:
            raise TranslateError(f"--calibration is for --precision int8; this job runs {backend.precision}")
        return
    # The generator's own int8 model, made once (by its first calibration, or shipped with it), is
    # only checked on a few of this input's frames; without one, the input calibrates it.
    if cfg.calibration is not None or not backend.reuse_calibration(check_frames(cfg.input)):
        backend.calibrate(calibration_frames(cfg.calibration or cfg.input), progress=cfg.progress)
    print(backend.int8_check.line(), file=sys.stderr)


def configured_generator(cfg: TranslateConfig):
    """The generator and its file's metadata that ``cfg`` names (direction filled in); with
    :func:`configured_backend`, how :class:`~gtacity.engine.translator.Translator` sets itself up."""
    net, info = load_generator(_weights_path(cfg), direction=cfg.direction)
    if info.direction is None:  # an official file and no --direction: the project's default
        info = replace(info, direction="gta2city")
    return net, info

