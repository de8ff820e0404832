"""gtacity's inference engine: translate videos, folders and images; export, bench and evaluate.

The names below are the engine's public face; import them from here, so the modules behind them can
move without breaking anyone::

    from gtacity.engine import TranslateConfig, translate
    report = translate(TranslateConfig("drive.mp4", "drive_city.mp4"))   # bundled demo generator
    print(report.frames, report.times.fps)

    from gtacity.engine import ExportConfig, export
    export(ExportConfig("gen.safetensors", "gen.onnx", format="onnx"))

    from gtacity.engine import Translator
    city = Translator("gta2city_demo")(frames)   # numpy or torch uint8 frames in, the same kind out

Each name is imported on first use (PEP 562), so ``import gtacity.engine`` stays cheap and the
command line starts fast.

Rooms: ``media/`` (what comes in and goes out), ``stream/`` (the stage graph), ``backends/``,
``export/``, ``jobs/`` (folder jobs), ``temporal/`` (flicker remedies), ``measure/`` (bench and
evaluation).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_PUBLIC = {
    "translate": "gtacity.engine.translation",
    "TranslateConfig": "gtacity.engine.translation",
    "TranslateReport": "gtacity.engine.translation",
    "TranslateError": "gtacity.engine.translation",
    "DamagedInputError": "gtacity.engine.translation",
    "Translator": "gtacity.engine.translator",
    "Frame": "gtacity.engine.frames",
    "create_backend": "gtacity.engine.backends",
    "available_backends": "gtacity.engine.backends",
    "BACKENDS": "gtacity.engine.backends",
    "Backend": "gtacity.engine.backends",
    "BackendError": "gtacity.engine.backends",
    "export": "gtacity.engine.exporters",
    "ExportConfig": "gtacity.engine.exporters",
    "ExportError": "gtacity.engine.exporters",
    "FORMATS": "gtacity.engine.exporters",
    "run_bench": "gtacity.engine.measure.bench",
    "BenchConfig": "gtacity.engine.measure.bench_plan",
    "BenchError": "gtacity.engine.measure.bench_plan",
    "evaluate_fidelity": "gtacity.engine.measure.fidelity",
    "FidelityConfig": "gtacity.engine.measure.fidelity",
    "evaluate_flicker": "gtacity.engine.measure.flicker",
    "FlickerConfig": "gtacity.engine.measure.flicker",
    "evaluate_realism": "gtacity.engine.measure.realism",
    "RealismConfig": "gtacity.engine.measure.realism",
    "evaluate_run": "gtacity.engine.measure.realism_run",
    "RunRealismConfig": "gtacity.engine.measure.realism_run",
    "artifact_score": "gtacity.artifacts",
    "read_failures": "gtacity.engine.jobs.folder",
    "build_report": "gtacity.engine.measure.report",
    "ReportConfig": "gtacity.engine.measure.report",
}

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BenchConfig",
    "BenchError",
    "DamagedInputError",
    "ExportConfig",
    "ExportError",
    "FORMATS",
    "FidelityConfig",
    "FlickerConfig",
    "Frame",
    "RealismConfig",
    "ReportConfig",
    "RunRealismConfig",
    "TranslateConfig",
    "TranslateError",
    "TranslateReport",
    "Translator",
    "artifact_score",
    "available_backends",
    "build_report",
    "create_backend",
    "evaluate_fidelity",
    "evaluate_flicker",
    "evaluate_realism",
    "evaluate_run",
    "export",
    "read_failures",
    "run_bench",
    "translate",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, plain attribute access
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from gtacity.artifacts import artifact_score
    from gtacity.engine.backends import BACKENDS, Backend, BackendError, available_backends, create_backend
    from gtacity.engine.exporters import FORMATS, ExportConfig, ExportError, export
    from gtacity.engine.frames import Frame
    from gtacity.engine.jobs.folder import read_failures
    from gtacity.engine.measure.bench import run_bench
    from gtacity.engine.measure.bench_plan import BenchConfig, BenchError
    from gtacity.engine.measure.fidelity import FidelityConfig, evaluate_fidelity
    from gtacity.engine.measure.flicker import FlickerConfig, evaluate_flicker
    from gtacity.engine.measure.realism import RealismConfig, evaluate_realism
    from gtacity.engine.measure.realism_run import RunRealismConfig, evaluate_run
    from gtacity.engine.measure.report import ReportConfig, build_report
    from gtacity.engine.translation import (
        DamagedInputError,
        TranslateConfig,
        TranslateError,
        TranslateReport,
        translate,
    )
    from gtacity.engine.translator import Translator
