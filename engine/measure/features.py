"""The feature network behind FID and KID: the standard FID Inception, or an offline stand-in.

**The network.** FID and KID are defined on the 2048 pool features of the Inception v3 graph
that TensorFlow's FID code shipped (``inception-2015-12-05``). pytorch-fid ported it as
``pt_inception-2015-12-05-6726825d.pth``; torch-fidelity (behind torchmetrics' default) publishes
the same bytes as ``weights-inception-2015-12-05-6726825d.pth``. :class:`FIDInception` is
torchvision's Inception v3 with the port's four changes (average pools that leave padding out of
the mean, a max pool in the last block, 1008 classes), so those files load into it unchanged.

**The resize** (clean-fid's "clean" mode, Parmar et al., CVPR 2022): every frame, whatever its
size, is resized to 299x299 per channel in floating point with PIL's antialiased bicubic filter
and is *not* rounded back to 8 bits. The older bilinear resizes without antialiasing (the
TensorFlow and pytorch-fid defaults) alias high frequencies into the features, and rounding or
JPEG-compressing one set and not the other moves FID by more than many papers' gains.

**The stand-in** (:func:`standin_network`) is the same layout with seeded random convolutions
whose batch norms are fitted to a few real frames. Offline, where the published weights cannot
be had, it gives distances that rank sets sensibly; they are NOT FID or KID values and compare
only with numbers from the same stand-in (same seed, same calibration frames).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models import inception as tv

from gtacity.errors import GtacityError

SIZE = 299
RESIZE_MODE = ("clean: PIL bicubic with antialiasing, per channel in float, not rounded to 8 bits "
               "(clean-fid's recommendation: aliasing and re-quantisation move FID)")
FEATURES = 2048
# Stand-in recipe version: bump when the stand-in's construction changes, so old caches go stale.
STANDIN_RECIPE = "standin-v1"


class FeatureError(GtacityError):
    """The feature network cannot be built from what was given."""


def _fid_pool(base: type[nn.Module], pool) -> type[nn.Module]:
    """``base`` with its pool branch fed by ``pool`` instead of torchvision's padded average."""

    class Block(base):
        def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            outputs = super()._forward(x)
            outputs[-1] = self.branch_pool(pool(x))  # the pool branch is always last
            return outputs

    Block.__name__ = f"FID{base.__name__}"
    return Block


def _avg_without_padding(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max(x: torch.Tensor) -> torch.Tensor:
    # The FID graph's last block max-pools here (unlike the paper's Inception).
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


_A = _fid_pool(tv.InceptionA, _avg_without_padding)
_C = _fid_pool(tv.InceptionC, _avg_without_padding)
_E1 = _fid_pool(tv.InceptionE, _avg_without_padding)
_E2 = _fid_pool(tv.InceptionE, _max)


class FIDInception(nn.Module):
    """Inception v3 in the FID port's layout: ``(N, 3, 299, 299)`` floats in 0..255 -> ``(N, 2048)``.

    Its ``state_dict`` keys are those of ``pt_inception-2015-12-05-6726825d.pth`` (566 tensors).
    ``num_features`` is read by torchmetrics' metrics.
    """

    num_features = FEATURES

    def __init__(self, random_init: bool = False):
        super().__init__()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=random_init)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _A(192, 32), _A(256, 64), _A(288, 64)
        net.Mixed_6b, net.Mixed_6c = _C(768, channels_7x7=128), _C(768, channels_7x7=160)
        net.Mixed_6d, net.Mixed_6e = _C(768, channels_7x7=160), _C(768, channels_7x7=192)
        net.Mixed_7b, net.Mixed_7c = _E1(1280), _E2(2048)
        del net.dropout
        self.net = net
        # The stand-in divides its features by their RMS over its calibration frames (a plain
        # attribute, not state: the published weights' keys stay exactly theirs).
        self.feature_scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = x / 127.5 - 1  # pytorch-fid's scaling of [0, 1] to [-1, 1]  # (N, 3, 299, 299)
        x = n.maxpool1(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))))  # (N, 64, 73, 73)
        x = n.maxpool2(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)))  # (N, 192, 35, 35)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)  # ... (N, 2048, 8, 8)
        return torch.flatten(n.avgpool(x), 1) * self.feature_scale  # (N, 2048)

    def load_fid_weights(self, state: dict[str, torch.Tensor], path: str) -> None:
        """Load a FID Inception state dict (the port's keys, without the ``net.`` prefix)."""
        state = {k.removeprefix("net."): v for k, v in state.items()}
        mine = self.net.state_dict()
        missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        wrong = [k for k in mine if k in state and state[k].shape != mine[k].shape]
        if missing or extra or wrong:
            what = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                    else f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}")
            raise FeatureError(f"{path}: not the FID Inception weights ({what}); pass pytorch-fid's "
                               "pt_inception-2015-12-05-6726825d.pth")
        self.net.load_state_dict(state)


@dataclass(frozen=True)
class FeatureNet:
    """A feature network ready to use, and what identifies it in reports and caches.

    Attributes:
        module: :class:`FIDInception` in eval mode, on ``device``.
        kind: ``"inception"`` (published weights) or ``"standin"``.
        sha256: the weights file's SHA-256, or for the stand-in the SHA-256 of its recipe (seed and
            calibration frames), so that a cache or a report names exactly this network.
        description: one line for the report.
        standard: True when the weights are the published FID file (values comparable with papers).
    """

    module: FIDInception
    kind: str
    sha256: str
    description: str
    standard: bool

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


def clean_resize(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 (or uint16) RGB -> ``(3, 299, 299)`` float32 in 0..255, clean-fid's way."""
    if image.dtype == np.uint16:  # 16-bit frames: the 8-bit picture FID's features were made for
        image = np.round(image / 257.0).astype(np.uint8)
    channels = []
    for c in range(3):
        plane = Image.fromarray(np.ascontiguousarray(image[:, :, c]).astype(np.float32), mode="F")
        channels.append(np.asarray(plane.resize((SIZE, SIZE), resample=Image.BICUBIC)))
    return np.clip(np.stack(channels), 0, 255).astype(np.float32)


def extract(net: FeatureNet, images: Iterable[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """2048 features per image: ``(N, 2048)`` float64, in the order given."""
    out, batch = [], []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).to(net.device)
        with torch.inference_mode():
            out.append(net.module(x).double().cpu().numpy())
        batch.clear()

    for image in images:
        batch.append(clean_resize(image))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.concatenate(out) if out else np.zeros((0, FEATURES))


def inception_network(state: dict[str, torch.Tensor], path: str, sha256: str, standard: bool,
                      device: str | torch.device = "cpu") -> FeatureNet:
    """The FID Inception with a loaded state dict (see :func:`gtacity.engine.measure.weights.load_inception`)."""
    module = FIDInception()
    module.load_fid_weights(state, path)
    note = "" if standard else " (NOT the published file: values are not comparable with published FIDs)"
    return FeatureNet(module.eval().to(device), "inception", sha256,
                      f"FID Inception v3 ({path}, SHA-256 {sha256[:12]}){note}", standard)


def standin_network(calibration: Sequence[np.ndarray], seed: int = 0,
                    device: str | torch.device = "cpu") -> FeatureNet:
    """The FID Inception's layout with seeded random convolutions and batch norms fitted to frames.

    Deterministic: the same ``seed`` and frames give the same network. Each batch norm's running
    mean and variance become the statistics of its input over ``calibration`` (one pass in
    training mode with cumulative averages), so every layer sees unit-scale activations on real
    frames instead of exploding or vanishing; the 2048 features are then scaled to unit RMS on
    those frames.

    Args:
        calibration: a few real frames (``(H, W, 3)`` uint8 RGB); at least 2.
        seed: seeds the random convolutions.
        device: where the network runs.
    """
    if len(calibration) < 2:
        raise FeatureError("the stand-in network needs at least 2 real frames to fit its batch norms")
    resized = np.stack([clean_resize(im) for im in calibration])
    recipe = hashlib.sha256(f"{STANDIN_RECIPE}:seed={seed}:".encode())
    recipe.update(resized.tobytes())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = FIDInception(random_init=True)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the running stats become the batch's
            m.reset_running_stats()
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(resized))
        module.eval()
        # Unit RMS on the calibration frames keeps distances in a readable range; random
        # convolutions otherwise give features of arbitrary scale.
        module.feature_scale = 1.0 / float(module(torch.from_numpy(resized)).square().mean().sqrt())
    digest = recipe.hexdigest()
    return FeatureNet(module.eval().to(device), "standin", digest,
                      f"STAND-IN network (random convolutions, seed {seed}, batch norms fitted to "
                      f"{len(calibration)} real frames; recipe {digest[:12]}): NOT FID/KID values", False)
