"""CycleGAN networks with exactly the official implementation's state-dict layout.

The official code (junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``) builds its
generator as one ``nn.Sequential`` named ``model``; the parameter names follow from the position of
every layer in it. We build the same sequence so that an official ``latest_net_G_A.pth`` loads without
renaming::

    model.1            7x7 conv 3 -> ngf           (model.0 is the reflection pad)
    model.4, model.7   3x3 stride-2 convs (down)
    model.10 ...       n_blocks ResnetBlocks, each with conv_block.1 and conv_block.5
    then               two 3x3 stride-2 transposed convs (weights [in, out, 3, 3]), a reflection
                       pad and the 7x7 conv ngf -> 3, then tanh

With 9 blocks the last conv is ``model.26``; with 6 it is ``model.23``.

``upsample="resize"`` swaps each transposed conv for a :class:`ResizeConv2d` (x2 nearest-neighbour,
then a reflect-padded 3x3 conv; keys ``model.N.conv.weight``, ``[out, in, 3, 3]``) at the same
position, so every other key is unchanged; ``upsample="bilinear"`` is the same layer resizing
bilinearly (same keys). Stride-2 transposed convolutions with a kernel that the stride does not
divide overlap unevenly and draw a checkerboard at periods 2 and 4 (Odena, Dumoulin and Olah,
"Deconvolution and Checkerboard Artifacts", Distill 2016); resizing first cannot. Nearest resizing
still leaves weaker period-2/4 peaks: at random init the ngf 32 / 6-block generator's outputs score
2.4-4.3x their inputs' peaks with nearest and 0.7-1.7x with bilinear (transpose: 33-124x;
benchmarks/upsample_init_artifacts.py, RESULTS.md). Training can still teach a generator peaks:
on the demo data a nearest run reached 8x by step 750 and a bilinear one 5x by step 2,500.

Students for distillation (``gtacity distill``) are the same ResNet generator at a smaller width or
depth, or :class:`MobileResnetGenerator`, whose residual blocks use depthwise-separable convolutions
(GAN Compression, Li et al. 2020). :data:`ARCHS` maps the ``arch`` name a generator file records to
its class; :func:`build_generator` and :func:`count_macs` take that name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

N_DOWNSAMPLING = 2
# How the decoder doubles the resolution: the paper's transposed conv, or resize-then-convolve
# (nearest: "resize", or bilinear); RESIZE_MODES maps the resize kinds to F.interpolate's mode.
UPSAMPLES = ("transpose", "resize", "bilinear")
RESIZE_MODES = {"resize": "nearest", "bilinear": "bilinear"}
# Spatial sizes must be multiples of this to come out of the generator at the size they went in.
SIZE_MULTIPLE = 2**N_DOWNSAMPLING
# The generator's size limits, the one home every backend and export reads. The smallest side: the
# reflection padding at 1/4 resolution needs 2 pixels there. The largest side and batch bound the
# dynamic shapes of exported graphs (ONNX, OpenVINO IR, TensorRT profiles).
MIN_SIZE = 2 * SIZE_MULTIPLE
MAX_SIDE = 16384
MAX_BATCH = 1024


class InstanceNorm2dFP32(nn.InstanceNorm2d):
    """InstanceNorm2d (affine=False, no running stats) whose statistics are always computed in FP32.

    Under FP16 the per-channel variance of a 1080p feature map overflows and the mean drifts; BF16
    loses too many mantissa bits over a million-pixel reduction. Casting up for the reduction and back
    down afterwards keeps every reduced-precision path (autocast, FP16 ONNX, TensorRT) faithful.
    It has no parameters or buffers, so the state-dict layout is unchanged.

    Eager CUDA is the exception: torch's CUDA normalisation kernels already accumulate fp16 and bf16
    in fp32, so there the cast would only cost two passes over the feature map. On an H200 (ngf 64,
    1024x512, batch 8, fp16) skipping it took eager inference from 56.7 to 46.5 ms a batch with the
    same error to fp32 (``benchmarks/gpu_profile.py``). Traced or compiled code (ONNX, TensorRT,
    ``torch.compile``) always gets the cast, since another runtime runs the graph.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or (
            x.is_cuda and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
        ):
            return F.instance_norm(x, eps=self.eps)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.instance_norm(x.float(), eps=self.eps).to(x.dtype)


class ResnetBlock(nn.Module):
    """Two 3x3 convs with reflection padding and a skip connection (keys conv_block.1 / .5)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            InstanceNorm2dFP32(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            InstanceNorm2dFP32(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator: ``(B, 3, H, W)`` in [-1, 1] -> ``(B, 3, H, W)`` in [-1, 1].

    H and W must be multiples of 4 (:data:`SIZE_MULTIPLE`); the engine reflect-pads other sizes.

    Args:
        ngf: channels after the first conv (64 in the paper; 11.38 M parameters with 9 blocks).
        n_blocks: residual blocks at the bottleneck (9 for 256-px training in the paper, 6 for 128).
        upsample: ``transpose`` (the paper's; official files), or ``resize`` / ``bilinear``
            (:class:`ResizeConv2d`, nearest or bilinear).
    """

    arch = "resnet_generator"

    def __init__(self, ngf: int = 64, n_blocks: int = 9, upsample: str = "transpose"):
        super().__init__()
        self.model = nn.Sequential(*_encoder_decoder(self, ngf, n_blocks, ResnetBlock, upsample=upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class SeparableConv2d(nn.Module):
    """A 3x3 depthwise conv, InstanceNorm, then a 1x1 pointwise conv (GAN Compression's layout).

    About ``9 / dim + 1`` of a dense 3x3 conv's MACs (dim 128: 13x fewer), and as expressive as the
    blocks need to be for a student that only imitates a teacher.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, groups=dim, bias=True),
            InstanceNorm2dFP32(dim),
            nn.Conv2d(dim, dim, kernel_size=1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """:class:`ResnetBlock` with each dense 3x3 conv replaced by a :class:`SeparableConv2d`."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim),
            InstanceNorm2dFP32(dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim),
            InstanceNorm2dFP32(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def residual_blocks(net: nn.Module) -> list[nn.Module]:
    """The bottleneck blocks of a generator of any arch, in order (where distillation taps features)."""
    return [m for m in net.model if isinstance(m, (ResnetBlock, MobileResnetBlock))]


class MobileResnetGenerator(nn.Module):
    """GAN Compression's MobileResnetGenerator: the ResNet generator with separable residual blocks.

    Same stem, down- and up-sampling as :class:`ResnetGenerator` (so the same input/output contract
    and size multiple); only the bottleneck blocks change. ngf 32 with 9 blocks is ~3.1 GMACs at
    256x256, 16x fewer than the paper's generator.

    Args:
        ngf: channels after the first conv.
        n_blocks: separable residual blocks at the bottleneck.
        upsample: one of :data:`UPSAMPLES`, as for :class:`ResnetGenerator`.
    """

    arch = "mobile_resnet_generator"

    def __init__(self, ngf: int = 32, n_blocks: int = 9, upsample: str = "transpose"):
        super().__init__()
        self.model = nn.Sequential(*_encoder_decoder(self, ngf, n_blocks, MobileResnetBlock, upsample=upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LiteMobileResnetGenerator(nn.Module):
    """:class:`MobileResnetGenerator` with its 7x7 stem and output convolutions made separable too
    (a 7x7 depthwise conv, then a 1x1 pointwise one): the same receptive field and contract.

    Why: in a small student the two full-resolution 7x7 convolutions are a third of the MACs and,
    on CPUs, more of the time: OpenVINO's fp32 kernels vectorise over output channels, so the
    3-channel output conv ran at a quarter of the stem's speed (19.7 of 70 ms for ngf 16, 6 blocks
    at 512x284 on an AVX2 EPYC; benchmarks/RESULTS.md). Separable, the same student took 44-47 ms.

    Args:
        ngf: channels after the stem.
        n_blocks: separable residual blocks at the bottleneck.
        upsample: one of :data:`UPSAMPLES`, as for :class:`ResnetGenerator`.
    """

    arch = "lite_mobile_resnet_generator"

    def __init__(self, ngf: int = 16, n_blocks: int = 6, upsample: str = "transpose"):
        super().__init__()
        self.model = nn.Sequential(*_encoder_decoder(self, ngf, n_blocks, MobileResnetBlock,
                                                     separable_ends=True, upsample=upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResizeConv2d(nn.Module):
    """x2 upsampling (``mode`` nearest or bilinear), then a 3x3 conv on the reflect-padded result.

    Nearest (``upsample="resize"``) is Odena et al.'s choice, and each output pixel depends on one
    input pixel; but its 2x2 blocks leave period-2/4 peaks that the conv after it does not remove
    (see the module docstring). Bilinear (``upsample="bilinear"``, ``align_corners=False``: ONNX
    Resize linear with half-pixel coordinates, OpenVINO Interpolate, TensorRT alike; tested against
    torch) interpolates them away (a trained generator can still learn such peaks). Either costs 4x a transposed conv's MACs (it convolves at the
    output size).
    """

    def __init__(self, c_in: int, c_out: int, mode: str = "nearest"):
        super().__init__()
        if mode not in RESIZE_MODES.values():
            raise ValueError(f"unknown resize mode {mode!r}; choose from {', '.join(RESIZE_MODES.values())}")
        self.mode = mode
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An output size, not scale_factor=2: exported, scales become a float initializer of ONNX
        # Resize that the FP16 conversion turns to fp16, which Resize refuses; sizes are int64.
        size = (x.shape[-2] * 2, x.shape[-1] * 2)
        align = None if self.mode == "nearest" else False  # nearest takes no align_corners
        return self.conv(self.pad(F.interpolate(x, size=size, mode=self.mode, align_corners=align)))


def resize_warm_start(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """``state`` of a ``transpose`` generator, made to fit ``net``, the same generator with ``resize``.

    Each transposed conv's weight ``[in, out, 3, 3]`` becomes the resize conv weight ``[out, in, 3, 3]``
    with the kernel flipped: a stride-2 transposed conv is zero insertion then that convolution, and
    nearest x2 is zero insertion then a 2x2 box, so the two differ by that box (a blur and a half-pixel
    shift; the InstanceNorm after each removes the scale). A starting point for fine-tuning, not an
    equivalent: the demo gta2city generator warm-started this way is 13 dB from the original on a
    real frame. Every other tensor is passed through.
    """
    resize_layers = {f"model.{i}" for i, layer in enumerate(net.model) if isinstance(layer, ResizeConv2d)}
    out = {}
    for key, value in state.items():
        prefix, _, kind = key.rpartition(".")
        if prefix in resize_layers and kind == "weight":
            out[f"{prefix}.conv.weight"] = value.transpose(0, 1).flip(2, 3).contiguous()
        else:
            out[f"{prefix}.conv.bias" if prefix in resize_layers else key] = value
    return out


def _upsampler(c_in: int, c_out: int, upsample: str) -> nn.Module:
    """One x2 decoder step's convolution: the paper's transposed conv or :class:`ResizeConv2d`."""
    if upsample in RESIZE_MODES:
        return ResizeConv2d(c_in, c_out, RESIZE_MODES[upsample])
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True)


def _end_conv(c_in: int, c_out: int, separable: bool) -> list[nn.Module]:
    """The 7x7 stem or output conv (input reflect-padded by 3): dense, or depthwise + pointwise."""
    if not separable:
        return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, kernel_size=7, padding=0, bias=True)]
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_in, kernel_size=7, groups=c_in, bias=True),
            nn.Conv2d(c_in, c_out, kernel_size=1, bias=True)]


def _encoder_decoder(net: nn.Module, ngf: int, n_blocks: int, block: type[nn.Module],
                     separable_ends: bool = False, upsample: str = "transpose") -> list[nn.Module]:
    """The official generator's layer sequence with ``block`` at the bottleneck; sets net.ngf,
    net.n_blocks and net.upsample."""
    if ngf < 1 or n_blocks < 1:
        raise ValueError(f"ngf and n_blocks must be positive, got ngf={ngf}, n_blocks={n_blocks}")
    if upsample not in UPSAMPLES:
        raise ValueError(f"unknown upsample {upsample!r}; choose from {', '.join(UPSAMPLES)}")
    net.ngf, net.n_blocks, net.upsample = ngf, n_blocks, upsample
    layers: list[nn.Module] = [
        *_end_conv(3, ngf, separable_ends),
        InstanceNorm2dFP32(ngf),
        nn.ReLU(True),
    ]
    for i in range(N_DOWNSAMPLING):
        ch = ngf * 2**i
        layers += [
            nn.Conv2d(ch, ch * 2, kernel_size=3, stride=2, padding=1, bias=True),
            InstanceNorm2dFP32(ch * 2),
            nn.ReLU(True),
        ]
    layers += [block(ngf * 2**N_DOWNSAMPLING) for _ in range(n_blocks)]
    for i in range(N_DOWNSAMPLING):
        ch = ngf * 2 ** (N_DOWNSAMPLING - i)
        layers += [
            _upsampler(ch, ch // 2, upsample),
            InstanceNorm2dFP32(ch // 2),
            nn.ReLU(True),
        ]
    layers += [*_end_conv(ngf, 3, separable_ends), nn.Tanh()]
    return layers


ARCHS: dict[str, type[nn.Module]] = {
    cls.arch: cls for cls in (ResnetGenerator, MobileResnetGenerator, LiteMobileResnetGenerator)
}


def build_generator(arch: str, ngf: int, n_blocks: int, upsample: str = "transpose") -> nn.Module:
    """A freshly initialised-by-torch generator of ``arch`` (a key of :data:`ARCHS`) whose decoder
    upsamples the ``upsample`` way (one of :data:`UPSAMPLES`).

    Raises:
        ValueError: an unknown arch or upsample, or non-positive sizes.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](ngf, n_blocks, upsample=upsample)


class Blur(nn.Module):
    """A fixed binomial low-pass, ``[1, 2, 1] x [1, 2, 1] / 16`` per channel, reflect-padded (same size).

    Zero response at 1/2 cycle per pixel and 1/4 of the peak at ``(1/4, 1/4)``: what a stride-2 conv
    after it sees of a period-2 grid is nothing, and of a period-4 one little (Zhang, "Making
    Convolutional Networks Shift-Invariant Again", ICML 2019). No parameters, nothing in a state dict.
    """

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return nn.functional.conv2d(x, self.kernel.to(x.dtype), groups=self.kernel.shape[0])


D_ANTIALIAS = ("off", "blur", "blurpool")


class BlurPool(nn.Module):
    """:class:`Blur`, then keep every other row and column: the subsampling half of a stride-2 conv
    whose convolution ran densely before it (Zhang's ConvBlurPool)."""

    def __init__(self, channels: int):
        super().__init__()
        self.blur = Blur(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(x)[..., ::2, ::2]


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN (official ``NLayerDiscriminator`` with n_layers=3, InstanceNorm).

    ``(B, 3, H, W)`` -> ``(B, 1, H/8 - 2, W/8 - 2)`` real/fake scores, one per 70x70 receptive field.
    ``in_channels=6`` makes pix2pix's conditional discriminator, which judges (input, output) pairs.

    ``antialias`` (not in the paper; ``train --d-antialias``): a stride-2 conv folds a period-2 pattern
    onto a constant, which hands a generator a cheap lever on every score, and a generator trained
    against it learns a grid.

    - ``"off"``: the paper's.
    - ``"blur"``: a :class:`Blur` before each stride-2 conv. Linear all the way to the conv, so a grid
      moves no score; neither does any other detail finer than the blur, and generators trained
      against it were measured to come out soft (half the fine-detail energy of real frames).
    - ``"blurpool"``: each stride-2 conv runs densely (stride 1, the same taps), then its norm and
      LeakyReLU, then a :class:`BlurPool` (Zhang, ICML 2019). The rectifier turns fine detail into
      energy the blurred, subsampled features still carry, so texture counts, wherever it falls; what
      is gone is the phase: a grid is worth no more to a generator than as much natural texture. About
      2x the plain discriminator's multiply-adds.

    The kinds keep the same tensors under other indices, so one never loads into another.
    """

    def __init__(self, ndf: int = 64, n_layers: int = 3, in_channels: int = 3, antialias: str = "off"):
        super().__init__()
        if antialias not in D_ANTIALIAS:
            raise ValueError(f"unknown discriminator antialias {antialias!r}; known: {', '.join(D_ANTIALIAS)}")

        def down(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
            after = [InstanceNorm2dFP32(c_out)] if norm else []
            after.append(nn.LeakyReLU(0.2, True))
            if antialias == "blurpool":  # the same taps as stride 2 with padding 1, at every position
                return [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(c_in, c_out, kernel_size=4, stride=1), *after,
                        BlurPool(c_out)]
            conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
            return [*([Blur(c_in)] if antialias == "blur" else []), conv, *after]

        layers: list[nn.Module] = down(in_channels, ndf, norm=False)
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            if n < n_layers:
                layers += down(ndf * prev, ndf * mult, norm=True)
            else:
                layers += [
                    nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=True),
                    InstanceNorm2dFP32(ndf * mult),
                    nn.LeakyReLU(0.2, True),
                ]
        layers += [nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The paper's initialisation: conv weights ~ N(0, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def count_macs(ngf: int, n_blocks: int, height: int, width: int, arch: str = "resnet_generator",
               upsample: str = "transpose") -> int:
    """Multiply-accumulates of one generator forward at ``height x width`` (convs only).

    Equal to ``torch.utils.flop_counter.FlopCounterMode``'s count / 2 for every arch of :data:`ARCHS`
    and both :data:`UPSAMPLES` (tested): ngf 64, 9 blocks, 256x256 -> 49.55 G.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r}; known: {', '.join(ARCHS)}")
    # The 7x7 stem and output convs: dense c_in*c_out*49, or depthwise c_in*49 plus pointwise c_in*c_out.
    def end_conv(c_in: int, c_out: int) -> int:
        return c_in * 49 + c_in * c_out if arch == "lite_mobile_resnet_generator" else c_in * c_out * 49

    macs = 0
    h, w = height, width
    macs += h * w * end_conv(3, ngf)
    ch = ngf
    for _ in range(N_DOWNSAMPLING):
        h, w = h // 2, w // 2
        macs += h * w * ch * 2 * ch * 9
        ch *= 2
    # Per 3x3 conv of a block: dense ch*ch*9, or depthwise ch*9 plus pointwise ch*ch.
    per_conv = ch * ch * 9 if arch == "resnet_generator" else ch * 9 + ch * ch
    macs += n_blocks * 2 * h * w * per_conv
    for _ in range(N_DOWNSAMPLING):
        # A transposed conv does in*out*9 MACs per *input* pixel; a resize conv per output pixel.
        macs += h * w * ch * (ch // 2) * 9 * (1 if upsample == "transpose" else 4)
        h, w, ch = h * 2, w * 2, ch // 2
    macs += h * w * end_conv(ch, 3)
    return macs
