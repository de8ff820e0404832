"""The segmenter recipes of ``gtacity eval segmentation``: fixed, documented, named.

A recipe is everything that decides how a segmenter is trained besides the data and the seed: the
network, the image sizes, the crops, the optimiser and its schedule. Comparing two training sets
(translated vs raw GTA5) means training the same recipe, seed and steps on each.

==================== ======================================================================
``cpu-tiny``         a small fully-convolutional net (~0.1 M parameters, stride 8 with a
                     stride-4 skip); images at 512 px wide, 256x256 crops, batch 4, 1000
                     steps of Adam (lr 2e-3, poly); a laptop's recipe and the tests'. Not a number to compare with papers.
``deeplabv3-mobilenet`` torchvision's DeepLabV3 with a MobileNetV3-Large backbone (11 M);
                     ``deeplabv3-resnet50`` the same with ResNet-50 (39 M). The usual
                     GTA5 -> Cityscapes protocol (DAFormer's sizes): training images at
                     1280 px wide (GTA5 1280x720), 512x512 crops, flips, scale jitter
                     0.75-1.5, batch 8, SGD (momentum 0.9, weight decay 1e-4) with the poly
                     schedule (power 0.9) from lr 0.01; scored at 1024x512 and upsampled to
                     the ground truth's 2048x1024. AMP and channels-last on CUDA. ImageNet
                     backbone weights when torchvision's cache has them or ``--backbone-
                     weights FILE`` is given, otherwise from scratch (the report says which).
==================== ======================================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gtacity.cityscapes import N_CLASSES
from gtacity.trainer.data import DataError

# ImageNet statistics: every recipe normalises with them (torchvision's backbones expect them).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Recipe:
    """How a segmenter is trained and scored.

    Attributes:
        name: the recipe's name (a key of :data:`RECIPES` for the built-in ones).
        arch: ``tiny_fcn``, ``deeplabv3_mobilenet_v3_large`` or ``deeplabv3_resnet50``.
        width: of the tiny net (channels of its first stage).
        train_width: training images are first resized to this width (aspect kept).
        eval_width: validation images are predicted at this width; logits are upsampled
            (bilinear) to the ground truth's size before the argmax.
        crop: (height, width) of the random training crop (padded with 'ignore' where larger).
        scale: range of the random scale applied on top of ``train_width``.
        batch_size, steps: images per step and optimiser steps.
        optimizer: ``adam`` or ``sgd`` (momentum 0.9); ``lr``, ``weight_decay``.
        poly_power: lr = base * (1 - step / steps) ** power.
    """

    name: str
    arch: str
    width: int = 16
    train_width: int = 512
    eval_width: int = 512
    crop: tuple[int, int] = (256, 256)
    scale: tuple[float, float] = (0.75, 1.25)
    batch_size: int = 4
    steps: int = 1000
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    poly_power: float = 0.9

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        d = dict(d)
        d["crop"], d["scale"] = tuple(d["crop"]), tuple(d["scale"])
        return cls(**d)

    def lr_at(self, step: int) -> float:
        """The poly schedule's learning rate before optimiser step ``step`` (0-based)."""
        return self.lr * max(0.0, 1.0 - step / self.steps) ** self.poly_power


_DEEPLAB = dict(train_width=1280, eval_width=1024, crop=(512, 512), scale=(0.75, 1.5), batch_size=8,
                steps=20000, optimizer="sgd", lr=0.01, weight_decay=1e-4)
RECIPES: dict[str, Recipe] = {
    "cpu-tiny": Recipe("cpu-tiny", "tiny_fcn"),
    "deeplabv3-mobilenet": Recipe("deeplabv3-mobilenet", "deeplabv3_mobilenet_v3_large", **_DEEPLAB),
    "deeplabv3-resnet50": Recipe("deeplabv3-resnet50", "deeplabv3_resnet50", **_DEEPLAB),
}
# torchvision's ImageNet files for each backbone, as its cache names them.
_BACKBONE_FILES = {
    "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "deeplabv3_resnet50": "resnet50-0676ba61.pth",
}


def recipe(name: str, **overrides) -> Recipe:
    """The built-in recipe ``name``, with fields replaced by ``overrides`` (e.g. ``steps=500``)."""
    if name not in RECIPES:
        raise DataError(f"unknown segmenter recipe {name!r}; choose from {', '.join(RECIPES)}")
    return dataclasses.replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


class TinyFCN(nn.Module):
    """A small fully-convolutional segmenter: three stride-2 stages, two dilated convolutions at
    stride 8, logits from there plus a stride-4 skip, upsampled bilinearly to the input size."""

    def __init__(self, width: int = 16, n_classes: int = N_CLASSES):
        super().__init__()
        w = width

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stage4 = nn.Sequential(block(3, w, 2), block(w, 2 * w, 2), block(2 * w, 2 * w))
        self.stage8 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w, dilation=2),
                                    block(4 * w, 4 * w, dilation=4))
        self.head8 = nn.Conv2d(4 * w, n_classes, 1)
        self.head4 = nn.Conv2d(2 * w, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.stage4(x)  # (B, 2w, H/4, W/4)
        f8 = self.stage8(f4)  # (B, 4w, H/8, W/8)
        logits = self.head4(f4) + F.interpolate(self.head8(f8), size=f4.shape[-2:], mode="bilinear",
                                                align_corners=False)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _TorchvisionSegmenter(nn.Module):
    """torchvision's segmentation models return ``{"out": logits}``; this returns the logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def build_segmenter(rec: Recipe, backbone_weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """The untrained segmenter of ``rec`` and where its starting weights came from.

    Args:
        backbone_weights: an ImageNet state dict (``.pth``) for the DeepLabV3 backbone; None looks
            in torchvision's cache (never downloads) and starts from scratch without it.

    Returns:
        (net, origin): origin is ``"random init"``, or ``"ImageNet backbone from FILE"``.
    """
    if rec.arch == "tiny_fcn":
        if backbone_weights:
            raise DataError("--backbone-weights is for the DeepLabV3 recipes; cpu-tiny trains from scratch")
        return TinyFCN(rec.width), "random init"
    from torchvision.models import mobilenet_v3_large, resnet50
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large, deeplabv3_resnet50

    if rec.arch not in _BACKBONE_FILES:
        raise DataError(f"unknown segmenter arch {rec.arch!r}")
    build = deeplabv3_mobilenet_v3_large if rec.arch == "deeplabv3_mobilenet_v3_large" else deeplabv3_resnet50
    net = build(weights=None, weights_backbone=None, num_classes=N_CLASSES, aux_loss=False)
    path = Path(backbone_weights) if backbone_weights else Path(torch.hub.get_dir()) / "checkpoints" / _BACKBONE_FILES[rec.arch]
    if not path.is_file():
        if backbone_weights:
            raise DataError(f"{path}: no such backbone weights file")
        return _TorchvisionSegmenter(net), f"random init (no {_BACKBONE_FILES[rec.arch]} in torchvision's cache)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same to the user
        raise DataError(f"{path}: not a readable state dict ({str(e).splitlines()[0][:120]})") from None
    classifier = mobilenet_v3_large(dilated=True) if "mobilenet" in rec.arch else resnet50(
        replace_stride_with_dilation=[False, True, True])
    try:
        classifier.load_state_dict(state)
    except RuntimeError as e:
        raise DataError(f"{path}: not the ImageNet weights of {rec.arch}'s backbone ({str(e).splitlines()[0][:120]})") from None
    source = classifier.features if "mobilenet" in rec.arch else classifier
    missing, _ = net.backbone.load_state_dict(source.state_dict(), strict=False)
    if missing:
        raise DataError(f"{path}: lacks backbone weights such as {missing[0]}")
    return _TorchvisionSegmenter(net), f"ImageNet backbone from {path}"
