"""``gtacity export``: one table of formats, :data:`FORMATS`, and the one call that writes any of them.

::

    from gtacity.engine import ExportConfig, export
    export(ExportConfig("gen.safetensors", "gen.onnx", format="onnx"))          # dynamic N, H, W
    export(ExportConfig("gen.safetensors", "gen16.onnx", format="onnx-fp16"))
    export(ExportConfig("gen.safetensors", "gen.engine", format="engine", shape="8x3x512x1024"))

``gtacity export --format`` offers the table's keys and each entry writes its own kind of file, so no
caller branches on format names. The ONNX graphs come from :mod:`~gtacity.engine.exporters.onnx`, the
TensorRT plan from :mod:`~gtacity.engine.exporters.tensorrt`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from gtacity.checkpoint import GeneratorInfo, load_generator
from gtacity.engine.exporters import int8
from gtacity.engine.exporters.cache import cache_root
from gtacity.engine.exporters.onnx import ONNX_FORMATS, onnx_model, save_onnx
from gtacity.engine.exporters.openvino import save_ir
from gtacity.engine.exporters.plan import profile_from
from gtacity.engine.exporters.shapes import ExportError, parse_shape
from gtacity.engine.exporters.tensorrt import BuildOptions, engine_for


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
        calibration: ``openvino-int8`` only: frames like those it will translate (folder, video, image).
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
    calibration: str | Path | None = None
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


def _write_onnx(net: nn.Module, info: GeneratorInfo, cfg: ExportConfig) -> None:
    shape = parse_shape(cfg.shape) if cfg.shape else None
    if cfg.min_shape or cfg.max_shape or cfg.via != "onnx":
        raise ExportError("--min-shape/--max-shape/--via are for --format engine; an ONNX file is "
                          "dynamic without --shape, or fixed to --shape")
    save_onnx(onnx_model(net, info, cfg.format, shape), cfg.output)


def _write_engine(net: nn.Module, info: GeneratorInfo, cfg: ExportConfig) -> None:
    if not cfg.shape:
        raise ExportError("--format engine needs --shape NxCxHxW (the shape TensorRT optimises "
                          "for), e.g. --shape 8x3x512x1024")
    profile = profile_from(cfg.shape, cfg.min_shape, cfg.max_shape)
    options = BuildOptions(precision="fp16", via=cfg.via, workspace_gib=cfg.workspace_gib)
    entry = engine_for(net, info, profile, options)
    entry.copy_to(Path(cfg.output))


def _write_openvino_int8(net: nn.Module, info: GeneratorInfo, cfg: ExportConfig) -> None:
    """The int8 IR (``.xml`` + ``.bin`` beside it), also stored as the generator's int8 model in the
    cache, so ``--precision int8`` with these weights reuses it instead of calibrating."""
    if not cfg.calibration:
        raise ExportError("--format openvino-int8 needs --calibration DIR: frames like the ones it will translate "
                          "(GTA5 frames for a gta2city generator, Cityscapes frames for city2gta)")
    if Path(cfg.output).suffix != ".xml":
        raise ExportError(f"{cfg.output}: an OpenVINO IR is named .xml (its weights go to .bin beside it)")
    model, check = int8.for_generator(net, int8.calibration_frames(cfg.calibration), cache_root(None, "openvino"))
    print(check.line(), file=sys.stderr)
    save_ir(model, Path(cfg.output))


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("onnx", ".onnx", ONNX_FORMATS["onnx"], "ONNX, fp32, dynamic batch/height/width", _write_onnx),
    Format("onnx-fp16", ".onnx", ONNX_FORMATS["onnx-fp16"],
           "ONNX, fp16 weights and convolutions, InstanceNorm and I/O in fp32", _write_onnx),
    Format("engine", ".engine", "fp16", "TensorRT fp16 plan for this GPU (needs TensorRT + CUDA)",
           _write_engine),
    Format("openvino-int8", ".xml", "int8", "OpenVINO IR, int8 (NNCF), calibrated on --calibration",
           _write_openvino_int8),
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
