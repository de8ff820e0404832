"""Building TensorRT engines, through the engine cache: TensorRT's ONNX parser, or torch-tensorrt.

::

    entry = engine_for(net, info, profile_for_batch(8, 512, 1024), BuildOptions(precision="fp16"))
    entry.plan, entry.header, entry.built     # built=False: it came from the cache

TensorRT is imported lazily and its major version decides how precision is asked for:

* TensorRT 10 (weakly typed): the fp32 ONNX, ``BuilderFlag.FP16`` for fp16, and every
  normalisation layer (InstanceNormalization) pinned to fp32 with ``layer.precision`` /
  ``set_output_type`` under ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
* TensorRT 11 (always strongly typed; the precision flags are gone): the precision is the ONNX's
  own, so fp16 builds from the FP16 ONNX (:mod:`gtacity.engine.exporters.onnx`), which already keeps
  InstanceNormalization and the I/O in fp32.

Both use one optimisation profile, a workspace limit and a timing cache kept beside the engines
(a second build on the same GPU skips most kernel timing). ``via="torch-tensorrt"`` builds from
the generator module with torch-tensorrt's dynamo path instead (half weights, explicit typing, the
InstanceNorm statistics in fp32 as :class:`~gtacity.nets.InstanceNorm2dFP32` computes them); its
engine carries the same header and lands in the same cache, so the TensorRT backend loads either.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from gtacity.checkpoint import GeneratorInfo
from gtacity.engine.exporters.cache import cache_root
from gtacity.engine.exporters.onnx import OPSET, metadata, onnx_format_for, onnx_model, save_onnx
from gtacity.engine.exporters.plan import CachedPlan, PlanCache, PlanError, PlanKey, Profile
from gtacity.nets import SIZE_MULTIPLE

INSTALL_HINT = ('TensorRT is not installed: pip install "gtacity[tensorrt]" (pip fetches its '
                "libraries from NVIDIA's package index, which must be reachable) on a machine with "
                "an NVIDIA GPU")
VIAS = ("onnx", "torch-tensorrt")
ENGINE_PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine.

    Attributes:
        precision: ``fp16`` (InstanceNorm in fp32) or ``fp32`` (TF32 convolutions on TensorRT 10).
        via: ``onnx`` (TensorRT's ONNX parser) or ``torch-tensorrt`` (its dynamo path).
        workspace_gib: scratch memory TensorRT may use while building and choosing kernels; more
            lets it consider faster tactics for big frames.
        cache_dir: root of the caches (engines, ONNX, timing); None = ``$GTACITY_CACHE_DIR`` or
            ``~/.cache/gtacity``; ``""`` = build every time, keep nothing.
    """

    precision: str = "fp16"
    via: str = "onnx"
    workspace_gib: float = 4.0
    cache_dir: str | None = None

    def __post_init__(self):
        if self.precision not in ENGINE_PRECISIONS:
            raise PlanError(f"TensorRT engines are built in {' or '.join(ENGINE_PRECISIONS)}, "
                              f"not {self.precision}")
        if self.via not in VIAS:
            raise PlanError(f"--via {self.via!r}: choose {' or '.join(VIAS)}")
        if not self.workspace_gib > 0:
            raise PlanError(f"the TensorRT workspace must be more than 0 GiB, got {self.workspace_gib}")


@functools.cache
def import_tensorrt():
    """The ``tensorrt`` module.

    Raises:
        PlanError: not installed (or its libraries missing), with how to get it.
    """
    try:
        import tensorrt
    except (ImportError, OSError):
        raise PlanError(INSTALL_HINT) from None
    return tensorrt


def tensorrt_missing() -> str | None:
    """Why TensorRT cannot be used here, or None."""
    try:
        import_tensorrt()
    except PlanError as e:
        return str(e)
    return None


def strongly_typed(trt) -> bool:
    """TensorRT 11 and later build every network strongly typed and have no precision flags."""
    return int(trt.__version__.split(".")[0]) >= 11


def gpu_identity(device: torch.device) -> tuple[str, str]:
    """(GPU name, compute capability like ``"9.0"``) of ``device``: part of every engine key."""
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def engine_for(net: nn.Module, info: GeneratorInfo | None, profile: Profile,
               options: BuildOptions, device: torch.device | None = None) -> CachedPlan:
    """The engine of ``net`` for ``profile``: from the cache, else built and cached.

    Raises:
        PlanError: TensorRT (or torch-tensorrt) missing, no CUDA GPU, or a failed build.
    """
    trt = import_tensorrt()
    if not torch.cuda.is_available():
        raise PlanError("building a TensorRT engine needs an NVIDIA GPU; torch sees no CUDA device")
    device = device or torch.device("cuda", torch.cuda.current_device())
    gpu_name, capability = gpu_identity(device)
    if options.via == "onnx":
        fmt = onnx_format_for(options.precision, strongly_typed(trt))
        onnx_path = cached_onnx(net, info, fmt, options.cache_dir)
        source = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    else:
        torch_tensorrt = _import_torch_tensorrt()
        meta = json.dumps(metadata(net, info, options.precision), sort_keys=True)
        seed = f"{meta} torch-tensorrt {torch_tensorrt.__version__}"
        source = hashlib.sha256(seed.encode()).hexdigest()
    key = PlanKey(source, options.via, options.precision, str(profile), trt.__version__,
                    gpu_name, capability)
    cache = PlanCache(cache_root(options.cache_dir, "tensorrt"))
    cached = cache.load(key)
    if cached is not None:
        return cached
    timing = _timing_cache_path(cache, key)
    if options.via == "onnx":
        plan = build_from_onnx(trt, onnx_path, profile, options, timing)
    else:
        plan = build_with_torch_tensorrt(net, profile, options, device, timing)
    header = {"key": asdict(key), "generator": metadata(net, info, options.precision),
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return cache.store(key, header, plan)


def cached_onnx(net: nn.Module, info: GeneratorInfo | None, fmt: str, cache_dir: str | None) -> Path:
    """The ONNX file of format ``fmt`` for ``net``, exported once per generator and kept."""
    meta = metadata(net, info, fmt)
    name = hashlib.sha256(f"{json.dumps(meta, sort_keys=True)} opset {OPSET} torch {torch.__version__}"
                          .encode()).hexdigest()[:32]
    root = cache_root(cache_dir, "onnx") or Path(_scratch_dir())
    path = root / f"{name}-{fmt}.onnx"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        save_onnx(onnx_model(net, info, fmt), path)
    return path


@functools.cache
def _scratch_dir() -> str:
    return tempfile.mkdtemp(prefix="gtacity-onnx-")


def _timing_cache_path(cache: PlanCache, key: PlanKey) -> Path | None:
    if cache.root is None:
        return None
    tag = hashlib.sha256(f"{key.tensorrt_version} {key.gpu_name} {key.compute_capability}".encode())
    return cache.root / f"timing-{tag.hexdigest()[:16]}.cache"


def build_from_onnx(trt, onnx_path: Path, profile: Profile, options: BuildOptions,
                    timing_path: Path | None) -> bytes:
    """A serialized plan from ``onnx_path`` with TensorRT's Python API (see the module docstring)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch always; TensorRT 11 is strongly typed always
    parser = trt.OnnxParser(network, logger)
    # A native normalisation layer (not the InstanceNormalization_TRT plugin), so the fp32 pin
    # below finds it on TensorRT 10 and strong typing governs it on TensorRT 11.
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 2**30))
    if options.precision == "fp16" and not strongly_typed(trt):
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_normalisation_fp32(trt, network)
    shapes = builder.create_optimization_profile()
    shapes.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(shapes)
    old = timing_path.read_bytes() if timing_path is not None and timing_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(old), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PlanError(f"TensorRT could not build an engine from {onnx_path} for {profile} "
                          "(its messages above say why)")
    if timing_path is not None:
        _write_quietly(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _pin_normalisation_fp32(trt, network) -> None:
    """TensorRT 10 under BuilderFlag.FP16: keep every normalisation layer (statistics) in fp32."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def _import_torch_tensorrt():
    try:
        import torch_tensorrt
    except (ImportError, OSError):
        raise PlanError(INSTALL_HINT.replace("TensorRT is", "torch-tensorrt is")) from None
    return torch_tensorrt


class TypedGenerator(nn.Module):
    """The generator with weights in ``dtype`` behind fp32 input and output (torch-tensorrt path)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype
        self.net = net.to(dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()


def export_for_profile(module: nn.Module, profile: Profile, device: torch.device):
    """``torch.export`` of ``module`` with the profile's varying dims dynamic, the others fixed."""
    dims: dict[int, object] = {}
    for axis, name in ((0, "batch"), (2, "height_4"), (3, "width_4")):
        low, high = profile.min[axis], profile.max[axis]
        if low == high:
            continue
        if axis == 0:
            dims[axis] = Dim(name, min=low, max=high)
        else:
            dims[axis] = SIZE_MULTIPLE * Dim(name, min=low // SIZE_MULTIPLE, max=high // SIZE_MULTIPLE)
    # The largest shape as example: a dynamic dim never has example size 1 (which would specialise).
    example = torch.zeros(profile.max, device=device)
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=(dims or None,))


def build_with_torch_tensorrt(net: nn.Module, profile: Profile, options: BuildOptions,
                              device: torch.device, timing_path: Path | None) -> bytes:
    """A serialized plan from the generator module with torch-tensorrt's dynamo path."""
    torch_tensorrt = _import_torch_tensorrt()
    dtype = torch.float16 if options.precision == "fp16" else torch.float32
    module = TypedGenerator(copy.deepcopy(net).eval().to(device), dtype)
    exported = export_for_profile(module, profile, device)
    spec = torch_tensorrt.Input(min_shape=profile.min, opt_shape=profile.opt, max_shape=profile.max,
                                dtype=torch.float32)
    extra = {"timing_cache_path": str(timing_path)} if timing_path is not None else {}
    plan = torch_tensorrt.dynamo.convert_exported_program_to_serialized_trt_engine(
        exported, arg_inputs=[spec], use_explicit_typing=True,
        workspace_size=int(options.workspace_gib * 2**30), **extra,
    )
    return bytes(plan)


def _write_quietly(path: Path, data: bytes) -> None:
    """Best effort: a timing cache that cannot be written only costs the next build time."""
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
