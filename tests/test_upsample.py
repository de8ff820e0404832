"""The generators' upsampling choice: ``transpose`` (the paper's), ``resize`` (x2 nearest, then a
3x3 conv) or ``bilinear`` (x2 bilinear, then a 3x3 conv). Files, every CPU backend, ONNX and FP16
ONNX, tiling, MACs, ``train`` and ``distill``.

Measured on the tiny resize generator (ngf 8, 2 blocks, seeded), random inputs in [-1, 1]: OpenVINO
fp32 vs torch max abs ~1e-6; ONNX fp32 ~1e-6; FP16 ONNX max ~2e-3, mean ~3e-4 (as transpose).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from media import make_image
from safetensors import safe_open
from safetensors.torch import save_file
from test_trainer import make_domains
from torch.utils.flop_counter import FlopCounterMode

from gtacity.checkpoint import CheckpointError, GeneratorInfo, load_generator, read_generator_file, save_generator
from gtacity.cli import cli
from gtacity.engine.backends import create_backend
from gtacity.engine.backends.tiling import TiledBackend, Tiling
from gtacity.engine.exporters.onnx import INPUT_NAME, OUTPUT_NAME, to_fp16, to_onnx
from gtacity.cli_learn import UPSAMPLE_CHOICES
from gtacity.nets import (
    ARCHS,
    RESIZE_MODES,
    UPSAMPLES,
    ResizeConv2d,
    build_generator,
    count_macs,
    init_weights,
    resize_warm_start,
)
from gtacity.trainer.data import DataError, Preprocess
from gtacity.trainer.distill import DistillConfig, distill
from gtacity.trainer.distill_step import DistillLosses
from gtacity.trainer.loop import TrainConfig, train


def generator(upsample: str = "resize", arch: str = "resnet_generator", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return init_weights(build_generator(arch, 8, 2, upsample)).eval()


def frames(n: int, height: int, width: int, seed: int = 1, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def eager(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_each_choice_round_trips_a_file(tmp_path, arch, upsample):
    net = generator(upsample, arch)
    path = save_generator(net, tmp_path / "g.safetensors", direction="gta2city")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["upsample"] == upsample
    loaded, info = load_generator(path)
    assert (info.arch, info.upsample, loaded.upsample) == (arch, upsample, upsample)
    x = frames(1, 32, 48)
    assert torch.equal(eager(loaded, x), eager(net, x))


def test_a_file_without_the_key_means_transpose(tmp_path):
    """Every file written before the choice existed (the bundled pair included) loads as before."""
    path = save_generator(generator("transpose"), tmp_path / "old.safetensors", direction="gta2city")
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    del meta["upsample"]
    save_file(state, str(path), metadata=meta)
    assert load_generator(path)[1].upsample == "transpose"
    resize = save_generator(generator("resize"), tmp_path / "r.safetensors", direction="gta2city")
    with safe_open(str(resize), framework="pt") as f:
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(resize), metadata=meta)
    with pytest.raises(CheckpointError, match=r"does not fit .* \(transpose upsampling\): missing"):
        load_generator(resize)


def test_unknown_choice_is_refused_in_files_and_builders(tmp_path):
    path = save_generator(generator("resize"), tmp_path / "g.safetensors", direction="gta2city")
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(path), metadata={**meta, "upsample": "pixelshuffle"})
    with pytest.raises(CheckpointError, match="upsample=pixelshuffle .* upgrade gtacity"):
        read_generator_file(path)
    with pytest.raises(ValueError, match="unknown upsample 'bicubic'"):
        build_generator("resnet_generator", 8, 2, "bicubic")
    with pytest.raises(ValueError, match="unknown resize mode 'bicubic'"):
        ResizeConv2d(8, 4, "bicubic")


def test_a_state_dict_without_metadata_tells_its_upsampling_by_its_keys(tmp_path):
    net = generator("resize")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    loaded, info = load_generator(tmp_path / "plain.safetensors")
    assert info.upsample == "resize" and info.source_format == "safetensors"
    assert torch.equal(eager(loaded, frames(1, 32, 32)), eager(net, frames(1, 32, 32)))


def test_the_cli_offers_exactly_the_upsampling_choices_the_networks_have():
    assert UPSAMPLE_CHOICES == UPSAMPLES
    assert set(RESIZE_MODES) == set(UPSAMPLES) - {"transpose"}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_mac_count_equals_torch_flop_counter_for_resize(arch):
    with torch.device("meta"):
        net = build_generator(arch, 16, 3, "resize").eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, 32, 96))
    assert count_macs(16, 3, 32, 96, arch=arch, upsample="resize") * 2 == counter.get_total_flops()
    assert count_macs(16, 3, 32, 96, arch=arch, upsample="resize") > count_macs(16, 3, 32, 96, arch=arch)


def test_resize_decoder_draws_no_checkerboard_on_a_flat_feature_map():
    """A flat map stays flat through resize-then-convolve; a stride-2 transposed conv overlaps
    unevenly and writes a period-2 pattern over it (Odena et al. 2016), whatever its weights."""
    flat = torch.full((1, 32, 16, 16), 0.7)
    for upsample in UPSAMPLES:
        net = generator(upsample)
        up = next(m for m in net.model if isinstance(m, (ResizeConv2d, torch.nn.ConvTranspose2d)))
        out = eager(up, flat)[..., 2:-2, 2:-2]  # away from the border
        assert out.shape[-1] == 28
        checker = (out[..., ::2, ::2] - out[..., 1::2, 1::2]).abs().mean().item()
        assert (checker > 1e-3) == (upsample == "transpose"), (upsample, checker)
        assert (out - out[..., :1, :1]).abs().max() < 1e-5 or upsample == "transpose"


@pytest.mark.parametrize("upsample", list(RESIZE_MODES))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_resize_generator_runs_alike_on_torch_and_openvino(tmp_path, arch, upsample):
    """The OpenVINO backend converts a copy with its InstanceNorms rewritten for MVN fusion; the
    resize layer (nearest or bilinear) passes through that rewrite and the conversion untouched."""
    net, _ = load_generator(save_generator(generator(upsample, arch), tmp_path / "g.safetensors",
                                           direction="gta2city"))
    outs = []
    for name in ("torch", "openvino"):
        backend = create_backend(name, net, precision="fp32", device="cpu")
        backend.prepare(2, 32, 48)
        outs.append(backend.infer(frames(2, 32, 48)))
    assert torch.equal(outs[0], eager(net, frames(2, 32, 48)))
    assert (outs[0] - outs[1]).abs().max() < 1e-4


def test_nearest_and_bilinear_generators_with_equal_weights_have_their_own_cache_entries(tmp_path):
    """Their tensors are the same; the conversion caches (OpenVINO IR, int8, TensorRT) must not
    hand one the other's model. Found by the torch-vs-openvino test above, which got the nearest
    model for the bilinear generator from the cache."""
    from gtacity.engine.exporters.cache import weights_checksum
    from gtacity.engine.exporters.openvino import model_key

    nearest, bilinear = generator("resize"), generator("bilinear")
    assert all(torch.equal(a, b) for a, b in zip(nearest.state_dict().values(), bilinear.state_dict().values(),
                                                 strict=True))
    assert model_key(nearest) != model_key(bilinear) and weights_checksum(nearest) != weights_checksum(bilinear)
    x = frames(1, 32, 48)
    for net in (nearest, bilinear):  # one cache folder for both, as a user's
        backend = create_backend("openvino", net, precision="fp32", device="cpu", cache_dir=str(tmp_path))
        backend.prepare(1, 32, 48)
        assert (backend.infer(x) - eager(net, x)).abs().max() < 1e-4


def test_openvino_still_fuses_every_norm_of_a_resize_generator():
    import openvino as ov

    from gtacity.engine.exporters.openvino import to_openvino

    net = generator("resize")
    model = to_openvino(net)
    model.reshape([1, 3, 32, 32])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    assert layers.count("MVN") == sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
    assert layers.count("Interpolate") == 2 and "Deconvolution" not in layers


def _onnxruntime(model, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


@pytest.mark.parametrize("upsample", UPSAMPLES)
def test_onnx_and_fp16_onnx_export_both_choices(upsample):
    net = generator(upsample)
    model = to_onnx(net, GeneratorInfo(8, 2, "gta2city", upsample=upsample))
    ops = {node.op_type for node in model.graph.node}
    assert ("Resize" in ops, "ConvTranspose" in ops) == (upsample != "transpose", upsample == "transpose")
    for x in (frames(2, 32, 48), frames(1, 64, 96)):
        assert (_onnxruntime(model, x) - eager(net, x)).abs().max() <= 1e-4
    half = to_fp16(model)
    onnx.checker.check_model(half)
    x = frames(2, 64, 96)
    diff = (_onnxruntime(half, x) - eager(net, x)).abs()
    assert 1e-5 < diff.max().item() <= 0.01 and diff.mean().item() <= 0.001


def test_tiled_resize_translation_matches_untiled():
    """Frames no larger than a tile go through whole, bit for bit. Larger ones cannot equal the
    untiled output exactly with any generator (InstanceNorm gives each tile its own statistics;
    engine/tiles.py), so: the resize generator's tiles stray from the whole frame no more than the
    transpose generator's do, for the same seeds, on the same frames."""
    def tiled(net):
        backend = TiledBackend(create_backend("torch", net, precision="fp32", device="cpu"),
                               Tiling(tile=64, overlap=16))
        backend.prepare(1, 96, 160)
        return backend

    small = frames(1, 48, 64)
    net = generator("resize")
    backend = tiled(net)
    backend.prepare(1, 48, 64)
    assert torch.equal(backend.infer(small), eager(net, small))
    x = frames(1, 96, 160)
    stray = {}
    for upsample in UPSAMPLES:
        diffs = []
        for seed in range(3):
            net = generator(upsample, seed=seed)
            out = tiled(net).infer(x)
            assert out.shape == x.shape and torch.isfinite(out).all()
            diffs.append((out - eager(net, x)).abs().mean().item())
        stray[upsample] = float(np.mean(diffs))
    for kind in RESIZE_MODES:  # measured: resize 0.051, transpose 0.042
        assert stray[kind] < 1.5 * stray["transpose"] and stray[kind] < 0.1, stray


def test_train_upsample_resize_with_multi_scale_crops_writes_resize_generators(tmp_path):
    gta, city = make_domains(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", "--gta", str(gta), "--city", str(city), "--out", str(out), "--ngf", "8", "--n-blocks", "2",
            "--ndf", "8", "--upsample", "resize", "--preprocess", "scale_width_and_crop", "--load-size", "40",
            "--load-size-max", "64", "--crop-size", "32", "--epochs", "1", "--epochs-decay", "0",
            "--workers", "0", "--amp", "off", "--no-progress", "--stop-after", "3",
            "--d-antialias", "blurpool", "--lambda-grid", "1"]  # the demo's recipe against the learnt grid
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0 and "stopped at step 3" in first.output, first.output
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(out), "--workers", "0", "--no-progress"])
    assert resumed.exit_code == 0 and "done: 8 steps" in resumed.output, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert config["upsample"] == "resize" and config["preprocess"]["load_size_max"] == 64
    assert config["step"]["d_antialias"] == "blurpool" and config["step"]["lambda_grid"] == 1
    for direction in ("gta2city", "city2gta"):
        net, info = load_generator(out / f"{direction}.safetensors", direction=direction)
        assert info.upsample == net.upsample == "resize"


def test_multi_scale_crops_draw_load_sizes_across_the_range():
    """A horizontal ramp of 256 levels over 256 px: a crop's slope tells the width it was scaled to."""
    ramp = np.repeat(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (1, 1, 3)), 128, axis=0)

    def load_sizes(pre: Preprocess, draws: int = 40) -> list[float]:
        rng = np.random.default_rng(0)
        crops = [pre(ramp, rng).astype(float) for _ in range(draws)]
        return [256 * 31 / (c[0, -1, 0] - c[0, 0, 0]) for c in crops]

    fixed = load_sizes(Preprocess("scale_width_and_crop", 128, 32, flip=False))
    assert max(fixed) - min(fixed) < 3
    varied = load_sizes(Preprocess("scale_width_and_crop", 96, 32, flip=False, load_size_max=224))
    assert 90 < min(varied) < 120 and 200 < max(varied) < 235
    first = Preprocess("resize_and_crop", 40, 32, load_size_max=64)
    assert np.array_equal(first(ramp, np.random.default_rng(5)), first(ramp, np.random.default_rng(5)))
    with pytest.raises(DataError, match="--load-size-max must be at least --load-size"):
        Preprocess("scale_width_and_crop", 96, 32, load_size_max=64)


def test_student_with_resize_distils(tmp_path):
    """A resize teacher gives a resize student by default (or the other kind on request); the
    student comes closer to the teacher as it trains."""
    teacher = str(save_generator(generator("resize", seed=3), tmp_path / "t.safetensors", direction="city2gta"))
    for i in range(6):
        make_image(tmp_path / "city" / f"f{i}.png", size=(48, 40), seed=i)
    cfg = DistillConfig(out=str(tmp_path / "run"), teacher=teacher, images=(str(tmp_path / "city"),), ngf=4,
                        n_blocks=2, preprocess=Preprocess("crop", 32, 32), steps=60, workers=0, log_every=1,
                        sample_every=1000, checkpoint_every=1000, amp="off",
                        losses=DistillLosses(lr=2e-3, lambda_gan=0))
    student = distill(cfg, progress_bar=False)
    assert load_generator(student)[1].upsample == "resize"
    l1 = [json.loads(line)["l1"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
          if "l1" in line]
    assert np.mean(l1[-10:]) < 0.9 * np.mean(l1[:10]), (l1[:10], l1[-10:])  # measured 1.92 -> 1.62
    other = distill(DistillConfig(**{**cfg.__dict__, "out": str(tmp_path / "t"), "steps": 1, "upsample": "transpose"}),
                    progress_bar=False)
    assert load_generator(other)[1].upsample == "transpose"


def test_resize_warm_start_is_the_transposed_conv_as_zero_insertion_then_convolution():
    """The converted kernel, run on the zero-inserted input, gives the transposed conv's output
    exactly; (the resize conv runs it on the nearest-upsampled input instead)."""
    old = generator("transpose")
    new = build_generator("resnet_generator", 8, 2, "resize")
    state = resize_warm_start(old.state_dict(), new)
    new.load_state_dict(state)  # every key fits
    i = next(i for i, layer in enumerate(new.model) if isinstance(layer, ResizeConv2d))
    x = frames(1, 6, 5, channels=32)
    inserted = torch.zeros(1, 32, 12, 10)
    inserted[..., ::2, ::2] = x
    via_conv = torch.nn.functional.conv2d(torch.nn.functional.pad(inserted, (1, 1, 1, 1)),
                                          state[f"model.{i}.conv.weight"], state[f"model.{i}.conv.bias"])
    assert torch.allclose(via_conv, eager(old.model[i], x), atol=1e-6)
    resize_layers = [f"model.{j}." for j, layer in enumerate(new.model) if isinstance(layer, ResizeConv2d)]
    untouched = [k for k in old.state_dict() if not k.startswith(tuple(resize_layers))]
    assert untouched and all(torch.equal(state[k], old.state_dict()[k]) for k in untouched)


def test_a_resize_run_starts_from_a_folder_of_transpose_generators(tmp_path):
    folder = tmp_path / "pair"
    pair = {d: generator("transpose", seed=s) for s, d in enumerate(("gta2city", "city2gta"))}
    for direction, net in pair.items():
        save_generator(net, folder / f"{direction}.safetensors", direction=direction)
    gta, city = make_domains(tmp_path / "data")
    cfg = TrainConfig(out=str(tmp_path / "run"), gta=(str(gta),), city=(str(city),), ngf=8, n_blocks=2, ndf=8,
                      upsample="resize", preprocess=Preprocess("crop", 48, 32), epochs=1, epochs_decay=0,
                      workers=0, amp="off", init_from=str(folder))
    model = train(cfg, progress_bar=False, stop_after=0).model
    for direction, net in pair.items():
        expected = resize_warm_start(net.state_dict(), getattr(model, f"G_{direction}"))
        got = getattr(model, f"G_{direction}").state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("upsample", list(RESIZE_MODES))
def test_resize_generator_quantises_to_int8_on_openvino(upsample):
    """int8 (NNCF post-training quantisation) handles the resize layer: calibrated, checked, close."""
    from gtacity import hardware

    if hardware.emulation_reason(hardware.cpu_capabilities(), "int8"):
        pytest.skip("OpenVINO runs no int8 on this CPU")
    net = generator(upsample)
    smooth = [torch.nn.functional.interpolate(frames(1, 6, 6, seed=s), size=(48, 48), mode="bilinear")
              for s in range(6)]
    backend = create_backend("openvino", net, precision="int8", device="cpu")
    backend.calibrate(smooth)
    assert 30 <= backend.int8_check.worst_db
    backend.prepare(1, 48, 48)
    x = torch.nn.functional.interpolate(frames(1, 6, 6, seed=9), size=(48, 48), mode="bilinear")
    y, expected = backend.infer(x), eager(net, x)
    assert backend.precision == "int8" and y.shape == x.shape
    assert 28 < 10 * torch.log10(4 / (y - expected).pow(2).mean()).item() < 80
