"""Generator -> ONNX -> FP16 ONNX -> TensorRT plan: one table of formats for export and the backends.

::

    from gtacity.engine.export import ExportConfig, export
    export(ExportConfig("gen.safetensors", "gen.onnx", format="onnx"))          # dynamic N, H, W
    export(ExportConfig("gen.safetensors", "gen16.onnx", format="onnx-fp16"))
    export(ExportConfig("gen.safetensors", "gen.engine", format="engine", shape="8x3x512x1024"))

:data:`FORMATS` is the one table: ``gtacity export --format`` offers its keys, each entry says what
it holds and writes it, and the TensorRT backend asks it for the ONNX variant an engine is built
from (:func:`onnx_format_for`), so no caller branches on format names.

ONNX files are made with the ``torch.export``-based exporter (``dynamo=True``, opset 18): with
dynamic batch, height and width it gives a clean graph of 35 nodes for the tiny generator (Conv,
ConvTranspose, InstanceNormalization, Pad(reflect), Relu, Add, Tanh), where the TorchScript exporter
adds ~100 Reshape/Slice/Cast nodes around every InstanceNormalization. Height and width must be
multiples of 4 (the pipeline reflect-pads frames to that). Every file is self-contained (weights
inside) and describes itself in ``metadata_props``: direction, value range, arch, ngf, n_blocks,
norm, the weights' SHA-256, the gtacity version and the precision.

FP16 ONNX: every weight and Conv/ConvTranspose/Relu/Pad/Add/Tanh in fp16; each InstanceNormalization
gets its input cast to fp32 and computes its statistics in fp32 (fp16 variance of a large feature
map overflows), then casts back; inputs and outputs stay fp32 so callers need not change.
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.export import Dim

from gtacity import __version__
from gtacity.checkpoint import GeneratorInfo, load_generator
from gtacity.errors import GtacityError
from gtacity.files import written_whole
from gtacity.nets import SIZE_MULTIPLE

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "frames", "translated"
# Bounds of the dynamic dims: 8 px to 16384 px sides, up to 1024 frames per call.
MAX_BATCH, MIN_SIDE, MAX_SIDE = 1024, 2 * SIZE_MULTIPLE, 16384
# Kept in fp32 by the FP16 conversion: the normalisation computes per-channel mean and variance.
FP32_OPS = ("InstanceNormalization",)
ONNX_INSTALL_HINT = 'ONNX export needs onnx, onnxscript and onnxconverter-common: pip install "gtacity[onnx]"'


class ExportError(GtacityError):
    """An export that cannot run as asked (bad shape, output refused, a package missing)."""


@dataclass(frozen=True)
class ExportConfig:
    """One ``gtacity export`` job.

    Attributes:
        weights: a generator file (ours or an official ``.pth``).
        output: the file to write.
        format: a key of :data:`FORMATS`.
        shape: ``NxCxHxW``. ONNX formats: a fixed-shape graph of that shape (none: dynamic batch,
            height and width). ``engine``: the shape TensorRT optimises for (required).
        min_shape, max_shape: ``engine`` only: the smallest and largest shapes the engine accepts
            (default: batch 1 at ``shape``'s size, and ``shape``).
        via: ``engine`` only: ``onnx`` (TensorRT's ONNX parser) or ``torch-tensorrt``.
        direction: what the generator translates, for files that do not record it.
        workspace_gib: ``engine`` only: TensorRT's scratch-memory limit while building.
        overwrite: replace an existing output (never the input).
    """

    weights: str | Path
    output: str | Path
    format: str = "onnx"
    shape: str | None = None
    min_shape: str | None = None
    max_shape: str | None = None
    via: str = "onnx"
    direction: str | None = None
    workspace_gib: float = 4.0
    overwrite: bool = False


@dataclass(frozen=True)
class Format:
    """One way to export a generator.

    Attributes:
        name: the ``--format`` value.
        suffix: the usual file suffix.
        precision: the compute precision it carries (``fp32``/``fp16``).
        summary: one line for ``--help``.
        write: ``(net, info, cfg) -> None``: writes ``cfg.output``.
    """

    name: str
    suffix: str
    precision: str
    summary: str
    write: Callable[[nn.Module, GeneratorInfo, ExportConfig], None]


def _import_onnx():
    try:
        import onnx
        import onnxscript  # noqa: F401 - the torch.export-based exporter needs it
    except ImportError:
        raise ExportError(ONNX_INSTALL_HINT) from None
    return onnx


def weights_checksum(net: nn.Module) -> str:
    """SHA-256 of every weight's name, shape and fp32 value: equal for equal generators, whatever
    file (fp16 safetensors, official ``.pth``) they came from."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def info_of(net: nn.Module, info: GeneratorInfo | None = None) -> GeneratorInfo:
    """``info`` if given, else what ``net`` itself tells (width and depth; no direction)."""
    return info if info is not None else GeneratorInfo(ngf=net.ngf, n_blocks=net.n_blocks, arch=net.arch)


def metadata(net: nn.Module, info: GeneratorInfo | None, precision: str) -> dict[str, str]:
    """What an exported file says about itself (ONNX ``metadata_props``, engine headers)."""
    info = info_of(net, info)
    meta = {
        "producer": "gtacity", "gtacity_version": __version__, "arch": info.arch,
        "ngf": str(info.ngf), "n_blocks": str(info.n_blocks), "norm": info.norm,
        "value_range": info.value_range, "source_sha256": weights_checksum(net),
        "precision": precision, "io_dtype": "float32",
    }
    if info.direction:
        meta["direction"] = info.direction
    return meta


def to_onnx(net: nn.Module, info: GeneratorInfo | None = None, *,
            shape: tuple[int, int, int, int] | None = None):
    """The generator as an fp32 ``onnx.ModelProto`` (opset 18) with metadata.

    Args:
        net: the generator; it is not modified.
        info: its file's description (direction etc.); None: what ``net`` tells.
        shape: ``(N, 3, H, W)`` for a fixed-shape graph; None: dynamic batch, height and width.

    Raises:
        ExportError: onnx/onnxscript not installed, or a shape the generator cannot take.
    """
    onnx = _import_onnx()
    net = _cpu_copy(net)
    if shape is None:
        example = torch.zeros(2, 3, 8 * SIZE_MULTIPLE, 8 * SIZE_MULTIPLE)  # batch 2: 0/1 specialise
        side = {"min": MIN_SIDE // SIZE_MULTIPLE, "max": MAX_SIDE // SIZE_MULTIPLE}
        dims = {0: Dim("batch", min=1, max=MAX_BATCH), 2: SIZE_MULTIPLE * Dim("height_4", **side),
                3: SIZE_MULTIPLE * Dim("width_4", **side)}
        dynamic_shapes = (dims,)
    else:
        check_frame_shape(shape)
        example, dynamic_shapes = torch.zeros(*shape), None
    with torch.no_grad():
        program = torch.onnx.export(
            net, (example,), dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic_shapes,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], optimize=True, verbose=False,
        )
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata(net, info, "fp32"))
    return model


def to_fp16(model):
    """An FP16 copy of an fp32 ONNX generator: InstanceNormalization in fp32, fp32 inputs/outputs."""
    onnx = _import_onnx()
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError(ONNX_INSTALL_HINT) from None
    with warnings.catch_warnings():
        # It warns for every weight below fp16's smallest normal that it flushes to 1e-7: expected.
        warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
        half = float16.convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(FP32_OPS), disable_shape_infer=False,
        )
    _fold_constant_casts(onnx, half)
    props = {p.key: p.value for p in model.metadata_props}
    props["precision"] = "fp16"
    del half.metadata_props[:]
    onnx.helper.set_model_props(half, props)
    return half


def _fold_constant_casts(onnx, model) -> None:
    """Replace each Cast of an initializer by the cast initializer (in place).

    The converter turns every initializer to fp16, then casts InstanceNormalization's scale and
    bias back to fp32; folding those casts leaves fp32 constants there, which every runtime's
    InstanceNormalization accepts as plain weights.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in constants:
            to = onnx.helper.tensor_dtype_to_np_dtype(node.attribute[0].i)
            values = numpy_helper.to_array(constants[node.input[0]]).astype(to)
            graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
            folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    onnx = _import_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def save_onnx(model, path: str | Path) -> Path:
    """Write ``model`` as one self-contained file, through a temporary name (no half-written file)."""
    onnx = _import_onnx()
    path = Path(path)
    with written_whole(path) as partial:
        onnx.save_model(model, str(partial), save_as_external_data=False)
    return path


def parse_shape(text: str, what: str = "--shape") -> tuple[int, int, int, int]:
    """``"8x3x512x1024"`` -> ``(8, 3, 512, 1024)`` (batch, channels, height, width).

    Raises:
        ExportError: not four whole numbers, or a shape the generator cannot take.
    """
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ExportError(f"{what} {text!r}: use NxCxHxW, e.g. 8x3x512x1024")
    shape = tuple(int(p) for p in parts)
    check_frame_shape(shape, what)  # type: ignore[arg-type]
    return shape  # type: ignore[return-value]


def check_frame_shape(shape: tuple[int, ...], what: str = "shape") -> None:
    """Raise :class:`ExportError` unless ``shape`` is ``(N >= 1, 3, H, W)`` with H, W multiples of 4."""
    text = "x".join(map(str, shape))
    if len(shape) != 4 or shape[0] < 1 or shape[1] != 3:
        raise ExportError(f"{what} {text}: the generator takes N x 3 x H x W with N >= 1")
    for side in shape[2:]:
        if side % SIZE_MULTIPLE or not MIN_SIDE <= side <= MAX_SIDE:
            raise ExportError(f"{what} {text}: height and width must be multiples of {SIZE_MULTIPLE} "
                              f"from {MIN_SIDE} to {MAX_SIDE} (frames are padded to that)")


def onnx_format_for(precision: str, strongly_typed: bool) -> str:
    """The ONNX variant a TensorRT engine of ``precision`` is built from.

    A strongly typed build (TensorRT 11; no precision flags) takes its precision from the ONNX, so
    fp16 needs the FP16 ONNX; a weakly typed one (TensorRT 10, ``BuilderFlag.FP16``) starts from
    fp32 and lets the builder choose fp16 kernels, with InstanceNormalization pinned to fp32.
    """
    if precision == "fp16" and strongly_typed:
        return "onnx-fp16"
    return "onnx"


def onnx_model(net: nn.Module, info: GeneratorInfo | None, fmt: str,
               shape: tuple[int, int, int, int] | None = None):
    """The ONNX model of format ``fmt`` (``onnx`` or ``onnx-fp16``) for ``net``."""
    model = to_onnx(net, info, shape=shape)
    return to_fp16(model) if FORMATS[fmt].precision == "fp16" else model


def _write_onnx(net: nn.Module, info: GeneratorInfo, cfg: ExportConfig) -> None:
    shape = parse_shape(cfg.shape) if cfg.shape else None
    if cfg.min_shape or cfg.max_shape or cfg.via != "onnx":
        raise ExportError("--min-shape/--max-shape/--via are for --format engine; an ONNX file is "
                          "dynamic without --shape, or fixed to --shape")
    save_onnx(onnx_model(net, info, cfg.format, shape), cfg.output)


def _write_engine(net: nn.Module, info: GeneratorInfo, cfg: ExportConfig) -> None:
    from gtacity.engine.engine_file import profile_from
    from gtacity.engine.tensorrt_build import BuildOptions, engine_for

    if not cfg.shape:
        raise ExportError("--format engine needs --shape NxCxHxW (the shape TensorRT optimises "
                          "for), e.g. --shape 8x3x512x1024")
    profile = profile_from(cfg.shape, cfg.min_shape, cfg.max_shape)
    options = BuildOptions(precision="fp16", via=cfg.via, workspace_gib=cfg.workspace_gib)
    entry = engine_for(net, info, profile, options)
    entry.copy_to(Path(cfg.output))


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", "fp32", "ONNX, fp32, dynamic batch/height/width", _write_onnx),
    Format("onnx-fp16", ".onnx", "fp16",
           "ONNX, fp16 weights and convolutions, InstanceNorm and I/O in fp32", _write_onnx),
    Format("engine", ".engine", "fp16", "TensorRT fp16 plan for this GPU (needs TensorRT + CUDA)",
           _write_engine),
)}


def export(cfg: ExportConfig) -> Path:
    """Write ``cfg.weights`` as ``cfg.format`` to ``cfg.output``; the file appears only when whole.

    Raises:
        ExportError: unknown format, bad shapes, an existing output without ``overwrite``, the
            output being the input, or a package the format needs missing.
        GtacityError: unreadable weights; TensorRT missing or failing (``engine``).
    """
    fmt = FORMATS.get(cfg.format)
    if fmt is None:
        raise ExportError(f"unknown format {cfg.format!r}; choose from {', '.join(FORMATS)}")
    output = Path(cfg.output)
    if output.exists() and output.resolve() == Path(cfg.weights).resolve():
        raise ExportError(f"{output}: that is the input generator; choose another output file")
    if output.exists() and not cfg.overwrite:
        raise ExportError(f"{output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise ExportError(f"{output}: folder {output.parent} does not exist")
    net, info = load_generator(cfg.weights, direction=cfg.direction)
    fmt.write(net, info, cfg)
    return output


def _cpu_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to("cpu", torch.float32).eval()


def cache_root(setting: str | None, kind: str) -> Path | None:
    """``<cache>/<kind>``: ``setting``, else ``$GTACITY_CACHE_DIR``, else ``~/.cache/gtacity``;
    ``""`` means no cache (None)."""
    if setting is None:
        setting = os.environ.get("GTACITY_CACHE_DIR") or str(Path.home() / ".cache" / "gtacity")
    return Path(setting) / kind if setting else None
