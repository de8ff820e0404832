"""What a file given as a generator is when it is not one, and what to pass instead.

``--weights`` (translate, bench), ``gtacity export`` and ``gtacity distill --teacher`` take a
generator file: ours (``.safetensors``) or an official ``latest_net_G_*.pth``. Users also hand them
what the project makes *from* a generator: an ONNX file, a TensorRT engine, an OpenVINO IR, or a
run's training checkpoint ``latest.pt``. :func:`foreign_kind` tells these apart by their first
bytes before any loader sees them; :func:`training_checkpoint_kind` recognises a training
checkpoint among the objects ``torch.load`` returns. :func:`torch_load_problem` rewords
``torch.load``'s failures: for a file it will not load with ``weights_only=True`` it advises
re-running with ``weights_only=False``, which runs whatever code the file holds, and that advice is
never passed on.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from gtacity.errors import first_line

# The first bytes of a gtacity engine file (the header written by the engine's plan-file module).
ENGINE_MAGIC = b"GTACITY-TRT\0"
# A serialized TensorRT engine (a "plan") starts with these bytes.
TENSORRT_PLAN_MAGIC = b"ftrt"
GENERATOR_FILES = "a generator file (a gtacity .safetensors, or an official CycleGAN latest_net_G_*.pth)"
_HEAD = 4096
# ONNX's ModelProto serialises ir_version (field 1, a varint: tag 0x08) first; the field after it
# is one of producer_name .. opset_import (tags 0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42).
_ONNX_SECOND_TAGS = frozenset(b"\x12\x1a\x22\x28\x32\x3a\x42")


def foreign_kind(path: Path) -> str | None:
    """``"is <what it is>, not a generator file; <what to pass instead>"`` where the first bytes of
    ``path`` show it is not a generator file; None where it may be one (the loaders decide).

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if not head:
        return f"is empty (0 bytes); pass {GENERATOR_FILES}"
    for kind in (_engine(head), _onnx(head), _openvino(path, head), _zip(path, head)):
        if kind is not None:
            return kind
    return None


def training_checkpoint_kind(path: Path, obj: object) -> str | None:
    """The same kind of clause as :func:`foreign_kind` where ``obj`` (what ``torch.load`` read from
    ``path``) is a gtacity training or distillation checkpoint; None otherwise."""
    if not (isinstance(obj, dict) and "nets" in obj and "progress" in obj):
        return None
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    generators = sorted(run.glob("*.safetensors"))
    choices = ", ".join(str(p) for p in generators) or "<run>/gta2city.safetensors or <run>/city2gta.safetensors"
    return (f"is a gtacity training checkpoint (everything needed to resume a run), not a generator file; "
            f"pass one of the run's generator files: {choices}")


def torch_load_problem(e: BaseException, expected: str | None = GENERATOR_FILES) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, as ``"<problem>[; pass <expected>]"``.

    ``expected`` names what the caller wanted, for the advice (None: no advice). torch's own advice
    to load with ``weights_only=False`` is left out: that runs any code the file carries.
    """
    advice = f"; pass {expected}" if expected else ""
    text = str(e)
    pickled = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if pickled:
        return (f"holds pickled Python objects ({pickled[1]}) that gtacity does not unpickle, as "
                "unpickling can run code; save the network's state_dict() with torch.save instead")
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        reason = detail[1].strip()[:160] if detail else "not a pickle torch.load reads"
        return f"is not a PyTorch file ({reason}){advice}"
    return f"is not a readable PyTorch file ({first_line(e, 160)}){advice}"


def _engine(head: bytes) -> str | None:
    if head.startswith(ENGINE_MAGIC):
        what = "a gtacity TensorRT engine (made by `gtacity export --format engine`)"
    elif head.startswith(TENSORRT_PLAN_MAGIC) or _prefixed_plan(head):
        what = "a TensorRT engine (plan) file"
    else:
        return None
    return (f"is {what}, not a generator file; pass the generator it was built from: "
            "--backend tensorrt builds (and caches) its engine from that")


def _prefixed_plan(head: bytes) -> bool:
    """A plan behind a 4-byte length and a JSON header (how Ultralytics writes ``.engine`` files)."""
    length = int.from_bytes(head[:4], "little")
    return head[4:5] == b"{" and head[4 + length:8 + length] == TENSORRT_PLAN_MAGIC


def _onnx(head: bytes) -> str | None:
    # A safetensors file starts with its header's length (8 bytes) and then the JSON header itself.
    if head[8:9] == b"{" or len(head) < 3:
        return None
    if head[0] != 0x08 or not 0 < head[1] < 0x80 or head[2] not in _ONNX_SECOND_TAGS:
        return None
    return ("is an ONNX model, not a generator file; pass the generator it was exported from "
            "(every backend converts that itself), or run the ONNX file in an ONNX runtime")


def _openvino(path: Path, head: bytes) -> str | None:
    if _is_ir_xml(head):
        what = "an OpenVINO IR model"
    elif path.suffix.lower() == ".bin" and path.with_suffix(".xml").is_file() and _is_ir_xml(
        path.with_suffix(".xml").read_bytes()[:_HEAD]
    ):
        what = f"the weights of the OpenVINO IR model {path.with_suffix('.xml').name}"
    else:
        return None
    return (f"is {what}, not a generator file; pass the generator it was converted from: "
            "--backend openvino converts (and caches) it from that")


def _is_ir_xml(head: bytes) -> bool:
    return head.lstrip().startswith(b"<?xml") and b"<net " in head


def _zip(path: Path, head: bytes) -> str | None:
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return (f"is a damaged zip archive ({first_line(e, 120)}): cut short or changed after it was "
                "written; copy or download it again")
    # torch.save writes a zip whose records live in one folder: <name>/data.pkl, <name>/data/0, ...
    if any(n.endswith("/data.pkl") for n in names):
        return None
    first = f" (first: {names[0]})" if names else ""
    return (f"is a zip archive of {len(names)} files{first}, not a PyTorch file; unpack it and pass "
            f"the generator inside: {GENERATOR_FILES}")
