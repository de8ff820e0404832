"""Training checkpoints: everything needed to resume exactly, and starting from other runs' weights.

``<run>/checkpoints/latest.pt`` holds the four nets, both optimisers, the grad scaler, every
process's image pools, the RNG state, the step and the position inside the epoch, and the run's
config. It is loaded with ``weights_only=True``: only tensors and plain containers, no pickled code.
Beside it, each checkpoint writes the two generators as generator files that
``gtacity translate --weights`` reads directly.

A checkpoint is verified before it is loaded: ``torch.save`` writes a zip that records a CRC-32 of
every member (each tensor's storage, the pickle), so a flipped byte anywhere in the data is found
and the damaged member named, with nothing kept beside the file that a crash could leave out of
step with it. Each save keeps the checkpoint it replaces as ``previous.pt``; a resume whose
``latest.pt`` is damaged or missing continues from ``previous.pt`` and says so in one line.
"""

from __future__ import annotations

import os
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from gtacity.checkpoint import (
    DIRECTIONS,
    CheckpointError,
    read_generator_file,
    read_state_dict,
    save_generator,
    step_generator_path,
)
from gtacity.errors import first_line
from gtacity.filekinds import torch_load_problem
from gtacity.files import written_whole
from gtacity.nets import resize_warm_start
from gtacity.trainer.data import DataError
from gtacity.trainer.step import CycleGAN, Precision

NET_NAMES = ("G_gta2city", "G_city2gta", "D_city", "D_gta")
LATEST, PREVIOUS = "latest.pt", "previous.pt"


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The settings every run shares (``gtacity train`` and ``gtacity distill``), saved with it.

    Attributes:
        batch_size: images per optimiser step.
        amp: ``auto`` (on the CPU bf16 only where it is native (AVX512-BF16, AMX), else fp32, see
            :func:`gtacity.hardware.train_amp`; bf16, else fp16 with grad scaling, on CUDA),
            ``bf16``, ``fp16``, ``off``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes.
        seed: seeds every random choice of the run.
        checkpoint_every, log_every, sample_every: in optimiser steps.
    """

    batch_size: int = 1
    amp: str = "auto"
    device: str = "auto"
    workers: int = 1
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    sample_every: int = 500

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def known_fields(cls, d: dict) -> dict:
        """``d`` without keys this class lacks (a config saved by another gtacity version)."""
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in d.items() if k in names}


@dataclass
class Progress:
    """Where a run stands: optimiser steps done, the epoch, and items consumed in that epoch."""

    step: int = 0
    epoch: int = 0
    position: int = 0


def save_checkpoint(
    run_dir: Path, model: CycleGAN, prec: Precision, progress: Progress, config: dict,
    trained_resolution: int,
) -> Path:
    """Write ``latest.pt`` and the step's two generator files (rank 0 writes; all ranks must call).

    Under data parallelism it first checks that every process holds the same weights: replicas
    that drifted apart would make the saved run a lie about what the other processes trained.
    """
    pools = [{"city": model.pool_city.state_dict(), "gta": model.pool_gta.state_dict()}]
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world > 1:
        _check_replicas_equal(model, world)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, pools[0])
        pools = gathered
    if dist.is_initialized() and dist.get_rank() != 0:
        return run_dir / "checkpoints" / "latest.pt"
    state = {
        "config": config,
        "progress": vars(progress).copy(),
        "world_size": world,
        "nets": {name: getattr(model, name).state_dict() for name in NET_NAMES},
        "opt_G": model.opt_G.state_dict(),
        "opt_D": model.opt_D.state_dict(),
        "scaler": prec.scaler.state_dict() if prec.scaler else None,
        "pools": pools,
        "rng": {"torch": torch.get_rng_state()},
    }
    latest = write_checkpoint(run_dir / "checkpoints", state)
    export_generators(run_dir, model, progress.step, trained_resolution)
    return latest


def write_checkpoint(ckpt_dir: Path, state: dict) -> Path:
    """Write ``state`` as ``ckpt_dir/latest.pt``, keeping the checkpoint it replaces as ``previous.pt``.

    The new file appears whole or not at all. The old ``latest.pt`` becomes ``previous.pt`` only if
    it verifies: after a resume that fell back past a damaged ``latest.pt``, that file must not push
    out the good ``previous.pt`` (it is replaced by the new checkpoint instead). A crash between
    the two renames leaves ``previous.pt`` alone, which :func:`read_checkpoint` falls back to.
    """
    latest, previous = ckpt_dir / LATEST, ckpt_dir / PREVIOUS
    with written_whole(latest) as partial:
        torch.save(state, partial)
        if latest.is_file() and checkpoint_damage(latest) is None:
            os.replace(latest, previous)
    return latest


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's checkpoint (``latest.pt`` or, after a crash, ``previous.pt``)."""
    return any((run_dir / "checkpoints" / name).exists() for name in (LATEST, PREVIOUS))


def checkpoint_damage(path: Path) -> str | None:
    """Why the checkpoint file ``path`` is not whole (``"is ..."``), or None where every member of
    its zip matches the CRC-32 recorded for it."""
    try:
        if path.stat().st_size == 0:
            return "is empty (0 bytes)"
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        return f"is not a whole zip archive, as torch.save writes ({first_line(e, 120)})"
    return None if bad is None else f"is damaged: member {bad} fails its CRC-32 check"


def _check_replicas_equal(model: CycleGAN, world: int) -> None:
    sums = torch.stack([
        torch.cat([p.detach().double().flatten() for p in getattr(model, name).parameters()]).sum()
        for name in NET_NAMES
    ])
    gathered = [torch.zeros_like(sums) for _ in range(world)]
    dist.all_gather(gathered, sums)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"data-parallel replicas diverged: parameter sums per process {gathered}")


def export_generators(run_dir: Path, model: CycleGAN, step: int, trained_resolution: int) -> list[Path]:
    """``<run>/gta2city.safetensors`` and ``city2gta.safetensors`` (latest) plus a per-step copy."""
    written = []
    for direction in ("gta2city", "city2gta"):
        net = getattr(model, f"G_{direction}")
        extra = {"training_step": str(step)}
        for path in (step_generator_path(run_dir, step, direction), run_dir / f"{direction}.safetensors"):
            written.append(
                save_generator(net, path, direction=direction, trained_resolution=trained_resolution, extra=extra)
            )
    return written


def read_checkpoint(path: Path) -> dict:
    """Load a training checkpoint safely and verified, with one-line errors.

    ``path`` is a run folder or a checkpoint file. Where ``latest.pt`` is damaged or missing and
    ``previous.pt`` beside it is whole, that one is loaded, and a line on stderr says so.

    Raises:
        DataError: no checkpoint, or none that is whole.
    """
    if path.is_dir():
        path = path / "checkpoints" / LATEST
    previous = path.with_name(PREVIOUS) if path.name == LATEST else None
    if not path.is_file() and not (previous and previous.is_file()):
        raise DataError(f"{path}: no training checkpoint here (expected <run>/checkpoints/latest.pt)")
    state, problem = _load_verified(path)
    if state is not None:
        return state
    if previous is None or not previous.is_file():
        raise DataError(f"{path}: {problem}; there is no {PREVIOUS} beside it to fall back to")
    older, older_problem = _load_verified(previous)
    if older is None:
        raise DataError(f"{path}: {problem}, and {previous} {older_problem}; this run cannot continue: "
                        "start a new one (--init-from takes a generator file of this run)")
    if not dist.is_initialized() or dist.get_rank() == 0:
        tqdm.write(f"{path}: {problem}; continuing from {previous} (step {older['progress']['step']}), "
                   "the checkpoint before it", file=sys.stderr)
    return older


def _load_verified(path: Path) -> tuple[dict | None, str]:
    """(state, "") for a whole gtacity checkpoint, else (None, why not)."""
    if not path.is_file():
        return None, "is missing"
    damage = checkpoint_damage(path)
    if damage is not None:
        return None, damage
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means the same thing to the user
        return None, torch_load_problem(e, expected=None)
    if not isinstance(state, dict) or "nets" not in state or "progress" not in state:
        return None, "is not a gtacity training checkpoint"
    return state, ""


def restore(model: CycleGAN, prec: Precision, state: dict, device: torch.device) -> Progress:
    """Put a run back exactly as ``state`` left it; returns where it stood."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if state["world_size"] != world:
        raise DataError(
            f"this run was trained with {state['world_size']} processes; resume it with the same number "
            f"(now {world}) so every process gets its own data position and image pools back"
        )
    for name in NET_NAMES:
        getattr(model, name).load_state_dict(state["nets"][name])
    model.opt_G.load_state_dict(state["opt_G"])
    model.opt_D.load_state_dict(state["opt_D"])
    if prec.scaler and state["scaler"]:
        prec.scaler.load_state_dict(state["scaler"])
    rank = dist.get_rank() if dist.is_initialized() else 0
    model.pool_city.load_state_dict(state["pools"][rank]["city"], device)
    model.pool_gta.load_state_dict(state["pools"][rank]["gta"], device)
    torch.set_rng_state(state["rng"]["torch"])
    return Progress(**state["progress"])


def init_from(model: CycleGAN, source: Path, gta_side: str | None) -> list[str]:
    """Load weights (not optimiser state) from a gtacity run/checkpoint, a folder of generator files
    named by direction (``gta2city.safetensors``, ``city2gta.safetensors``: a run's exports, or links
    to any two generators), one such file, or an official run folder.

    Transpose-decoder generators load into a ``resize`` run through :func:`gtacity.nets.resize_warm_start`.

    An official CycleGAN run folder holds ``latest_net_{G_A,G_B,D_A,D_B}.pth``. G_A maps A -> B and
    D_A judges domain B (the official code scores ``netD_A(fake_B)``), so with GTA on side A:
    G_A = G_gta2city, G_B = G_city2gta, D_A = D_city, D_B = D_gta; swapped when GTA is side B.

    Returns:
        The names of the nets that were loaded.
    """
    official = source / "latest_net_G_A.pth"
    if source.is_dir() and official.is_file():
        if gta_side is None:
            raise DataError(f"{source}: an official run names its domains A and B; pass --gta-side to say which was GTA5")
        a2b, b2a = ("gta2city", "city2gta") if gta_side == "A" else ("city2gta", "gta2city")
        d_b, d_a = ("city", "gta") if gta_side == "A" else ("gta", "city")
        mapping = {"G_A": f"G_{a2b}", "G_B": f"G_{b2a}", "D_A": f"D_{d_b}", "D_B": f"D_{d_a}"}
        loaded = []
        for theirs, ours in mapping.items():
            path = source / f"latest_net_{theirs}.pth"
            if path.is_file():
                _load_net(model, ours, read_state_dict(path), path)
                loaded.append(ours)
        return loaded
    if source.suffix == ".safetensors":
        state, info = read_generator_file(source)
        if info.direction is None:
            raise CheckpointError(f"{source}: the file does not say its direction; use a run folder instead")
        _load_net(model, f"G_{info.direction}", state, source)
        return [f"G_{info.direction}"]
    exported = [source / f"{d}.safetensors" for d in DIRECTIONS]
    if source.is_dir() and not (source / "checkpoints" / "latest.pt").exists() and all(p.is_file() for p in exported):
        return [name for path in exported for name in init_from(model, path, gta_side)]
    nets = read_checkpoint(source)["nets"]
    for name in NET_NAMES:
        _load_net(model, name, nets[name], source)
    return list(NET_NAMES)


def _load_net(model: CycleGAN, name: str, state: dict[str, torch.Tensor], source: Path) -> None:
    load_fitting(getattr(model, name), state, source, name, "--ngf / --n-blocks / --ndf / --upsample")


def load_fitting(net: torch.nn.Module, state: dict[str, torch.Tensor], source: Path, name: str, options: str) -> None:
    """Load ``state`` into ``net`` (as fp32), or say in one line where it does not fit.

    A transpose-decoder generator's weights warm-start a resize or bilinear one
    (:func:`gtacity.nets.resize_warm_start`).

    Raises:
        CheckpointError: names the first tensor that is missing, extra or of another shape, and
            ``options``, the settings that decide the architecture.
    """
    if getattr(net, "upsample", "transpose") != "transpose" and not any(".conv.weight" in k for k in state):
        state = resize_warm_start(state, net)
    expected = net.state_dict()
    bad = sorted(set(expected) ^ set(state)) or [
        k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    if bad:
        raise CheckpointError(
            f"{source}: weights for {name} do not fit this run's architecture at {bad[0]} (check {options})"
        )
    net.load_state_dict({k: v.float() for k, v in state.items()})
