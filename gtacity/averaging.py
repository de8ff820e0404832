"""``gtacity average``: one generator per direction, the mean of the weights a run kept late in training.

A GAN's generator does not settle: from one checkpoint to the next it circles around what the two
networks agree on, and what it draws circles with it (a grid that comes and goes, contrast that rises
and falls). Averaging the weights of the generators saved over the last stretch of a run (Polyak
averaging; Yazici et al., "The Unusual Effectiveness of Averaging in GAN Training", ICLR 2019)
keeps what they share and evens out what they do not. It needs no retraining: ``gtacity train``
and ``gtacity distill`` keep one generator per ``--checkpoint-every``
(``<run>/generators/step_XXXXXXXX_<direction>.safetensors``), and this averages the ones in a
range of steps, so a run saved often enough can be averaged afterwards.

It helps where the learning rate is low and the snapshots are near one another (the end of the
decay, a short fine-tune). Snapshots far apart at a high learning rate average to something in
between, not to something better (``benchmarks/RESULTS.md``, issue 21, has both).

The mean is taken in float64 over the files' tensors and written as float32, in a generator file
that records which steps it averages (``averaged_steps``) and the last of them (``training_step``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gtacity.checkpoint import (
    DIRECTIONS,
    CheckpointError,
    GeneratorInfo,
    read_generator_file,
    save_generator,
    step_generators,
)
from gtacity.errors import GtacityError
from gtacity.nets import build_generator

_SAME = ("arch", "ngf", "n_blocks", "norm", "upsample", "value_range", "direction")


class AverageError(GtacityError):
    """A run or a range of steps that cannot be averaged; the message says what to do."""


@dataclass(frozen=True)
class AverageConfig:
    """One ``gtacity average RUN --from-step N -o OUT``.

    Attributes:
        run: a ``gtacity train`` or ``gtacity distill`` run folder (its ``generators/`` are read).
        out: folder for ``<direction>.safetensors`` (created; never the run folder itself).
        from_step: first step averaged (inclusive).
        to_step: last step averaged (inclusive); None = the run's last saved step.
        directions: which directions to average; None = every direction the run kept generators of
            (a train run has both, a distill run one); a direction named here that the run has none
            of is refused.
        overwrite: replace existing output files.
    """

    run: str | Path
    out: str | Path
    from_step: int
    to_step: int | None = None
    directions: tuple[str, ...] | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class Averaged:
    """One written file: its direction, path and the steps it averages."""

    direction: str
    path: Path
    steps: tuple[int, ...]


def average_generators(paths: Sequence[str | Path]) -> tuple[dict[str, torch.Tensor], GeneratorInfo]:
    """The mean of the weights of generator files of one architecture and direction.

    Returns the averaged state dict (float32) and the first file's info. ``read_generator_file``
    holds each file's tensors to the layout its metadata names, so files whose metadata agree
    have the same tensor names and shapes.

    Raises:
        AverageError: no files.
        CheckpointError: a file cannot be read, or differs from the first in architecture,
            size, upsampling or direction.
    """
    if not paths:
        raise AverageError("no generator files to average")
    first_state, info = read_generator_file(paths[0])
    total = {k: v.to(torch.float64) for k, v in first_state.items()}
    for path in paths[1:]:
        state, other = read_generator_file(path)
        for key in _SAME:
            if getattr(other, key) != getattr(info, key):
                raise CheckpointError(f"{path}: {key} {getattr(other, key)} differs from {paths[0]}'s "
                                      f"{getattr(info, key)}; only generators of one run and direction average")
        for k, v in state.items():
            total[k] += v.to(torch.float64)
    return {k: (v / len(paths)).to(torch.float32) for k, v in total.items()}, info


def average_run(cfg: AverageConfig) -> list[Averaged]:
    """Write ``cfg.out/<direction>.safetensors``: the mean of the run's step generators in the range.

    Every direction is checked before anything is written, so a refusal leaves no output.

    Raises:
        AverageError: not a run folder, fewer than two generators in the range, the run folder as
            output, or an existing output without ``overwrite``.
        CheckpointError: a step generator cannot be read or does not match the others.
    """
    run, out = Path(cfg.run), Path(cfg.out)
    if not run.is_dir():
        raise AverageError(f"{run}: no such run folder; point it at a gtacity train or distill run")
    if out.resolve() == run.resolve():
        raise AverageError(f"{out}: that is the run folder itself; its generators are the run's own, "
                           "choose another --out")
    if cfg.to_step is not None and cfg.to_step < cfg.from_step:
        raise AverageError(f"--to-step {cfg.to_step} is before --from-step {cfg.from_step}")
    kept_by = {d: step_generators(run, d) for d in (cfg.directions or DIRECTIONS)}
    if cfg.directions is None:
        kept_by = {d: kept for d, kept in kept_by.items() if kept} or kept_by
    plan = []
    for direction, kept in kept_by.items():
        if not kept:
            raise AverageError(f"{run}: no generators/step_*_{direction}.safetensors; point it at a gtacity "
                               "train or distill run folder (one generator is kept per --checkpoint-every)")
        last = cfg.to_step if cfg.to_step is not None else kept[-1][0]
        chosen = [(step, path) for step, path in kept if cfg.from_step <= step <= last]
        if len(chosen) < 2:
            raise AverageError(
                f"{run}: {len(chosen)} {direction} generator(s) between steps {cfg.from_step} and {last} "
                f"(the run kept steps {_spans([s for s, _ in kept])}); choose a range holding at least two")
        target = out / f"{direction}.safetensors"
        if target.exists() and not cfg.overwrite:
            raise AverageError(f"{target} exists; pass --overwrite to replace it, or choose another --out")
        plan.append((direction, chosen, target))
    written = []
    for direction, chosen, target in plan:
        state, info = average_generators([path for _, path in chosen])
        steps = tuple(step for step, _ in chosen)
        net = build_generator(info.arch, info.ngf, info.n_blocks, info.upsample)
        net.load_state_dict(state)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_generator(net, target, direction=info.direction, trained_resolution=info.trained_resolution,
                       extra={"training_step": str(steps[-1]), "averaged_steps": ",".join(map(str, steps))})
        written.append(Averaged(direction, target, steps))
    return written


def _spans(steps: list[int]) -> str:
    """``250-4608`` (``250`` for one step) for the steps a run kept."""
    return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0])
