"""The stages of a translation run and the time each spent working: what bounds a run."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("decode", "preprocess", "infer", "postprocess", "encode")
# Batches in flight when the caller does not say: one being preprocessed, one inferred, one
# postprocessed, so the three overlap.
DEFAULT_STREAMS = 3


@dataclass
class StageTimes:
    """Seconds each stage spent working (not waiting on a queue), and the run's wall time.

    ``planes``: how many of the ``frames`` travelled as YUV planes, their colour converted on the
    device rather than by swscale on the CPU (see :mod:`gtacity.engine.media.planes`).
    """

    busy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: float = 0.0
    frames: int = 0
    streams: int = DEFAULT_STREAMS
    planes: int = 0

    @property
    def bound_by(self) -> str:
        """The stage that worked longest: speeding anything else up cannot make the run faster."""
        return max(self.busy, key=self.busy.get)

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    @property
    def bound_share(self) -> float:
        """The bounding stage's busy time / wall time: 1.0 when the pipeline hides every other stage."""
        return self.busy[self.bound_by] / self.wall if self.wall > 0 else 0.0
