"""Generator -> ONNX -> FP16 ONNX: the graphs ``gtacity export`` writes and TensorRT builds from.

The TensorRT side asks :func:`onnx_format_for` which ONNX variant an engine is built from, so no
caller branches on format names.

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
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from gtacity import __version__
from gtacity.checkpoint import GeneratorInfo
from gtacity.engine.exporters.cache import weights_checksum
from gtacity.engine.exporters.shapes import ExportError, check_frame_shape
from gtacity.files import written_whole
from gtacity.nets import MAX_BATCH, MAX_SIDE, MIN_SIZE, SIZE_MULTIPLE

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "frames", "translated"
# Kept in fp32 by the FP16 conversion: the normalisation computes per-channel mean and variance.
FP32_OPS = ("InstanceNormalization",)
# The ONNX variants and the precision each computes in.
ONNX_FORMATS = {"onnx": "fp32", "onnx-fp16": "fp16"}
ONNX_INSTALL_HINT = 'ONNX export needs onnx, onnxscript and onnxconverter-common: pip install "gtacity[onnx]"'


def _import_onnx():
    try:
        import onnx
        import onnxscript  # noqa: F401 - the torch.export-based exporter needs it
    except ImportError:
        raise ExportError(ONNX_INSTALL_HINT) from None
    return onnx


def info_of(net: nn.Module, info: GeneratorInfo | None = None) -> GeneratorInfo:
    """``info`` if given, else what ``net`` itself tells (width and depth; no direction)."""
    return info if info is not None else GeneratorInfo(ngf=net.ngf, n_blocks=net.n_blocks, arch=net.arch,
                                                            upsample=getattr(net, "upsample", "transpose"))


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
    if info.upsample != "transpose":  # absent means the paper's, as in generator files (keeps old cache keys)
        meta["upsample"] = info.upsample
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
        side = {"min": MIN_SIZE // SIZE_MULTIPLE, "max": MAX_SIDE // SIZE_MULTIPLE}
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


def save_onnx(model, path: str | Path) -> Path:
    """Write ``model`` as one self-contained file, through a temporary name (no half-written file)."""
    onnx = _import_onnx()
    path = Path(path)
    with written_whole(path) as partial:
        onnx.save_model(model, str(partial), save_as_external_data=False)
    return path


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
    """The ONNX model of format ``fmt`` (a key of :data:`ONNX_FORMATS`) for ``net``."""
    model = to_onnx(net, info, shape=shape)
    return to_fp16(model) if ONNX_FORMATS[fmt] == "fp16" else model


def _cpu_copy(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).to("cpu", torch.float32).eval()
