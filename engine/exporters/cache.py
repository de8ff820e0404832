"""Where compiled and converted models are kept, and the weights checksum every cache key starts from.

One root for every cache (``--cache-dir``, else ``$GTACITY_CACHE_DIR``, else ``~/.cache/gtacity``),
one folder per kind under it (``openvino``, ``tensorrt``, ``onnx``), and one way to fold a
generator's weights into a digest, so equal generators share entries whichever file they came from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def cache_root(setting: str | None, kind: str) -> Path | None:
    """``<cache>/<kind>``: ``setting``, else ``$GTACITY_CACHE_DIR``, else ``~/.cache/gtacity``;
    ``""`` means no cache (None)."""
    if setting is None:
        setting = os.environ.get("GTACITY_CACHE_DIR") or str(Path.home() / ".cache" / "gtacity")
    return Path(setting) / kind if setting else None


def feed_weights(digest: "hashlib._Hash", net: nn.Module) -> None:
    """Fold every weight's name, shape and fp32 value into ``digest`` (in state-dict order), and
    what the weights do not tell: a ``bilinear`` decoder has the same tensors as a ``resize`` one
    (nearest), so its kind is folded in too (the other kinds are not, which keeps their keys)."""
    for name, tensor in net.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    upsample = getattr(net, "upsample", "transpose")
    if upsample not in ("transpose", "resize"):
        digest.update(f"upsample {upsample}".encode())


def weights_checksum(net: nn.Module) -> str:
    """SHA-256 of every weight's name, shape and fp32 value: equal for equal generators, whatever
    file (fp16 safetensors, official ``.pth``) they came from. Not the file's SHA-256 (that is
    :func:`gtacity.checkpoint.file_sha256`, which a folder job's manifest records)."""
    digest = hashlib.sha256()
    feed_weights(digest, net)
    return digest.hexdigest()
