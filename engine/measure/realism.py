"""``gtacity eval realism``: FID and KID of translated frames against real ones, and the artifact check.

Features come from :mod:`gtacity.engine.measure.features` (the FID Inception, frames resized the
clean-fid way); the statistics are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance``, fed the features through an identity "network", so the features of a
real set can be computed once and cached. The cache is keyed by content (the network's checksum,
the resize, and the SHA-256 of every real file), so ten generators scored against one real set
read it once.

FID fits a Gaussian to 2048 features: with a few hundred frames its estimate is strongly biased
(it falls as the frame count grows, whatever the frames), so two FIDs compare only at equal
counts. KID (Binkowski et al., 2018) is an unbiased estimate of a kernel distance: it is the one to
trust on a few hundred frames. It is averaged over random subsets, and their spread is reported.

::

    from gtacity.engine.measure.realism import RealismConfig, RealismSettings, evaluate_realism
    report = evaluate_realism(RealismConfig("gta5_city/", RealismSettings(real="cityscapes/val")))
    print(report.format()); report.to_dict()
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from tqdm import tqdm

from gtacity.artifacts import ArtifactScore, ArtifactSummary, peak_prominence, score_from
from gtacity.engine.exporters.cache import cache_root
from gtacity.engine.measure.features import RESIZE_MODE, SIZE, FeatureNet, extract, standin_network
from gtacity.engine.measure.weights import load_inception
from gtacity.engine.media.sources import open_source
from gtacity.errors import GtacityError
from gtacity.fetch import file_sha256
from gtacity.files import written_whole

STANDIN_FRAMES = 8
KID_SUBSET_MAX = 1000


class RealismError(GtacityError):
    """A realism evaluation that cannot run as asked."""


@dataclass(frozen=True)
class RealismSettings:
    """What every realism measurement shares: the real set, the network and the statistics.

    Attributes:
        real: real frames: an image folder (searched recursively), a video or an image.
        inception_weights: the FID Inception weights file; None fetches it once into the cache.
        features: ``"inception"`` (FID/KID proper) or ``"standin"`` (offline: random convolutions
            with batch norms fitted to 8 frames spread over ``real``; NOT FID/KID values).
        standin_seed: the stand-in's seed.
        kid_subsets: random subsets KID is averaged over.
        kid_subset_size: frames per subset; None: half the smaller set, at most 1000 (subsets as
            large as the set would all be the same set, and their spread would say nothing).
        max_frames: use at most this many frames of each set (None: all).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda[:N]``.
        batch_size: frames per call of the feature network.
        cache_dir: cache root (None: ``$GTACITY_CACHE_DIR`` or ``~/.cache/gtacity``; "" none).
        seed: seeds KID's subsets, so a rerun prints the same numbers.
        progress: progress bars on stderr.
    """

    real: str | Path
    inception_weights: str | Path | None = None
    features: str = "inception"
    standin_seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int | None = None
    max_frames: int | None = None
    device: str = "auto"
    batch_size: int = 16
    cache_dir: str | None = None
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class RealismConfig:
    """One ``gtacity eval realism GENERATED --real REAL``.

    Attributes:
        generated: translated frames: an image folder, a video or an image.
        settings: the real set, network and statistics.
        inputs: the frames ``generated`` was translated from (same order and sizes), for the
            artifact check; None skips it.
    """

    generated: str | Path
    settings: RealismSettings
    inputs: str | Path | None = None


@dataclass(frozen=True)
class Distances:
    """FID and KID between two feature sets (torchmetrics' values)."""

    fid: float
    kid: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int


@dataclass(frozen=True)
class RealismReport:
    """What ``gtacity eval realism`` prints and ``--json`` keeps (see :meth:`to_dict`)."""

    generated: str
    real: str
    distances: Distances
    n_generated: int
    n_real: int
    network: str
    weights_sha256: str
    standard_weights: bool
    artifacts: ArtifactSummary | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        """The JSON form: ``fid``, ``kid``, ``kid_std``, ``n_generated``, ``n_real``, what was used."""
        d = self.distances
        return {
            "fid": d.fid, "kid": d.kid, "kid_std": d.kid_std, "n_generated": self.n_generated,
            "n_real": self.n_real, "generated": self.generated, "real": self.real,
            "kid_subsets": d.kid_subsets, "kid_subset_size": d.kid_subset_size,
            "mode": RESIZE_MODE, "size": [SIZE, SIZE], "network": self.network,
            "weights_sha256": self.weights_sha256, "standard_weights": self.standard_weights,
            "artifacts": self.artifacts.to_dict() if self.artifacts else None, "notes": list(self.notes),
        }

    def format(self) -> str:
        """The lines ``gtacity eval realism`` prints."""
        d, name = self.distances, "FID" if self.standard_weights else "FID*"
        lines = [
            f"{self.n_generated} generated frames ({self.generated}) vs {self.n_real} real ({self.real})",
            f"{name:<10} {d.fid:.2f}",
            f"{'KID' if self.standard_weights else 'KID*':<10} {d.kid * 1e3:.2f}e-3 +- {d.kid_std * 1e3:.2f}e-3 "
            f"(std over {d.kid_subsets} subsets of {d.kid_subset_size})",
            "KID is the one to trust on a few hundred frames: FID's estimate is biased by the frame "
            "count and compares only at equal counts",
        ]
        if self.artifacts:
            lines.append(self.artifacts.line())
        lines.append(f"features   {self.network}")
        lines.append(f"resize     {SIZE}x{SIZE}, {RESIZE_MODE}")
        if not self.standard_weights:
            lines.append("* not the published FID network: compare only with numbers from this same network")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` to ``path`` whole or not at all."""
        with written_whole(path) as partial:
            partial.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class _Given(nn.Identity):
    """The "feature network" torchmetrics sees: the features are computed (and cached) before."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features


def distances(generated: np.ndarray, real: np.ndarray, subsets: int = 100, subset_size: int | None = None,
              seed: int = 0) -> Distances:
    """FID and KID (mean, std over subsets) between two ``(N, D)`` feature arrays, by torchmetrics.

    Raises:
        RealismError: fewer than 2 frames on a side, or a subset larger than a set.
    """
    smaller = min(len(generated), len(real))
    if smaller < 2:
        raise RealismError(f"FID and KID need at least 2 frames on each side (got {len(generated)} "
                           f"generated, {len(real)} real)")
    size = subset_size or min(KID_SUBSET_MAX, max(2, smaller // 2))
    if size > smaller:
        raise RealismError(f"KID subsets of {size} frames need at least that many on each side "
                           f"(got {smaller}); pass a smaller --kid-subset-size")
    g, r = torch.from_numpy(generated).double(), torch.from_numpy(real).double()
    fid = FrechetInceptionDistance(feature=_Given(real.shape[1]))
    fid.update(r, real=True)
    fid.update(g, real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "KID keeps every feature in memory": as meant
        kid = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size)
    kid.update(r, real=True)
    kid.update(g, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # KID draws its subsets from torch's global generator
        kid_mean, kid_std = kid.compute()
    return Distances(float(fid.compute()), float(kid_mean), float(kid_std), subsets, size)


def frames(path: str | Path, max_frames: int | None = None, desc: str = "", progress: bool = False,
           ) -> Iterator[np.ndarray]:
    """The RGB frames of an image folder, a video or an image, in order (at most ``max_frames``)."""
    with open_source(path) as source:
        total = len(source) if max_frames is None else min(len(source), max_frames)
        with tqdm(total=total, unit="frame", desc=desc, disable=not progress or total < 2,
                  dynamic_ncols=True) as bar:
            for n, frame in enumerate(source):
                if max_frames is not None and n >= max_frames:
                    return
                bar.update(1)
                yield frame.image


@dataclass
class Measurer:
    """The feature network and the real set's features, made once and used for many generated sets."""

    settings: RealismSettings
    net: FeatureNet
    real: np.ndarray

    def features(self, images) -> np.ndarray:
        """Features of an iterable of RGB frames."""
        return extract(self.net, images, self.settings.batch_size)

    def score(self, generated: np.ndarray) -> Distances:
        s = self.settings
        return distances(generated, self.real, s.kid_subsets, s.kid_subset_size, s.seed)


def prepare(settings: RealismSettings, net: FeatureNet | None = None) -> Measurer:
    """Build the feature network (unless ``net`` is given) and get the real set's features (from the
    cache when it has them)."""
    if net is not None:
        return Measurer(settings, net, _real_features(settings, net))
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if settings.features == "inception":
        net = load_inception(settings.inception_weights, cache_dir=settings.cache_dir,
                             progress=settings.progress, device=device)
    elif settings.features == "standin":
        net = standin_network(_spread(settings.real, STANDIN_FRAMES, settings.max_frames),
                              settings.standin_seed, device)
    else:
        raise RealismError(f"unknown --features {settings.features!r}; use inception or standin")
    return Measurer(settings, net, _real_features(settings, net))


def _spread(path: str | Path, k: int, max_frames: int | None) -> list[np.ndarray]:
    """``k`` frames spread evenly over a source (all of them when it has fewer)."""
    with open_source(path) as source:
        n = len(source) if max_frames is None else min(len(source), max_frames)
    wanted = set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist())
    return [im for i, im in enumerate(frames(path, n)) if i in wanted]


def _real_features(settings: RealismSettings, net: FeatureNet) -> np.ndarray:
    key = hashlib.sha256(f"{net.sha256}|{RESIZE_MODE}|{SIZE}|{settings.max_frames}".encode())
    for f in _files(Path(settings.real)):
        key.update(f"{f.name}:{file_sha256(f)}\n".encode())
    root = cache_root(settings.cache_dir, "realism")
    cached = root / f"real-{key.hexdigest()[:32]}.npy" if root else None
    if cached is not None and cached.is_file():
        return np.load(cached)
    feats = extract(net, frames(settings.real, settings.max_frames, "real", settings.progress), settings.batch_size)
    if cached is not None:
        with written_whole(cached) as partial:
            with open(partial, "wb") as f:
                np.save(f, feats)
    return feats


def _files(path: Path) -> list[Path]:
    """The files whose bytes make a source: a video or image itself, or a folder's images."""
    if not path.is_dir():
        return [path]
    with open_source(path) as source:
        return [path / rel for rel in source.files]


def evaluate_realism(cfg: RealismConfig, net: FeatureNet | None = None) -> RealismReport:
    """FID and KID of ``cfg.generated`` against the real set, with the artifact check if ``inputs``.

    Args:
        cfg: what to measure.
        net: a feature network already built (reused across calls, or another extractor);
            None builds the one ``cfg.settings`` names.

    Raises:
        GtacityError: (subclasses) unreadable sets, too few frames, weights unavailable offline,
            inputs that do not pair with the generated frames.
    """
    s = cfg.settings
    measurer = prepare(s, net)
    scores: list[ArtifactScore] = []
    generated = frames(cfg.generated, s.max_frames, "generated", s.progress)
    if cfg.inputs is not None:
        generated = _scored(generated, frames(cfg.inputs, s.max_frames), scores, cfg)
    feats = measurer.features(generated)
    return RealismReport(
        str(cfg.generated), str(s.real), measurer.score(feats), len(feats), len(measurer.real),
        measurer.net.description, measurer.net.sha256, measurer.net.standard,
        ArtifactSummary.of(scores) if scores else None, compression_notes(cfg.generated, s.real),
    )


def _scored(generated, inputs, scores: list[ArtifactScore], cfg: RealismConfig) -> Iterator[np.ndarray]:
    """Pass the generated frames on, scoring each against its input on the way."""
    for out, inp in _pairs(generated, inputs, cfg):
        scores.append(score_from(peak_prominence(inp), peak_prominence(out)))
        yield out


def _pairs(generated, inputs, cfg: RealismConfig):
    sentinel = object()
    for n in itertools.count():
        out, inp = next(generated, sentinel), next(inputs, sentinel)
        if out is sentinel and inp is sentinel:
            return
        if out is sentinel or inp is sentinel:
            raise RealismError(f"{cfg.inputs}: {'more' if out is sentinel else 'fewer'} frames than "
                               f"{cfg.generated}; --inputs must be the frames it translated, in the same order")
        if out.shape[:2] != inp.shape[:2]:
            raise RealismError(f"frame {n}: {cfg.generated} is {out.shape[1]}x{out.shape[0]} but its input in "
                               f"{cfg.inputs} is {inp.shape[1]}x{inp.shape[0]}; --inputs must be the frames it translated")
        yield out, inp


def compression_notes(generated: str | Path, real: str | Path) -> tuple[str, ...]:
    """Warnings when one set is lossy-compressed (JPEG, video) and the other is not."""
    kinds = {name: _lossy_share(Path(p)) for name, p in (("generated", generated), ("real", real))}
    if abs(kinds["generated"] - kinds["real"]) < 0.5:
        return ()
    lossy = max(kinds, key=kinds.get)
    return (f"the {lossy} frames are JPEG or video-compressed and the others are not: compression alone "
            "moves FID (clean-fid's finding); compare sets stored alike",)


def _lossy_share(path: Path) -> float:
    if not path.is_dir():
        return 0.0 if path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff") else 1.0
    files = _files(path)
    return sum(f.suffix.lower() in (".jpg", ".jpeg", ".webp") for f in files) / max(1, len(files))
