"""Networks and generator files: official layout, our format, and every way a file can be wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gtacity.checkpoint import CheckpointError, load_generator, read_generator_file, save_generator
from gtacity.nets import PatchDiscriminator, ResnetGenerator, count_macs, init_weights


def official_reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor, n_blocks: int):
    """The official ResnetGenerator written out by hand from its state dict (no nn.Modules)."""

    def inorm_relu(t, relu=True):
        t = F.instance_norm(t, eps=1e-5)
        return F.relu(t) if relu else t

    def conv(t, idx, stride=1, padding=0):
        return F.conv2d(t, state[f"{idx}.weight"], state[f"{idx}.bias"], stride=stride, padding=padding)

    t = inorm_relu(conv(F.pad(x, (3, 3, 3, 3), mode="reflect"), "model.1"))
    t = inorm_relu(conv(t, "model.4", stride=2, padding=1))
    t = inorm_relu(conv(t, "model.7", stride=2, padding=1))
    for b in range(n_blocks):
        p = f"model.{10 + b}.conv_block"
        y = inorm_relu(conv(F.pad(t, (1, 1, 1, 1), mode="reflect"), f"{p}.1"))
        y = inorm_relu(conv(F.pad(y, (1, 1, 1, 1), mode="reflect"), f"{p}.5"), relu=False)
        t = t + y
    for idx in (10 + n_blocks, 13 + n_blocks):
        w, bias = state[f"model.{idx}.weight"], state[f"model.{idx}.bias"]
        t = inorm_relu(F.conv_transpose2d(t, w, bias, stride=2, padding=1, output_padding=1))
    t = conv(F.pad(t, (3, 3, 3, 3), mode="reflect"), f"model.{17 + n_blocks}")
    return torch.tanh(t)


def official_state_dict(ngf: int, n_blocks: int, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return init_weights(ResnetGenerator(ngf, n_blocks)).state_dict()


def test_official_layout_keys_and_shapes():
    keys = ResnetGenerator(64, 9).state_dict()
    assert "model.1.weight" in keys and "model.26.bias" in keys
    assert "model.10.conv_block.1.weight" in keys and "model.10.conv_block.5.bias" in keys
    assert tuple(keys["model.19.weight"].shape) == (256, 128, 3, 3)  # ConvTranspose: [in, out, k, k]
    assert sum(v.numel() for v in keys.values()) == 11_378_179
    assert "model.23.bias" in ResnetGenerator(64, 6).state_dict()


def test_macs_match_torch_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    net = ResnetGenerator(16, 3)
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 64, 96))
    assert count_macs(16, 3, 64, 96) == counter.get_total_flops() // 2


def test_official_pth_loads_and_matches_reference_forward(tmp_path):
    state = official_state_dict(8, 3)
    # Old PyTorch wrote InstanceNorm running stats into official checkpoints; they must be ignored.
    stray = dict(state, **{"model.2.running_mean": torch.zeros(8), "model.2.running_var": torch.ones(8)})
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(stray, path)
    net, info = load_generator(path, direction="gta2city")
    assert (info.ngf, info.n_blocks, info.direction) == (8, 3, "gta2city")
    x = torch.rand(2, 3, 36, 52) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), official_reference_forward(state, x, 3), atol=1e-5, rtol=0)


def test_our_file_round_trip_and_fp16_storage(tmp_path, tiny_generator):
    path = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="city2gta",
                          trained_resolution=128, dtype=torch.float16)
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]  # nothing partial beside it
    net, info = load_generator(path)
    assert (info.ngf, info.n_blocks, info.direction, info.trained_resolution) == (8, 2, "city2gta", 128)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(net(x), tiny_generator(x), atol=5e-3, rtol=0)
    assert next(net.parameters()).dtype == torch.float32


def test_direction_mismatch_is_refused(tmp_path, tiny_generator):
    path = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    with pytest.raises(CheckpointError, match="translates gta2city, not city2gta"):
        load_generator(path, direction="city2gta")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "is not a PyTorch file"),
        (lambda p: torch.save(PatchDiscriminator(8).state_dict(), p), "looks like a discriminator"),
        (lambda p: torch.save(PatchDiscriminator(8, antialias="blur").state_dict(), p), "looks like a discriminator"),
        (lambda p: torch.save(PatchDiscriminator(8, antialias="blurpool").state_dict(), p),
         "looks like a discriminator"),
        (lambda p: torch.save([1, 2, 3], p), "not a state dict of tensors"),
        (
            lambda p: torch.save(
                {k: v for k, v in official_state_dict(8, 2).items() if k != "model.19.bias"}, p
            ),
            "missing 1 tensors",
        ),
    ],
    ids=["garbage", "discriminator", "blur-discriminator", "blurpool-discriminator", "list", "missing-tensor"],
)
def test_bad_pth_files_name_the_file_and_problem(tmp_path, make, message):
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as err:
        read_generator_file(path)
    assert str(path) in str(err.value)


def test_truncated_and_missing_files(tmp_path, tiny_generator):
    good = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.safetensors: not a readable safetensors file"):
        read_generator_file(cut)
    with pytest.raises(CheckpointError, match="no such weights file"):
        read_generator_file(tmp_path / "nope.pth")
    torch.save(official_state_dict(8, 2), tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="cut.pth: is a damaged zip archive"):
        read_generator_file(tmp_path / "cut.pth")


def test_instance_norm_stays_fp32_under_autocast():
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(8, 2)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05


def test_bundled_generators_load_by_name_everywhere(tmp_path):
    from click.testing import CliRunner
    from media import make_image

    from gtacity.checkpoint import bundled_generators
    from gtacity.cli import cli

    assert set(bundled_generators()) == {"gta2city_demo", "city2gta_demo", "gta2city_demo_fast", "city2gta_demo_fast"}
    for direction in ("gta2city", "city2gta"):
        _teacher, t = load_generator(f"{direction}_demo")
        student, info = load_generator(f"{direction}_demo_fast")
        assert (t.arch, t.ngf, t.n_blocks, t.upsample, t.direction) == ("resnet_generator", 32, 6, "bilinear", direction)
        assert (info.arch, info.ngf, info.n_blocks, info.upsample, info.direction) == (
            "lite_mobile_resnet_generator", 16, 6, "bilinear", direction)
        teacher_macs = count_macs(t.ngf, t.n_blocks, 256, 256, upsample=t.upsample)
        assert teacher_macs / count_macs(16, 6, 256, 256, arch=info.arch, upsample=info.upsample) > 10
    make_image(tmp_path / "a.png", size=(64, 48), seed=1)
    outs = {}
    for name, weights in (("by_name", "gta2city_demo_fast"), ("by_path", str(bundled_generators()["gta2city_demo_fast"]))):
        result = CliRunner().invoke(cli, ["translate", str(tmp_path / "a.png"), "-o", str(tmp_path / f"{name}.png"),
                                          "--weights", weights, "--backend", "torch", "-q"])
        assert result.exit_code == 0, result.output
        outs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert outs["by_name"] == outs["by_path"]
    missing = CliRunner().invoke(cli, ["translate", str(tmp_path / "a.png"), "-o", str(tmp_path / "c.png"),
                                       "--weights", "gta2city_demo_tiny"])
    assert missing.exit_code == 1 and not (tmp_path / "c.png").exists()
    assert missing.output.strip().splitlines() == [
        "error: gta2city_demo_tiny: no such weights file (or bundled generator: city2gta_demo, city2gta_demo_fast, "
        "gta2city_demo, gta2city_demo_fast)"]
