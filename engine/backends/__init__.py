"""Inference backends by name: one table drives creation, listing and benchmarks.

::

    backend = create_backend("auto", net)          # openvino on CPU, torch on CUDA
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
from gtacity.engine.backends.torch_backend import TorchBackend, TorchConfig

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "BackendError",
    "OpenVINOBackend",
    "OpenVINOConfig",
    "TorchBackend",
    "TorchConfig",
    "available_backends",
    "backend_class",
    "create_backend",
]

BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TorchBackend, OpenVINOBackend)}


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> ``None`` if it can run here, else the reason it cannot."""
    return {name: cls.unavailable_reason() for name, cls in BACKENDS.items()}


def backend_class(name: str, device: str | torch.device = "auto") -> type[Backend]:
    """The backend class ``name`` means; ``"auto"`` picks the best one available for ``device``.

    ``device="auto"`` means CUDA if torch sees a GPU, else the CPU. On CPU, auto picks openvino
    (2.3-2.6x eager torch fp32 on a 2-core AVX512-BF16 machine), falling back to torch without it; on
    CUDA it picks torch. The order comes from each class's ``auto_rank``.

    Raises:
        BackendError: an unknown name, or no backend available for ``device``.
    """
    if name != "auto":
        if name not in BACKENDS:
            raise BackendError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
        return BACKENDS[name]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
    candidates = [cls for cls in BACKENDS.values() if device.type in cls.auto_rank]
    candidates.sort(key=lambda cls: cls.auto_rank[device.type], reverse=True)
    reasons = []
    for cls in candidates:
        reason = cls.unavailable_reason(device)
        if reason is None:
            return cls
        reasons.append(f"{cls.name}: {reason}")
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
        precision: ``"auto"`` (each backend's best default), ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        **options: fields of the backend's config dataclass (e.g. ``performance_hint="THROUGHPUT"``
            for openvino, ``channels_last=False`` for torch).

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
