"""INT8 for the openvino backend: calibration frames, NNCF post-training quantisation, a quality gate.

::

    frames = calibration_frames("drive.mp4")              # up to 32 frames spread over the input
    backend = create_backend("openvino", net, precision="int8")
    backend.calibrate(frames)                             # quantise (or load cached), check PSNR
    print(backend.int8_check.line())                      # "int8: PSNR vs fp32 ... 36.1 dB ..."

Method. NNCF's ``quantize`` (MIXED preset: symmetric weights, asymmetric activations) runs the fp32
model over the calibration frames, records the range of every activation that feeds a convolution,
and inserts 8-bit fake-quantise nodes that OpenVINO's CPU plugin turns into int8 kernels (AVX2
integer dot products here; VNNI and AMX run them faster). Kept in fp32, because it measurably helps
(demo generator, real GTA5 frames at 512x288, PSNR vs fp32 on 8 frames not calibrated on; AVX2 EPYC,
on a CPU shared with other jobs):

    ===========================================  =========  ============  ========================
    what is quantised                            PSNR mean  worst frame   speed vs openvino fp32
    ===========================================  =========  ============  ========================
    everything NNCF's MIXED preset picks         28.3 dB    24.7 dB       1.40x
    ... but first and last convolution in fp32   28.6 dB    24.8 dB       1.17x
    convolutions only (norms, adds in fp32)      45.0 dB    44.5 dB       1.65x
    ... and first and last convolution in fp32   48.7 dB    46.4 dB       1.55x
    ===========================================  =========  ============  ========================

The instance normalisations (ReduceMean/Subtract/Sqrt/Divide after conversion) and residual adds
are where 8 bits hurt: their inputs span ranges a per-tensor scale cannot hold. Whether to keep the
first and last convolutions in fp32 too was settled on a quiet machine (same CPU, 256x256 crops of
6 GTA5 frames not calibrated on, the model alone, medians of 3 alternated rounds):

    ===========================================  =========  ============  ========================
    convolutions kept in fp32                    PSNR mean  worst frame   ms/frame (fp32: 164)
    ===========================================  =========  ============  ========================
    first and last                               49.1 dB    41.4 dB       112 (1.47x)
    last                                         48.8 dB    41.4 dB       103 (1.60x)
    first                                        46.0 dB    43.8 dB        98 (1.67x)
    none (this recipe)                           45.9 dB    43.7 dB        94 (1.76x)
    ===========================================  =========  ============  ========================

The last convolution (7x7, 3 output channels) is the slowest layer left in fp32: OpenVINO's fp32
kernels vectorise over output channels, so it ran at a quarter of the first convolution's speed
for the same MACs (16 of 102 ms of the previous recipe's frame). Quantising every convolution
costs 3 dB on the mean but none on the worst frame, which is what the quality gate checks.

Cost, once per generator. Calibration is about two fp32 passes per calibration frame plus the
graph work (measured in RESULTS.md). Quantisation ranges belong to the generator and its domain, not
to one clip, so the quantised model is the generator's: cached on disk next to the fp32 conversion,
keyed by the weights and the torch / OpenVINO / NNCF versions (not by the frames), made by the
first input it meets (or by ``--calibration DIR``, ``gtacity export --format openvino-int8``, or at
the end of ``gtacity train`` from its own training frames), and reused by every later input. The
bundled generators ship theirs (``gtacity/models/int8/``), so they never calibrate.

Quality gate. Before use the int8 output is compared with fp32 on up to :data:`CHECK_FRAMES`
calibration frames; the PSNR is printed, and a model whose worst frame falls below the floor
(:data:`MIN_PSNR_DB` by default) is refused with one line. The comparison (two compilations and
2 x 8 inferences: about 3 s a job with the demo generator, 11 s with ngf 64, on 2 cores) is kept with the
cached model per instruction set, so a later job on the same calibration frames and kind of CPU
reuses its PSNRs and only applies its own floor. A job that reuses the generator's model checks it
on :data:`REUSE_CHECK_FRAMES` crops of :data:`REUSE_CROP` px from its own input (from its first
:data:`REUSE_SPAN` frames), with the compiled models kept in OpenVINO's blob cache, and is refused
below the floor as before. Those crops are a quarter of a calibration crop's pixels: the check's
fp32 inferences were most of a fresh job's fixed cost (3.4 of 3.9 s with ngf 64 on 2 AVX2 cores;
RESULTS.md, "INT8 once per generator, quiet").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import gtacity
from gtacity.engine.exporters.openvino import (
    compile_fp32,
    isa_key,
    load_or_convert,
    model_key,
    read_stored,
    store_model,
)
from gtacity.engine.frames import Frame
from gtacity.engine.media.sources import open_source, read_image
from gtacity.engine.stream.convert import to_batch
from gtacity.errors import BackendError, GtacityError
from gtacity.files import written_whole
from gtacity.quality import psnr

CALIBRATION_FRAMES = 32
CROP = 256
CHECK_FRAMES = 8
# A job that reuses the generator's int8 model checks it on this many of its own frames, taken from
# its first REUSE_SPAN frames (a bounded decode, however long the input).
REUSE_CHECK_FRAMES = 4
REUSE_CROP = 128
REUSE_SPAN = 240
# int8 models shipped with the bundled generators, named by the weights' checksum.
SHIPPED = Path(gtacity.__file__).parent / "models" / "int8"
MIN_PSNR_DB = 30.0
# Bumped when the quantisation recipe changes, so cached models of an older recipe are not reused.
RECIPE = "nncf-mixed-norms-fp32-v3"
# What InstanceNorm becomes in the converted graph (or MVN where OpenVINO fuses it), the residual adds
# and the tanh's neighbours: quantising their inputs cost 17 dB of PSNR on the demo generator.
_NORM_AND_ELEMENTWISE = ("MVN", "ReduceMean", "Subtract", "Multiply", "Add", "Sqrt", "Divide", "Power")


@dataclass(frozen=True)
class Int8Check:
    """How the int8 model compares with fp32 on the calibration frames, and what it cost.

    Attributes:
        frames: calibration frames the model was quantised on.
        checked: of those, how many were compared with fp32.
        mean_db, worst_db: PSNR vs fp32 over all checked pixels, and of the worst frame.
        floor_db: the least ``worst_db`` accepted.
        quantize_s: seconds NNCF took (0 when the model came from the cache).
        from_cache: whether the quantised model was loaded from the disk cache.
        reused: where the generator's int8 model came from when a job reused it rather than
            calibrating (``"cached"`` or ``"shipped"``); empty after a calibration.
        rechecked: False when the PSNRs are those measured when the cached model was first
            checked on a CPU with these instruction sets (see :func:`check`).
    """

    frames: int
    checked: int
    mean_db: float
    worst_db: float
    floor_db: float
    quantize_s: float = 0.0
    from_cache: bool = False
    rechecked: bool = True
    reused: str = ""

    def line(self) -> str:
        """One line for the user, e.g. ``"int8: PSNR vs fp32 on 8 calibration frames: ..."``."""
        if self.reused:
            return (f"int8: the generator's {self.reused} int8 model; PSNR vs fp32 on {self.checked} frames of "
                    f"this input: mean {self.mean_db:.1f} dB, worst {self.worst_db:.1f} dB (floor {self.floor_db:g} dB)")
        how = "cached model" if self.from_cache else f"quantised on {self.frames} frames in {self.quantize_s:.0f} s"
        if not self.rechecked:
            how += ", checked when first used on this kind of CPU"
        return (f"int8: PSNR vs fp32 on {self.checked} calibration frames: mean {self.mean_db:.1f} dB, "
                f"worst {self.worst_db:.1f} dB (floor {self.floor_db:g} dB); {how}")


def calibration_frames(path: str | Path, count: int = CALIBRATION_FRAMES, span: int | None = None,
                       crop: int = CROP) -> list[torch.Tensor]:
    """Up to ``count`` frames spread evenly over a video, image folder or image, cropped to ``crop`` px.

    ``span``: spread them over the first ``span`` frames only (decoding no further).

    Returns:
        ``(1, 3, H, W)`` float32 tensors in [-1, 1], padded to multiples of 4 like the pipeline's,
        at most ``crop`` pixels a side (see :func:`_crop`).

    Raises:
        GtacityError: an unreadable input, or one without frames.
    """

    frames = []
    with open_source(path) as source:
        stride = max(1, min(len(source), span or len(source)) // count)
        for i, frame in enumerate(source):
            if i % stride == 0:
                frames.append(_crop(to_batch([frame], torch.device("cpu")), len(frames), crop))
                if len(frames) == count:
                    break
    if not frames:
        raise BackendError(f"{path}: no frames to calibrate int8 on")
    return frames


def _crop(x: torch.Tensor, index: int, crop: int = CROP) -> torch.Tensor:
    """A ``crop`` x ``crop`` window of ``x`` at native scale, sliding across the frame with ``index``.

    Ranges are a property of the content at its own scale, not of the frame size; crops keep a
    calibration frame's cost fixed (a 1080p frame would cost 31x a 256x256 crop at ngf 64).
    """
    height, width = x.shape[-2:]
    h, w = min(crop, height), min(crop, width)
    top = (index * 97) % (height - h + 1)
    left = (index * 193) % (width - w + 1)
    return x[..., top : top + h, left : left + w].contiguous()


def _psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two model outputs in [-1, 1] taken as one image (peak = the full range of 2)."""
    return float(psnr(torch.from_numpy(a).reshape(1, -1) / 2, torch.from_numpy(b).reshape(1, -1) / 2)[0])


def frames_of_images(images: list[Path], count: int = CALIBRATION_FRAMES) -> list[torch.Tensor]:
    """Up to ``count`` calibration frames from image files spread over ``images`` (a training set),
    like :func:`calibration_frames`; files that cannot be read are passed over.

    Raises:
        BackendError: none of the picked files could be read.
    """
    frames = []
    for path in images[:: max(1, len(images) // count)][:count]:
        try:
            image, _alpha = read_image(Path(path))
        except GtacityError:
            continue
        frames.append(_crop(to_batch([Frame(image[..., :3], 0)], torch.device("cpu")), len(frames)))
    if not frames:
        raise BackendError("no readable training frames to calibrate int8 on")
    return frames


def check_frames(path: str | Path) -> list[torch.Tensor]:
    """The few crops of a job's input that a reused int8 model is checked on (a bounded decode)."""
    return calibration_frames(path, REUSE_CHECK_FRAMES, span=REUSE_SPAN, crop=REUSE_CROP)


def cache_name(weights_key: str) -> str:
    """Cache entry name of a generator's int8 model: its weights, NNCF's version and the recipe.

    One entry per generator, not per input: quantisation ranges belong to the generator and its
    domain, so every later input reuses what the first calibration made.
    """
    digest = hashlib.sha256(f"{weights_key} nncf {_nncf_version()} {RECIPE}".encode())
    return f"int8-gen-{digest.hexdigest()[:32]}"


def frames_digest(frames: list[torch.Tensor]) -> str:
    """SHA-256 of calibration frames (shapes and values): which frames a stored model was made from."""
    digest = hashlib.sha256()
    for x in frames:
        digest.update(str(tuple(x.shape)).encode())
        digest.update(x.contiguous().numpy().tobytes())
    return digest.hexdigest()


def shipped_model(weights_checksum: str) -> Path | None:
    """The int8 model shipped for the bundled generator with these weights, if there is one."""
    path = SHIPPED / f"{weights_checksum[:32]}.xml"
    return path if path.is_file() and path.with_suffix(".bin").is_file() else None


def quantize(model, frames: list[torch.Tensor], progress: bool = True):
    """The OpenVINO ``model`` quantised to int8 by NNCF on ``frames`` (norms and element-wise ops kept fp32);
    NNCF's progress bars go to stderr, or nowhere without ``progress``.

    Raises:
        BackendError: NNCF is not installed.
    """
    # nncf imports torch's C++-extension helper, which warns about CUDA on every CPU-only machine.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
    except ImportError:
        raise BackendError("int8 needs NNCF: pip install nncf (or pip install 'gtacity[int8]')") from None
    nncf.set_log_level(logging.ERROR)  # its INFO lines would mix into the command's own output
    keep_fp32 = nncf.IgnoredScope(types=list(_NORM_AND_ELEMENTWISE),
                                  validate=False)  # a graph need not have every one of those types
    # Its progress bars (rich, on stdout) are progress, not output; NNCF has no switch to turn them off.
    with open(os.devnull, "w") if not progress else contextlib.nullcontext(sys.stderr) as bars, \
            contextlib.redirect_stdout(bars):
        return nncf.quantize(model, nncf.Dataset([x.numpy() for x in frames]),
                             preset=nncf.QuantizationPreset.MIXED, subset_size=len(frames),
                             ignored_scope=keep_fp32)


def check(compile_fn, fp32_model, int8_model, frames: list[torch.Tensor], floor_db: float,
          stored: Path | None = None, **costs) -> Int8Check:
    """Compare int8 with fp32 on up to :data:`CHECK_FRAMES` of ``frames``; refuse below ``floor_db``.

    Args:
        compile_fn: compiles an OpenVINO model for the CPU in fp32 inference precision.
        stored: a file :func:`store_check` wrote for this very model and frames on a CPU like
            this one: its PSNRs are used instead of comparing again (absent or unreadable: compare).

    Raises:
        BackendError: the worst checked frame is below ``floor_db``.
    """
    step = max(1, len(frames) // CHECK_FRAMES)
    sample = frames[::step][:CHECK_FRAMES]
    known = _read_check(stored)
    if known is not None:
        mean_db, worst_db = known
    else:
        fp32, int8 = compile_fn(fp32_model), compile_fn(int8_model)
        pairs = [(fp32(x.numpy())[0], int8(x.numpy())[0]) for x in sample]
        worst_db = min(_psnr_db(a, b) for a, b in pairs)
        mse = np.mean([np.mean(((a.astype(np.float64) - b) / 2) ** 2) for a, b in pairs])
        mean_db = float("inf") if mse == 0 else float(10 * np.log10(1 / mse))
    result = Int8Check(len(frames), len(sample), mean_db, worst_db, floor_db, rechecked=known is None, **costs)
    if result.worst_db < floor_db:
        raise BackendError(
            f"int8 refused: {result.worst_db:.1f} dB PSNR vs fp32 on its worst calibration frame, below "
            f"the {floor_db:g} dB floor; use --precision fp32, or calibrate on frames like the job's (--calibration DIR)"
        )
    return result


def calibrated(fp32_model, frames: list[torch.Tensor], root: Path | None, name: str, compile_fn,
               floor_db: float, progress: bool = True) -> tuple[object, Int8Check]:
    """The generator's int8 model quantised on ``frames`` and checked against fp32, stored as the cache
    entry ``root/name`` (it replaces one made from other frames; the same frames reuse it).

    The comparison with fp32 (two compilations and 2 x 8 inferences: 3-11 s on 2 cores) is kept with
    the stored model per instruction set: int8 kernels round differently on AVX2, VNNI and AMX, so a
    cache shared by other CPUs checks again there.

    Raises:
        BackendError: NNCF missing, or the model below ``floor_db``.
    """
    digest = frames_digest(frames)
    stored = read_stored(root, name)
    from_cache = stored is not None and stored[1].get("frames_sha256") == digest
    start = time.perf_counter()
    quantized = stored[0] if from_cache else quantize(fp32_model, frames, progress)
    quantize_s = 0.0 if from_cache else time.perf_counter() - start
    if not from_cache and root is not None:  # the generator's int8 model from now on
        store_model(root, name, quantized, {"frames_sha256": digest, "frames": len(frames)})
    check_file = None if root is None else root / name / f"check-{isa_key()}.json"
    result = check(compile_fn, fp32_model, quantized, frames, floor_db, quantize_s=quantize_s,
                   from_cache=from_cache, stored=check_file if from_cache else None)
    if check_file is not None and result.rechecked:
        store_check(result, check_file)
    return quantized, result


def for_generator(net, frames: list[torch.Tensor], root: Path | None,
                  floor_db: float = MIN_PSNR_DB) -> tuple[object, Int8Check]:
    """:func:`calibrated` for a generator ``net`` (a torch module): the same cache entry the openvino
    backend uses for it, so ``--precision int8`` with these weights reuses the result."""
    fp32 = load_or_convert(net, "" if root is None else str(root.parent))[0]
    name = cache_name(model_key(net))
    return calibrated(fp32, frames, root, name, lambda m: compile_fp32(m, root), floor_db)


def store_check(result: Int8Check, path: Path) -> None:
    """Keep ``result``'s PSNRs for :func:`check`'s ``stored`` (a failed write only costs time)."""
    with contextlib.suppress(OSError), written_whole(path) as partial:
        partial.write_text(json.dumps({"mean_db": result.mean_db, "worst_db": result.worst_db}))


def _read_check(path: Path | None) -> tuple[float, float] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        return float(data["mean_db"]), float(data["worst_db"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _nncf_version() -> str:
    try:
        import nncf
    except ImportError:
        return "none"
    return nncf.__version__

