"""Where the FID Inception weights come from: a file the user names, or the cache, filled once.

The published file is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``; torch-fidelity
(and so torchmetrics) publishes the same bytes as ``weights-inception-2015-12-05-6726825d.pth``.
Without ``--inception-weights`` it is fetched once into ``<cache>/inception/`` (``$GTACITY_CACHE_DIR``
or ``~/.cache/gtacity``) with :func:`gtacity.fetch.fetch_file`: resumable, size and SHA-256 checked.
``$GTACITY_INCEPTION_URL`` points the fetch at a mirror (an air-gapped cluster's own server).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gtacity.engine.exporters.cache import cache_root
from gtacity.engine.measure.features import FeatureNet, inception_network
from gtacity.errors import GtacityError
from gtacity.fetch import Advice, DownloadError, fetch_file, file_sha256

FILENAME = "pt_inception-2015-12-05-6726825d.pth"
URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FILENAME
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
SIZE = 95_628_359
FLAG = "--inception-weights"


class WeightsUnavailableError(GtacityError):
    """The FID Inception weights are neither given nor cached, and cannot be fetched."""


def load_inception(path: str | Path | None = None, *, cache_dir: str | None = None, progress: bool = True,
                   device: str | torch.device = "cpu") -> FeatureNet:
    """The FID Inception network with its weights, from ``path`` or the cache (fetched once).

    Args:
        path: pytorch-fid's or torch-fidelity's weights file; None uses the cache.
        cache_dir: the cache root (None: ``$GTACITY_CACHE_DIR`` or ``~/.cache/gtacity``).
        progress: show the download's progress bar.
        device: where the network runs.

    Raises:
        WeightsUnavailableError: no file given, none cached, and the fetch failed (offline): one
            line naming the file, where to get it and ``--inception-weights``.
        FeatureError: the file is not a FID Inception state dict.
    """
    if path is None:
        path = _cached(cache_dir, progress)
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: no such file; pass {FLAG} the downloaded {FILENAME} ({URL})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise WeightsUnavailableError(f"{path}: not a readable weights file ({str(e).splitlines()[0][:120]}); "
                                      f"pass {FLAG} the downloaded {FILENAME} ({URL})") from e
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path}: holds no state dict; pass {FLAG} {FILENAME} ({URL})")
    sha = file_sha256(path)
    return inception_network(state, str(path), sha, standard=sha == SHA256, device=device)


def _cached(cache_dir: str | None, progress: bool) -> Path:
    dest = cache_root(cache_dir, "inception") or Path.home() / ".cache" / "gtacity" / "inception"
    dest = dest / FILENAME
    if dest.is_file():
        return dest
    url = os.environ.get("GTACITY_INCEPTION_URL") or URL
    advice = Advice(other_source=f"pass {FLAG} FILE", check_source=f"pass {FLAG} FILE")
    try:
        return fetch_file(url, dest, sha256=SHA256, size=SIZE, progress=progress, advice=advice)
    except DownloadError as e:
        reason = getattr(e.__cause__, "reason", None) or e.__cause__ or e
        raise WeightsUnavailableError(
            f"the FID Inception weights {FILENAME} are not in {dest.parent} and could not be fetched "
            f"({reason}); download {URL} (torch-fidelity's weights-inception-2015-12-05-6726825d.pth "
            f"is the same file) and pass {FLAG} FILE, or use --features standin for offline stand-in distances"
        ) from e
