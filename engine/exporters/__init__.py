"""Exported and compiled generators: ONNX, FP16 ONNX, OpenVINO int8, TensorRT plans, and their caches.

:func:`export` with an :class:`ExportConfig` is the one call behind ``gtacity export``.
"""

from gtacity.engine.exporters.formats import FORMATS, ExportConfig, export
from gtacity.engine.exporters.shapes import ExportError

__all__ = ["FORMATS", "ExportConfig", "ExportError", "export"]
