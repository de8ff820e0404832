"""TensorRT engine files and their cache: shape profiles, the cache key, the metadata header.

Nothing here imports TensorRT, so all of it is tested on any machine.

An engine file is a TensorRT plan behind a self-describing header::

    b"GTACITY-TRT\\0"  |  uint32 little-endian n  |  n bytes of UTF-8 JSON  |  the plan

The JSON says what the engine was built from and for (the :class:`PlanKey` fields: source
checksum, precision, shape profile, TensorRT version, GPU and compute capability) and what the
generator is (direction, value range, arch, ...). A file without the magic (a raw plan, anything
else) or with a damaged header is refused with one line, before TensorRT sees it.

The engine cache (vs-mlrt's idea) is a folder of such files named by the key's digest: a changed
key means another file, so it is built; an unchanged key finds its file and never rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from gtacity.engine.exporters.shapes import ExportError, check_frame_shape, parse_shape
from gtacity.errors import GtacityError
from gtacity.filekinds import ENGINE_MAGIC
from gtacity.files import written_whole

MAGIC = ENGINE_MAGIC  # one definition: gtacity.filekinds recognises these files given as --weights
HEADER_FORMAT, HEADER_VERSION = "gtacity-tensorrt-engine", 1
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 1 << 20  # a real header is ~1 KB; more means the length field is damaged
Shape = tuple[int, int, int, int]


class PlanError(GtacityError):
    """An engine file that cannot be used, or an engine that cannot be built here."""


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile for the one input: smallest, optimal and largest NCHW shape."""

    min: Shape
    opt: Shape
    max: Shape

    def __str__(self) -> str:
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))

    def accepts(self, shape: tuple[int, ...]) -> bool:
        """Whether a batch of ``shape`` is inside the profile."""
        return len(shape) == 4 and all(lo <= v <= hi for lo, v, hi in zip(self.min, shape, self.max))


def profile_from(shape: str, min_shape: str | None = None, max_shape: str | None = None) -> Profile:
    """The profile of ``--shape`` / ``--min-shape`` / ``--max-shape`` (each ``NxCxHxW``).

    Defaults: ``min`` is batch 1 at ``shape``'s size (a short last batch still runs), ``max`` is
    ``shape``.

    Raises:
        ExportError: a malformed shape, or min <= opt <= max failing in some dimension.
    """
    opt = parse_shape(shape, "--shape")
    low = parse_shape(min_shape, "--min-shape") if min_shape else (1, *opt[1:])
    high = parse_shape(max_shape, "--max-shape") if max_shape else opt
    profile = Profile(low, opt, high)  # type: ignore[arg-type]
    if not profile.accepts(opt):
        raise ExportError(f"shapes must satisfy --min-shape <= --shape <= --max-shape in every "
                          f"dimension; got {profile} (min:opt:max)")
    return profile


def profile_for_batch(max_batch: int, height: int, width: int) -> Profile:
    """What a backend prepared for up to ``max_batch`` frames of ``height x width`` needs."""
    check_frame_shape((max_batch, 3, height, width))
    full: Shape = (max_batch, 3, height, width)
    return Profile((1, 3, height, width), full, full)


@dataclass(frozen=True)
class PlanKey:
    """Everything an engine depends on; any change means another engine.

    Attributes:
        source_sha256: the ONNX file it is built from (``via="onnx"``), or the generator's weights
            plus the torch-tensorrt version (``via="torch-tensorrt"``).
        via: ``onnx`` or ``torch-tensorrt``.
        precision: ``fp32`` or ``fp16``.
        profile: ``str(Profile)``.
        tensorrt_version, gpu_name, compute_capability: of the machine that builds (a plan only
            runs with the TensorRT version and on the GPU model it was built for).
    """

    source_sha256: str
    via: str
    precision: str
    profile: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def digest(self) -> str:
        """A short, stable name for the key (the cache file name)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def from_dict(cls, values: dict) -> "PlanKey":
        """The key recorded in a header; raises KeyError/TypeError for a damaged one."""
        return cls(**{f.name: str(values[f.name]) for f in fields(cls)})


def pack(header: dict, plan: bytes) -> bytes:
    """Header and plan as the bytes of an engine file."""
    text = json.dumps({"format": HEADER_FORMAT, "format_version": HEADER_VERSION, **header},
                      sort_keys=True).encode()
    return MAGIC + _LENGTH.pack(len(text)) + text + plan


def unpack(data: bytes, where: str) -> tuple[dict, bytes]:
    """(header, plan) of engine-file bytes; ``where`` names the file in errors.

    Raises:
        PlanError: no gtacity header, a damaged one, a newer format, or no plan after it.
    """
    start = len(MAGIC) + _LENGTH.size
    if not data.startswith(MAGIC) or len(data) < start:
        raise PlanError(f"{where}: not a gtacity TensorRT engine (no gtacity header); build one "
                          "with `gtacity export --format engine` or let --backend tensorrt build it")
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    try:
        if length > _MAX_HEADER or start + length > len(data):
            raise ValueError("header length past the end of the file")
        header = json.loads(data[start:start + length].decode())
        PlanKey.from_dict(header["key"])
        version = int(header["format_version"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise PlanError(f"{where}: damaged gtacity engine header ({e}); build the engine again") from None
    if header.get("format") != HEADER_FORMAT or version > HEADER_VERSION:
        raise PlanError(f"{where}: engine header {header.get('format')} v{version} is not one this "
                          f"gtacity reads ({HEADER_FORMAT} v{HEADER_VERSION}); upgrade gtacity or rebuild")
    plan = data[start + length:]
    if not plan:
        raise PlanError(f"{where}: the engine file ends after its header (truncated); build it again")
    return header, plan


def write_engine(path: Path, header: dict, plan: bytes) -> Path:
    """Write an engine file through a temporary name, so readers see a whole file or none."""
    with written_whole(path) as partial:
        partial.write_bytes(pack(header, plan))
    return path


def read_engine(path: str | Path) -> tuple[dict, bytes]:
    """(header, plan) of an engine file.

    Raises:
        PlanError: missing, unreadable, foreign or damaged file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PlanError(f"{path}: cannot read the engine file ({e.strerror or e})") from None
    return unpack(data, str(path))


@dataclass(frozen=True)
class CachedPlan:
    """An engine from the cache (or just built into it)."""

    header: dict
    plan: bytes
    path: Path | None
    built: bool

    def copy_to(self, output: Path) -> Path:
        """Write this engine, header included, to ``output``."""
        return write_engine(output, self.header, self.plan)


class PlanCache:
    """A folder of engine files named by :meth:`PlanKey.digest`; ``root=None``: no cache."""

    def __init__(self, root: Path | None):
        self.root = root

    def path(self, key: PlanKey) -> Path | None:
        """Where the engine of ``key`` lives (None without a cache)."""
        return None if self.root is None else self.root / f"{key.digest()}.engine"

    def load(self, key: PlanKey) -> CachedPlan | None:
        """The cached engine of ``key``, or None (absent, damaged, or holding another key)."""
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            header, plan = read_engine(path)
        except PlanError:
            return None  # a damaged entry is rebuilt and replaced
        if PlanKey.from_dict(header["key"]) != key:
            return None
        return CachedPlan(header, plan, path, built=False)

    def store(self, key: PlanKey, header: dict, plan: bytes) -> CachedPlan:
        """Keep a freshly built engine; a cache that cannot be written costs only the next run time."""
        path = self.path(key)
        if path is not None:
            try:
                write_engine(path, header, plan)
            except OSError:
                path = None
        return CachedPlan(header, plan, path, built=True)
