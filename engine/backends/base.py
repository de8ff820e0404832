"""What every inference backend is: the protocol the pipeline calls and the rules all of them share.

A backend wraps one generator for one device and precision::

    backend = SomeBackend(net, precision="auto", device="auto", config=SomeConfig())
    backend.prepare(max_batch=4, height=256, width=256)   # once per shape; compiles, tunes
    out = backend.infer(batch)   # (N, 3, H, W) float32 in [-1, 1] on backend.device, N <= 4

The base class owns what is the same everywhere: resolving ``device`` and ``precision`` (with one-line
:class:`BackendError` messages for what a device cannot do), the per-shape cache behind
:meth:`Backend.prepare` and the checks on :meth:`Backend.infer`'s input. A subclass declares its
devices and precisions in :attr:`Backend.precisions` and implements ``_build`` (one shape) and ``_run``
(one batch). A new backend (CUDA graphs, TensorRT) is one such file plus an entry in the registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Mapping

import torch
from torch import nn

from gtacity.checkpoint import check_finite_output
from gtacity.errors import BackendError
from gtacity.nets import MIN_SIZE, SIZE_MULTIPLE

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8")


class Backend(ABC):
    """A generator made ready to translate batches on one device at one precision.

    Subclasses set the class attributes and implement ``_build`` and ``_run``.

    Class attributes:
        name: the registry name (``"torch"``, ``"openvino"``).
        config_class: the frozen dataclass of this backend's options.
        precisions: device type -> the precisions the backend implements there. What the hardware
            actually allows is :meth:`supported_precisions`.
        auto_rank: device type -> rank when ``create_backend("auto")`` chooses for that device type;
            the highest available one wins, device types missing here are never chosen.

    Attributes:
        device: where :meth:`infer`'s input must live and its output lives.
        precision: the precision actually used, resolved from ``"auto"``.
        config: this backend's options (an instance of ``config_class``).
        builds: how many shapes :meth:`prepare` has built so far (a cached shape never counts twice).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    precisions: ClassVar[Mapping[str, tuple[Precision, ...]]]
    auto_rank: ClassVar[Mapping[str, int]] = {}

    def __init__(
        self,
        net: nn.Module,
        *,
        precision: str = "auto",
        device: str | torch.device = "auto",
        config: Any = None,
    ):
        """Resolve device and precision; subclasses then take their own copy of ``net``.

        Args:
            net: the generator (fp32); it is never modified.
            precision: ``"auto"``, ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``.
            device: ``"auto"`` or a torch device string of a type in :attr:`precisions`.
            config: an instance of :attr:`config_class`; ``None`` takes its defaults.

        Raises:
            BackendError: backend unusable here, unknown device or unsupported precision.
        """
        self.device = self.resolve_device(device)
        self.precision: Precision = self.resolve_precision(self.device, precision)
        self.config = self.config_class() if config is None else config
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{self.name} backend takes a {self.config_class.__name__}, got {config!r}")
        self.builds = 0
        # (height, width) -> (max_batch, whatever _build returned for that shape)
        self._shapes: dict[tuple[int, int], tuple[int, Any]] = {}

    @classmethod
    def unavailable_reason(cls, device: torch.device | None = None) -> str | None:
        """Why this backend can't run on ``device`` (any device if ``None``) here, or ``None``."""
        if device is not None and device.type == "cuda":
            if not torch.cuda.is_available():
                return "CUDA not available"
            if device.index is not None and device.index >= torch.cuda.device_count():
                return f"no CUDA device {device.index} ({torch.cuda.device_count()} visible)"
        return None

    @classmethod
    def default_device(cls) -> torch.device:
        """The device ``device="auto"`` means: CUDA where the backend supports it and it exists."""
        if "cuda" in cls.precisions and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device(next(iter(cls.precisions)))

    @classmethod
    def resolve_device(cls, device: str | torch.device) -> torch.device:
        """``device`` as a usable torch.device of this backend (a CUDA device gets its index).

        Raises:
            BackendError: not a device, a device type the backend doesn't run on, or unusable here.
        """
        if device == "auto":
            resolved = cls.default_device()
        else:
            try:
                resolved = torch.device(device)
            except (RuntimeError, TypeError):
                raise BackendError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None
        if resolved.type not in cls.precisions:
            runs_on = ", ".join(cls.precisions)
            raise BackendError(f"the {cls.name} backend runs on {runs_on}, not {resolved.type}")
        reason = cls.unavailable_reason(resolved)
        if reason is not None:
            raise BackendError(f"the {cls.name} backend cannot run on {resolved}: {reason}")
        if resolved.type == "cuda" and resolved.index is None:
            # Tensors report cuda:0, never bare cuda; an index keeps infer's device check exact.
            resolved = torch.device("cuda", torch.cuda.current_device())
        return resolved

    @classmethod
    def supported_precisions(cls, device: torch.device) -> tuple[Precision, ...]:
        """The precisions usable on ``device`` here; subclasses narrow this by what the hardware has."""
        return cls.precisions[device.type]

    @classmethod
    @abstractmethod
    def default_precision(cls, device: torch.device) -> Precision:
        """The precision ``"auto"`` means on ``device`` (one of :meth:`supported_precisions`)."""

    @classmethod
    def resolve_precision(cls, device: torch.device, precision: str) -> Precision:
        """``precision`` checked against what ``device`` supports, ``"auto"`` resolved.

        Raises:
            BackendError: an unknown precision, or one this backend cannot run on ``device``.
        """
        if precision == "auto":
            return cls.default_precision(device)
        if precision not in PRECISIONS:
            raise BackendError(f"unknown precision {precision!r}; use auto, {', '.join(PRECISIONS)}")
        supported = cls.supported_precisions(device)
        if precision not in supported:
            raise BackendError(
                f"the {cls.name} backend supports {', '.join(supported)} on {device.type} here, "
                f"not {precision}"
            )
        return precision  # type: ignore[return-value]

    def needs_calibration(self) -> bool:
        """Whether :meth:`calibrate` must run before :meth:`prepare` (quantised precisions)."""
        return False

    def calibrate(self, frames: list[torch.Tensor], progress: bool = True) -> None:
        """Derive a quantised model from sample frames ``(1, 3, H, W)`` in [-1, 1] on the CPU.

        Only backends whose :meth:`needs_calibration` is true override this; for the others
        there is nothing to derive. ``progress``: the quantiser's progress bars on stderr.
        """

    def reuse_calibration(self, frames: list[torch.Tensor]) -> bool:
        """Use the generator's own quantised model, made once (an earlier calibration, or shipped
        with the generator), checked on ``frames`` of this job; False when it has none."""
        return False

    def prepare(self, max_batch: int, height: int, width: int) -> None:
        """Make batches of up to ``max_batch`` frames of ``height x width`` ready to run.

        Call it again for each new frame size; a size prepared before with at least this
        ``max_batch`` is reused as is (no rebuild), a larger ``max_batch`` rebuilds that size.

        Raises:
            ValueError: ``max_batch < 1``, or a size that isn't a multiple of 4 of at least 8
                (the pipeline pads frames to such sizes).
        """
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        for side in (height, width):
            if side < MIN_SIZE or side % SIZE_MULTIPLE:
                raise ValueError(
                    f"frame size {height}x{width}: each side must be a multiple of {SIZE_MULTIPLE} "
                    f"and at least {MIN_SIZE} (pad frames before the backend)"
                )
        cached = self._shapes.get((height, width))
        if cached is not None and cached[0] >= max_batch:
            return
        self._shapes[(height, width)] = (max_batch, self._build(max_batch, height, width))
        self.builds += 1

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """Translate one batch: ``(N, 3, H, W)`` float32 in [-1, 1] on :attr:`device` -> the same.

        ``(H, W)`` must have been prepared with ``max_batch >= N``. Call from one thread at a time.
        The output may have any memory layout (e.g. channels_last); treat it as read-only.

        Raises:
            ValueError: a batch of the wrong type, dtype, device or layout, or an unprepared shape.
        """
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
            got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"infer takes an (N, 3, H, W) tensor, got {got}")
        if batch.dtype != torch.float32 or batch.device != self.device:
            raise ValueError(
                f"infer takes float32 on {self.device}, got {batch.dtype} on {batch.device}"
            )
        n, _, height, width = batch.shape
        cached = self._shapes.get((height, width))
        if cached is None or n > cached[0]:
            raise ValueError(
                f"batch of {n} at {height}x{width}: call prepare({n}, {height}, {width}) first"
            )
        return self._run(cached[1], batch)

    @abstractmethod
    def describe(self) -> str:
        """One short line for logs, e.g. ``"openvino 2026.4.1 CPU, bf16, LATENCY"``."""

    @abstractmethod
    def _build(self, max_batch: int, height: int, width: int) -> Any:
        """Compile/tune for one shape; the result is handed back to :meth:`_run` for that shape."""

    @abstractmethod
    def _run(self, built: Any, batch: torch.Tensor) -> torch.Tensor:
        """Run one checked batch with what :meth:`_build` returned for its shape."""


class FirstBatchCheck:
    """A backend whose first output is checked to be finite; every other attribute is the wrapped one's.

    A generator whose activations overflow (finite weights that blow up, or fp16), translates to
    black or garbage frames without any error. One check of the first batch (one device sync) stops such a
    job before it writes a single output; later batches are not checked (they cost nothing extra).
    """

    def __init__(self, backend, weights: str):
        self._backend, self._weights = backend, weights
        self._checked = False

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        """The wrapped backend's output; the first one must be finite.

        Raises:
            CheckpointError: the first output holds NaN or Inf values (naming the weights).
        """
        out = self._backend.infer(batch)
        if not self._checked:
            check_finite_output(out, self._weights, self._backend.precision)
            self._checked = True
        return out
