"""Which share of a bulk job this process does: ``--shard K/N``, or ``--shard auto`` from a Slurm
array or a Kubernetes indexed Job.

Shards are numbered 1..N. The job's input list is sorted by relative path and dealt round-robin:
item ``i`` (from 0) belongs to shard ``i % N + 1``. Every item lands in exactly one shard whatever
the machine, and neighbouring frames (often of similar cost) spread over all shards.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gtacity.errors import GtacityError

T = TypeVar("T")

# Kubernetes has no variable for the Job's completion count: the manifest sets this one (or the
# command says --shard auto/N).
COUNT_VARIABLE = "GTACITY_SHARD_COUNT"


class ShardError(GtacityError):
    """A ``--shard`` value or scheduler environment that does not name one shard."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), and where that came from."""

    index: int
    count: int
    origin: str = "--shard"

    def select(self, items: Sequence[T]) -> list[T]:
        """This shard's items of ``items`` (already sorted by the caller)."""
        return list(items[self.index - 1 :: self.count])

    @property
    def label(self) -> str:
        """``3/16``: how the summary and the failures file name the shard."""
        return f"{self.index}/{self.count}"


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``None`` (the whole job), ``"K/N"``, ``"auto"`` or ``"auto/N"`` -> a :class:`Shard`.

    ``auto`` reads ``SLURM_ARRAY_TASK_ID`` (relative to ``SLURM_ARRAY_TASK_MIN``, in steps of
    ``SLURM_ARRAY_TASK_STEP``) with ``SLURM_ARRAY_TASK_COUNT``, or Kubernetes'
    ``JOB_COMPLETION_INDEX`` (from 0) with the count from ``auto/N`` or ``GTACITY_SHARD_COUNT``.

    Raises:
        ShardError: a malformed value, K outside 1..N, or ``auto`` outside a Slurm array or
            indexed Job; the message says what to pass instead.
    """
    if text is None:
        return None
    environ = os.environ if environ is None else environ
    match = re.fullmatch(r"\s*(auto|\d+)\s*(?:/\s*(\d+)\s*)?", text)
    if match is None or (match[1] != "auto" and match[2] is None):
        raise ShardError(f"--shard {text!r}: use K/N (e.g. 3/16, shards count from 1), auto or auto/N")
    count = int(match[2]) if match[2] is not None else None
    if match[1] == "auto":
        return _auto(environ, count)
    return _checked(int(match[1]), count, "--shard")


def _checked(index: int, count: int, origin: str) -> Shard:
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"{origin}: shard {index}/{count} does not exist; K must be in 1..N")
    return Shard(index, count, origin)


def _auto(environ: Mapping[str, str], count: int | None) -> Shard:
    if "SLURM_ARRAY_TASK_ID" in environ:
        return _slurm(environ, count)
    if "JOB_COMPLETION_INDEX" in environ:
        index = _integer(environ, "JOB_COMPLETION_INDEX")
        from_env = _integer(environ, COUNT_VARIABLE) if COUNT_VARIABLE in environ else None
        if count is None:
            count = from_env
        if count is None:
            raise ShardError(
                "--shard auto in a Kubernetes indexed Job needs the count: pass --shard auto/N "
                f"(N = the Job's completions) or set {COUNT_VARIABLE}"
            )
        if from_env is not None and from_env != count:
            raise ShardError(f"--shard auto/{count} but {COUNT_VARIABLE}={from_env}; make them agree")
        return _checked(index + 1, count, "JOB_COMPLETION_INDEX")
    raise ShardError(
        "--shard auto: no Slurm array (SLURM_ARRAY_TASK_ID) or Kubernetes indexed Job "
        "(JOB_COMPLETION_INDEX) in the environment; pass --shard K/N"
    )


def _slurm(environ: Mapping[str, str], count: int | None) -> Shard:
    task = _integer(environ, "SLURM_ARRAY_TASK_ID")
    first = _integer(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
    step = _integer(environ, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in environ else 1
    tasks = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
    last = _integer(environ, "SLURM_ARRAY_TASK_MAX") if "SLURM_ARRAY_TASK_MAX" in environ else None
    # A list like --array=1,4,9 has no single step: task ids cannot be turned into shard numbers.
    regular = step >= 1 and (task - first) % step == 0
    if last is not None:
        regular = regular and (last - first) // step + 1 == tasks
    if not regular:
        raise ShardError(
            "--shard auto: the Slurm array is not an evenly spaced range "
            f"(task {task}, min {first}, step {step}, count {tasks}); use --array=0-{tasks - 1}"
        )
    if count is not None and count != tasks:
        raise ShardError(f"--shard auto/{count} but the Slurm array has {tasks} tasks; make them agree")
    return _checked((task - first) // step + 1, tasks, "SLURM_ARRAY_TASK_ID")


def _integer(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ShardError(f"{name}={environ[name]!r} is not a whole number") from None
