"""Inference backends by name: one table drives creation, listing and benchmarks.

::

    backend = create_backend("auto", net)          # tensorrt or torch on CUDA, else openvino
    backend.prepare(max_batch=4, height=256, width=256)
    out = backend.infer(batch)                     # (N, 3, H, W) float32 in [-1, 1]

A new backend is one file with a :class:`~gtacity.engine.backends.base.Backend` subclass and its
config dataclass, plus its entry in :data:`BACKENDS`; ``name="auto"``, :func:`available_backends`
and everything iterating the table pick it up from there.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import nn

from gtacity.engine.backends.base import PRECISIONS, Backend, BackendError
from gtacity.engine.backends.openvino_backend import OpenVINOBackend, OpenVINOConfig
from gtacity.engine.backends.tensorrt_backend import TensorRTBackend, TensorRTConfig
from gtacity.engine.backends.torch_backend import TorchBackend, TorchConfig

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "BackendError",
    "OpenVINOBackend",
    "OpenVINOConfig",
    "TensorRTBackend",
    "TensorRTConfig",
    "TorchBackend",
    "TorchConfig",
    "auto_order",
    "available_backends",
    "backend_class",
    "create_backend",
]

BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls for cls in (TorchBackend, OpenVINOBackend, TensorRTBackend)
}


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> ``None`` if it can run here, else the reason it cannot."""
    return {name: cls.unavailable_reason() for name, cls in BACKENDS.items()}


# Device types ``--backend auto`` tries, best first; within one, backends go by ``auto_rank``.
AUTO_DEVICES = ("cuda", "cpu")


def auto_order(device: str | torch.device = "auto") -> list[tuple[type[Backend], str]]:
    """(backend class, device type) pairs in the order ``--backend auto`` tries them.

    Every device type of :data:`AUTO_DEVICES` (only ``device``'s type unless ``device="auto"``),
    GPU first, and within one device type the registered backends by descending ``auto_rank``:
    tensorrt (when registered) -> torch on CUDA -> openvino -> torch on CPU. Availability is not
    checked here (see :func:`backend_class`).

    Raises:
        BackendError: a device that is not one.
    """
    if device == "auto":
        device_types = AUTO_DEVICES
    else:
        try:
            device_types = (torch.device(device).type,)
        except (RuntimeError, TypeError):
            raise BackendError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    order = []
    for device_type in device_types:
        ranked = [cls for cls in BACKENDS.values() if device_type in cls.auto_rank]
        ranked.sort(key=lambda cls: cls.auto_rank[device_type], reverse=True)
        order += [(cls, device_type) for cls in ranked]
    return order


def backend_class(name: str, device: str | torch.device = "auto") -> type[Backend]:
    """The backend class ``name`` means; ``"auto"`` picks the first available one of
    :func:`auto_order` for ``device`` (with ``device="auto"``: CUDA backends if torch sees a GPU).

    On CPU, auto picks openvino (2.3-2.6x eager torch fp32 on a 2-core AVX512-BF16 machine), falling
    back to torch without it; on CUDA tensorrt where it is installed, else torch.

    Raises:
        BackendError: an unknown name, or no backend available for ``device``.
    """
    if name != "auto":
        if name not in BACKENDS:
            raise BackendError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
        return BACKENDS[name]
    reasons = []
    for cls, device_type in auto_order(device):
        where = torch.device(device_type if device == "auto" else device)
        reason = cls.unavailable_reason(where)
        if reason is None:
            return cls
        reasons.append(f"{cls.name} on {device_type}: {reason}")
    why = "; ".join(reasons) or "none registered for it"
    raise BackendError(f"no backend can run on {device} here ({why})")


def create_backend(
    name: str,
    net: nn.Module,
    precision: str = "auto",
    device: str | torch.device = "auto",
    **options,
) -> Backend:
    """A backend running ``net`` (an fp32 generator; it is not modified), ready for ``prepare``.

    Args:
        name: a key of :data:`BACKENDS`, or ``"auto"`` (see :func:`backend_class`).
        net: the generator, e.g. from :func:`gtacity.checkpoint.load_generator`.
        precision: ``"auto"`` (each backend's best default), ``"fp32"``, ``"fp16"``, ``"bf16"`` or
            ``"int8"`` (openvino; call ``backend.calibrate(frames)`` before ``prepare``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        **options: fields of the backend's config dataclass (e.g. ``performance_hint="THROUGHPUT"``
            for openvino, ``channels_last=True`` for torch).

    Raises:
        BackendError: unknown name or option, backend or device unusable here, or a precision the
            backend cannot run on that device; the message says what is supported.
    """
    cls = backend_class(name, device)
    known = [field.name for field in fields(cls.config_class)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise BackendError(
            f"unknown {cls.name} backend option(s) {', '.join(unknown)}; it takes {', '.join(known)}"
        )
    return cls(net, precision=precision, device=device, config=cls.config_class(**options))
