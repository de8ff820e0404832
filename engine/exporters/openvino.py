"""OpenVINO IR: the generator converted once (InstanceNorms as MVN), and the on-disk cache of converted
and quantised models.

Cache entries are folders ``<cache>/openvino/<name>/model.xml`` (+ ``model.bin``), stored through a
staging folder renamed into place, so readers see a whole entry or none. Names start from
:func:`model_key`: the weights plus the versions that shape the IR.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.export import Dim

from gtacity import hardware
from gtacity.engine.exporters.cache import cache_root, feed_weights
from gtacity.files import written_whole
from gtacity.nets import MAX_BATCH, MAX_SIDE, MIN_SIZE, SIZE_MULTIPLE

try:
    import openvino as ov
except ImportError:
    ov = None


@functools.cache
def core() -> "ov.Core":
    return ov.Core()


def ov_version() -> str:
    return ov.__version__.split("-")[0]


def _side_dim(name: str) -> Any:
    """A height or width that can be any multiple of 4 from 8 to 16384."""
    return SIZE_MULTIPLE * Dim(name, min=MIN_SIZE // SIZE_MULTIPLE, max=MAX_SIDE // SIZE_MULTIPLE)


# Bumped when the conversion changes the graph it makes, so cached models of an older one are not reused.
CONVERSION = "mvn-norms-v1"


class _MVNInstanceNorm(nn.Module):
    """InstanceNorm (affine=False) spelled as OpenVINO's MVN fusion pattern expects it.

    ``torch.export`` lowers ``F.instance_norm`` to a batch norm over a reshaped tensor, which OpenVINO
    runs as two ReduceMeans and a chain of element-wise ops, each a pass over memory. Written as
    ``(x - mean) / sqrt(mean((x - mean)^2) + eps)`` the same maths becomes one MVN node, with the
    following ReLU fused into it. Measured on a 2-core AVX2 EPYC, openvino fp32 at 512x284: the
    norms of the distilled demo student fell from ~20 to ~10 ms a frame, the demo generator's from
    ~33 to ~19 ms (benchmarks/openvino_norms.py, RESULTS.md); outputs within 2e-4 of the torch form.
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean((2, 3), keepdim=True)
        return centred / torch.sqrt(centred.pow(2).mean((2, 3), keepdim=True) + self.eps)


def _use_mvn_norms(net: nn.Module) -> None:
    """In place: every InstanceNorm of ``net`` (affine=False, no running stats) becomes an MVN one."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.InstanceNorm2d) and not child.affine and not child.track_running_stats:
                setattr(parent, name, _MVNInstanceNorm(child.eps))


def to_openvino(net: nn.Module, mvn_norms: bool = True) -> "ov.Model":
    """The generator as an OpenVINO model with dynamic batch, height and width, converted from a copy.

    ``mvn_norms``: InstanceNorms as :class:`_MVNInstanceNorm` (the backend's way; False gives
    ``torch.export``'s own lowering, for benchmarks/openvino_norms.py).

    ``torch.export`` with dynamic dims, not ``convert_model(net, example_input=...)``: that traces
    with ``torch.jit.trace``, which bakes the example's shape into the graph (through
    instance_norm's reshapes), so every frame size would need a new trace of several seconds.
    """
    net = copy.deepcopy(net).to("cpu", torch.float32).eval()
    if mvn_norms:
        _use_mvn_norms(net)
    dims = {0: Dim("batch", min=1, max=MAX_BATCH), 2: _side_dim("h4"), 3: _side_dim("w4")}
    # Batch 2, not 1: torch.export specialises dims whose example size is 0 or 1.
    example = torch.zeros(2, 3, 8 * SIZE_MULTIPLE, 8 * SIZE_MULTIPLE)
    with torch.no_grad():
        exported = torch.export.export(net, (example,), dynamic_shapes=(dims,))
    return ov.convert_model(exported)


def model_key(net: nn.Module) -> str:
    """Checksum of every weight (names, shapes, values) plus the versions that shape the IR."""
    digest = hashlib.sha256(
        f"{type(net).__name__} torch {torch.__version__} ov {ov.__version__} {CONVERSION}".encode()
    )
    feed_weights(digest, net)
    return digest.hexdigest()[:32]


def load_or_convert(net: nn.Module, cache_dir: str | None) -> tuple["ov.Model", bool]:
    """(model, whether it came from the cache); a fresh conversion is stored for next time."""
    return cached_model(cache_root(cache_dir, "openvino"), model_key(net), lambda: to_openvino(net))


def cached_model(root: Path | None, name: str, make: Callable[[], "ov.Model"]) -> tuple["ov.Model", bool]:
    """(the model stored as ``root/name``, or ``make()``'s, stored there for next time; from cache)."""
    if root is None:
        return make(), False
    entry = root / name
    if (entry / "model.xml").is_file():
        try:
            return core().read_model(str(entry / "model.xml")), True
        except RuntimeError:
            shutil.rmtree(entry, ignore_errors=True)  # damaged entry: make it again below
    model = make()
    store_model(root, name, model, replace=False)
    return model, False


def read_stored(root: Path | None, name: str) -> tuple["ov.Model", dict] | None:
    """The model stored as ``root/name`` and its note (see :func:`store_model`), or None."""
    entry = None if root is None else root / name
    if entry is None or not (entry / "model.xml").is_file():
        return None
    try:
        model = core().read_model(str(entry / "model.xml"))
    except RuntimeError:
        return None
    try:
        note = json.loads((entry / "note.json").read_text())
    except (OSError, ValueError):
        note = {}
    return model, note if isinstance(note, dict) else {}


def store_model(root: Path, name: str, model: "ov.Model", note: dict | None = None, replace: bool = True) -> None:
    """Store ``model`` (and a JSON ``note`` about it) as the entry ``root/name``; a failure to write
    (read-only or full cache) only costs the next run time. ``replace``: swap out an existing entry."""
    entry = root / name
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{entry.name}.partial-", dir=root))
        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "note.json").write_text(json.dumps(note or {}))
        if replace and entry.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{entry.name}.old-", dir=root))
            entry.rename(old / entry.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            staging.rename(entry)  # atomic: readers see a whole entry or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process stored it first


def isa_key() -> str:
    """This CPU's instruction sets as OpenVINO's kernels see them, as a file-name-safe key."""
    caps = hardware.cpu_capabilities()
    return "-".join(f.name for f in fields(caps) if getattr(caps, f.name) is True) or "none"


def compile_fp32(model: "ov.Model", root: Path | None) -> Any:
    """``model`` compiled for the CPU in fp32; with a cache ``root``, the compiled blob is kept there
    (OpenVINO's model cache), so a later job's int8 check does not compile the same model again."""
    properties = {"INFERENCE_PRECISION_HINT": "f32"}
    if root is not None:
        properties["CACHE_DIR"] = str(root / "compiled")
    return core().compile_model(model, "CPU", properties)


def save_ir(model: "ov.Model", path: Path) -> Path:
    """Write ``model`` as ``path`` (.xml) and its weights beside it (.bin), each appearing whole."""
    with written_whole(path) as xml, written_whole(path.with_suffix(".bin")) as weights:
        ov.save_model(model, str(xml), compress_to_fp16=False)
        Path(xml).with_suffix(".bin").replace(weights)
        # the .xml names its weights file: point it at the final name
        text = Path(xml).read_text()
        Path(xml).write_text(text.replace(Path(xml).with_suffix(".bin").name, path.with_suffix(".bin").name))
    return path
