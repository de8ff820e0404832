"""Generator files: read ours (safetensors + metadata) and the official code's ``.pth``, write ours.

Our file is a safetensors file whose header metadata describes the generator completely, so a file
is all it takes to rebuild the network::

    {"format": "gtacity-generator", "format_version": "1", "arch": "resnet_generator",
     "ngf": "64", "n_blocks": "9", "norm": "instance", "direction": "gta2city",
     "trained_resolution": "256", "value_range": "-1,1"}

``arch`` names a class of :data:`gtacity.nets.ARCHS` (``resnet_generator``, or the distilled
students' ``mobile_resnet_generator``); ``ngf`` and ``n_blocks`` are its hyper-parameters.
``upsample`` (one of :data:`gtacity.nets.UPSAMPLES`) says how its decoder upsamples; files written
before it existed have no such key and mean ``transpose``, the paper's.

Official files (``latest_net_G_A.pth``) are plain state dicts; they are read with
``torch.load(weights_only=True)`` so loading never runs pickled code. Their ngf and block count are
inferred from the tensors, and InstanceNorm running stats written by old PyTorch versions are dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from gtacity.errors import GtacityError, first_line
from gtacity.filekinds import foreign_kind, torch_load_problem, training_checkpoint_kind
from gtacity.files import written_whole
from gtacity.nets import ARCHS, UPSAMPLES, build_generator

FORMAT = "gtacity-generator"
FORMAT_VERSION = 1
DIRECTIONS = ("gta2city", "city2gta")
_STRAY_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.")
# Only a resize decoder has a conv inside a top-level layer (ResizeConv2d.conv).
_RESIZE_KEY = re.compile(r"^model\.\d+\.conv\.weight$")
_STEP_FILE = re.compile(r"step_(\d+)_(gta2city|city2gta)\.safetensors")


class CheckpointError(GtacityError):
    """A file that cannot be used as a generator; the message names the file and the problem."""


@dataclass(frozen=True)
class GeneratorInfo:
    """What a generator file says about itself.

    ``direction`` is ``None`` for official files, which do not record it; the caller states it.
    ``trained_resolution`` is the training crop size in pixels, ``None`` where unknown.
    ``upsample`` is how the decoder upsamples (``transpose``, ``resize`` or ``bilinear``).
    """

    ngf: int
    n_blocks: int
    direction: str | None = None
    trained_resolution: int | None = None
    arch: str = "resnet_generator"
    norm: str = "instance"
    value_range: str = "-1,1"
    upsample: str = "transpose"
    source_format: str = FORMAT

    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata (all values are strings, as the format requires)."""
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        for key, value in asdict(self).items():
            if key != "source_format" and value is not None:
                meta[key] = str(value)
        return meta


def save_generator(
    net: nn.Module,
    path: str | Path,
    *,
    direction: str,
    trained_resolution: int | None = None,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``net`` as a generator file that :func:`load_generator` (and ``--weights``) reads.

    Args:
        net: the generator to save: any class of :data:`gtacity.nets.ARCHS` (its ``arch``,
            ``ngf``, ``n_blocks`` and ``upsample`` go into the metadata).
        path: destination; written to a temporary name first and renamed, so a crash never leaves
            a half-written file under the final name.
        direction: ``gta2city`` or ``city2gta``.
        trained_resolution: training crop size, recorded for users of the file.
        dtype: storage dtype; ``torch.float16`` halves the file (the bundled demo models use it).
        extra: more metadata (e.g. training step); string values.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    path = Path(path)
    info = GeneratorInfo(net.ngf, net.n_blocks, direction, trained_resolution, arch=net.arch,
                         upsample=net.upsample)
    meta = {**(extra or {}), **info.metadata()}
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    with written_whole(path) as partial:
        save_file(tensors, str(partial), metadata=meta)
    return path


def read_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], GeneratorInfo]:
    """Read a generator file into (state dict, info) without building the network.

    The metadata is checked against the tensors before anything is built, so a file cannot make
    this allocate more than its own size; weights holding NaN or Inf are refused.

    Raises:
        CheckpointError: missing, truncated, not a generator (an ONNX file, an engine, a training
            checkpoint, ... named as such), tensors that don't fit, or weights that are not finite.
    """
    path = generator_path(path)
    try:
        kind = foreign_kind(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the weights file ({e.strerror or e})") from e
    if kind is not None:
        raise CheckpointError(f"{path}: {kind}")
    if path.suffix == ".safetensors":
        state, info = _read_ours(path)
    else:
        state, info = _read_official(path)
    _check_shapes(path, state, info)
    _check_finite(path, state)
    return state, info


def load_generator(
    path: str | Path, *, direction: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, GeneratorInfo]:
    """Build the generator stored in ``path`` (of the arch it records) and load its weights (FP32, eval mode).

    Args:
        path: our ``.safetensors`` file or an official ``.pth`` state dict.
        direction: what the caller will use it for. Checked against the file where the file records
            one; filled in for official files, which do not.

    Raises:
        CheckpointError: the file cannot be used, or was trained for the other direction.
    """
    state, info = read_generator_file(path)
    if direction is not None:
        if info.direction is not None and info.direction != direction:
            raise CheckpointError(
                f"{path}: this generator translates {info.direction}, not {direction}; "
                f"pass --direction {info.direction} or the other generator of the run"
            )
        info = replace(info, direction=direction)
    net = build_generator(info.arch, info.ngf, info.n_blocks, info.upsample)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(map_location).eval(), info


def step_generator_path(run: str | Path, step: int, direction: str) -> Path:
    """Where ``gtacity train`` and ``gtacity distill`` keep a checkpoint's generator in a run folder."""
    return Path(run) / "generators" / f"step_{step:08d}_{direction}.safetensors"


def step_generators(run: str | Path, direction: str) -> list[tuple[int, Path]]:
    """(step, file) of every generator of ``direction`` that a run kept, by step; [] where none."""
    gen_dir = Path(run) / "generators"
    return sorted((int(m[1]), p) for p in (gen_dir.iterdir() if gen_dir.is_dir() else ())
                  if (m := _STEP_FILE.fullmatch(p.name)) and m[2] == direction)


def bundled_generators() -> dict[str, Path]:
    """The generators shipped inside the package, by name (the file's stem, e.g. ``gta2city_demo``,
    ``gta2city_demo_fast``): every ``--weights`` takes these names where no such file exists."""
    return {path.stem: path for path in sorted((Path(__file__).parent / "models").glob("*.safetensors"))}


def generator_path(path: str | Path) -> Path:
    """``path`` itself where that file exists, else the bundled generator of that name.

    Raises:
        CheckpointError: neither.
    """
    path = Path(path)
    if path.is_file():
        return path
    shipped = bundled_generators()
    if str(path) not in shipped:
        raise CheckpointError(f"{path}: no such weights file (or bundled generator: {', '.join(shipped)})")
    return shipped[str(path)]


def bundled_generator(direction: str) -> Path | None:
    """The demo generator shipped inside the package for ``direction``, or None if absent."""
    return bundled_generators().get(f"{direction}_demo")


def _read_ours(path: Path) -> tuple[dict[str, torch.Tensor], GeneratorInfo]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") from e
    if meta.get("format") != FORMAT:
        # A safetensors file from elsewhere holding an official-layout state dict is still usable.
        return state, _infer_info(path, state, source_format="safetensors")
    version = meta.get("format_version", "0")
    if not (version.isascii() and version.isdigit()):
        raise CheckpointError(f"{path}: generator metadata gives format_version {version[:40]!r}, not a "
                              "number; the file is damaged or was not written by gtacity")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: generator format version {meta['format_version']} is newer than this gtacity "
            f"reads ({FORMAT_VERSION}); upgrade gtacity"
        )
    try:
        info = GeneratorInfo(
            ngf=int(meta["ngf"]),
            n_blocks=int(meta["n_blocks"]),
            direction=meta.get("direction"),
            trained_resolution=int(meta["trained_resolution"]) if "trained_resolution" in meta else None,
            arch=meta.get("arch", "resnet_generator"),
            norm=meta.get("norm", "instance"),
            value_range=meta.get("value_range", "-1,1"),
            upsample=meta.get("upsample", "transpose"),
        )
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: generator metadata is incomplete ({e})") from e
    if info.arch not in ARCHS or info.norm != "instance" or info.upsample not in UPSAMPLES:
        raise CheckpointError(
            f"{path}: unsupported generator arch={info.arch} norm={info.norm} upsample={info.upsample} "
            f"(this gtacity reads {', '.join(ARCHS)} with {' or '.join(UPSAMPLES)} upsampling); upgrade gtacity"
        )
    if info.ngf < 1 or info.n_blocks < 1:
        raise CheckpointError(f"{path}: generator metadata gives ngf={info.ngf}, n_blocks={info.n_blocks}")
    return state, info


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain PyTorch state dict (official CycleGAN ``.pth``), read without unpickling code.

    ``module.`` prefixes (DataParallel) and InstanceNorm running stats written by old PyTorch
    versions are dropped. Works for generators and discriminators alike.
    """
    path = Path(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; all mean "unreadable"
        raise CheckpointError(f"{path}: {torch_load_problem(e)}") from e
    kind = training_checkpoint_kind(path, obj)
    if kind is not None:
        raise CheckpointError(f"{path}: {kind}")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return {
        k.removeprefix("module."): v
        for k, v in obj.items()
        if not k.endswith(_STRAY_SUFFIXES)
    }


def _read_official(path: Path) -> tuple[dict[str, torch.Tensor], GeneratorInfo]:
    state = read_state_dict(path)
    return state, _infer_info(path, state, source_format="pth")


def _patchgan_like(state: dict[str, torch.Tensor]) -> bool:
    """Whether ``state`` opens like a PatchGAN discriminator: a 4x4 conv from the image (3 channels,
    or pix2pix's 6) first, at ``model.0`` or, after a blur or a pad (``train --d-antialias``), ``model.1``."""
    for key in ("model.0.weight", "model.1.weight"):
        first = state.get(key)
        if first is not None:
            return first.ndim == 4 and tuple(first.shape[1:]) in ((3, 4, 4), (6, 4, 4))
    return False


def _infer_info(path: Path, state: dict[str, torch.Tensor], source_format: str) -> GeneratorInfo:
    first = state.get("model.1.weight")
    if first is None or first.ndim != 4 or tuple(first.shape[1:]) != (3, 7, 7):
        hint = " (this looks like a discriminator)" if _patchgan_like(state) else ""
        raise CheckpointError(
            f"{path}: not a CycleGAN ResNet generator{hint}: no 7x7 input conv at model.1.weight"
        )
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        raise CheckpointError(f"{path}: not a CycleGAN ResNet generator: no residual blocks")
    upsample = "resize" if any(_RESIZE_KEY.match(k) for k in state) else "transpose"
    return GeneratorInfo(ngf=first.shape[0], n_blocks=len(blocks), upsample=upsample, source_format=source_format)


def _check_shapes(path: Path, state: dict[str, torch.Tensor], info: GeneratorInfo) -> None:
    # Sizes come from metadata anyone can edit: every residual block holds at least two tensors, so
    # a block count the file cannot hold is refused before a single layer exists, and the network
    # is built on the meta device (shapes, no memory), so a huge ngf allocates nothing either.
    if 2 * info.n_blocks > len(state):
        raise CheckpointError(f"{path}: generator metadata gives n_blocks={info.n_blocks}, but the file "
                              f"holds only {len(state)} tensors; the file is damaged or was edited")
    with torch.device("meta"):
        expected = build_generator(info.arch, info.ngf, info.n_blocks, info.upsample).state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
        raise CheckpointError(
            f"{path}: does not fit a ngf={info.ngf}, {info.n_blocks}-block {info.arch} "
            f"({info.upsample} upsampling): {'; '.join(parts)}"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"a ngf={info.ngf}, {info.n_blocks}-block generator needs {tuple(ref.shape)}"
            )


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    # One NaN or Inf in any weight spreads through InstanceNorm and the next conv to every pixel of
    # every frame: the output would be black frames that look like a finished job.
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: tensor {key} holds {bad} NaN/Inf values (of {tensor.numel()}): these weights "
                "translate every frame to garbage (a training run that diverged?); use an earlier "
                "checkpoint's generator (<run>/generators/step_*.safetensors)"
            )


def check_finite_output(output: torch.Tensor, weights: str | Path, precision: str) -> None:
    """Stop a translation whose first batch came out with NaN or Inf values.

    Call it on the generator's output for the first batch (any device; one reduction and one
    sync), before anything is written. Weights are already checked at load, so what is left is a
    reduced precision overflowing, or weights that are finite but blow up.

    Raises:
        CheckpointError: naming the weights, the precision and how many values are not finite.
    """
    finite = torch.isfinite(torch.as_tensor(output))
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    raise CheckpointError(
        f"{weights}: the generator's output for the first batch holds {bad} NaN/Inf values (of "
        f"{finite.numel()}) at {precision} precision. Try --precision fp32; "
        "if that fails too, the weights are broken: use another generator file"
    )


def describe(info: GeneratorInfo) -> str:
    """One line for logs: ``ngf 64, 9 blocks, gta2city, trained at 256 px`` (arch named if not ResNet,
    upsampling if not the paper's)."""
    parts = [f"ngf {info.ngf}", f"{info.n_blocks} blocks"]
    if info.upsample != "transpose":
        parts.append(f"{info.upsample} upsampling")
    if info.arch != "resnet_generator":
        parts.insert(0, info.arch)
    if info.direction:
        parts.append(info.direction)
    if info.trained_resolution:
        parts.append(f"trained at {info.trained_resolution} px")
    return ", ".join(parts)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB pieces), e.g. a generator file a run or job records."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
