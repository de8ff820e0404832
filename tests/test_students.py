"""Student generators (gtacity distill): MACs, generator files, every backend, translate and bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_image_tree
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from gtacity.checkpoint import CheckpointError, load_generator, read_generator_file, save_generator
from gtacity.cli import cli
from gtacity.engine.backends import create_backend
from gtacity.nets import ARCHS, MobileResnetGenerator, build_generator, count_macs, init_weights

SIZES = [(8, 2, 64, 64), (16, 3, 32, 96), (64, 9, 256, 256)]


@pytest.fixture
def mobile() -> MobileResnetGenerator:
    torch.manual_seed(0)
    return init_weights(MobileResnetGenerator(ngf=8, n_blocks=2)).eval()


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("ngf,n_blocks,height,width", SIZES)
def test_mac_count_equals_torch_flop_counter(arch, ngf, n_blocks, height, width):
    with torch.device("meta"):  # shapes only: counts without computing
        net = build_generator(arch, ngf, n_blocks).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, 3, height, width))
    assert count_macs(ngf, n_blocks, height, width, arch=arch) * 2 == counter.get_total_flops()


def test_mobile_student_is_ten_times_cheaper_than_the_paper_generator():
    teacher = count_macs(64, 9, 256, 256)
    assert teacher / count_macs(32, 9, 256, 256, arch="mobile_resnet_generator") > 15
    assert teacher / count_macs(16, 9, 256, 256) > 14  # the narrow ResNet student


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_round_trips_a_file_and_runs_alike_on_torch_and_openvino(tmp_path, arch):
    torch.manual_seed(0)
    net = init_weights(build_generator(arch, 8, 2)).eval()
    loaded, info = load_generator(save_generator(net, tmp_path / "g.safetensors", direction="gta2city"))
    assert (type(loaded), info.arch) == (type(net), arch)
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    outs = []
    for name in ("torch", "openvino"):
        backend = create_backend(name, loaded, precision="fp32", device="cpu")
        backend.prepare(1, 32, 48)
        outs.append(backend.infer(x))
    with torch.no_grad():
        assert torch.equal(outs[0], net(x))
    assert (outs[0] - outs[1]).abs().max() < 1e-4


def test_lite_student_is_cheaper_than_mobile_at_the_same_width():
    lite = count_macs(16, 6, 256, 256, arch="lite_mobile_resnet_generator")
    assert count_macs(32, 6, 256, 256) / lite > 15  # vs the demo teacher; mobile 16/6 is 10.8x
    assert lite < count_macs(16, 6, 256, 256, arch="mobile_resnet_generator") * 0.75  # 0.60 vs 0.84 GMAC


def test_unknown_arch_is_refused():
    with pytest.raises(ValueError, match="unknown generator arch 'unet'"):
        build_generator("unet", 8, 2)


def test_student_file_records_its_arch_and_loads_back_identically(tmp_path, mobile):
    path = save_generator(mobile, tmp_path / "s.safetensors", direction="city2gta", trained_resolution=64)
    _, info = read_generator_file(path)
    assert (info.arch, info.ngf, info.n_blocks, info.direction) == ("mobile_resnet_generator", 8, 2, "city2gta")
    net, _ = load_generator(path)
    assert isinstance(net, MobileResnetGenerator)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), mobile(x))


def test_file_with_an_arch_this_version_does_not_know_says_so(tmp_path, mobile):
    meta = {"format": "gtacity-generator", "format_version": "1", "arch": "unet_generator",
            "ngf": "8", "n_blocks": "2", "direction": "gta2city"}
    save_file({k: v.contiguous() for k, v in mobile.state_dict().items()}, str(tmp_path / "u.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=r"u.safetensors: unsupported generator arch=unet_generator"):
        load_generator(tmp_path / "u.safetensors")


def test_tensors_of_another_arch_are_refused_with_the_arch_named(tmp_path, mobile, tiny_generator):
    save_generator(mobile, tmp_path / "s.safetensors", direction="gta2city")
    state, _ = read_generator_file(tmp_path / "s.safetensors")
    meta = {"format": "gtacity-generator", "format_version": "1", "arch": "resnet_generator",
            "ngf": "8", "n_blocks": "2", "direction": "gta2city"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "lie.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="does not fit a ngf=8, 2-block resnet_generator"):
        load_generator(tmp_path / "lie.safetensors")


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_mobile_student_runs_in_every_backend_like_eager_torch(tmp_path, mobile, backend):
    """openvino converts through torch.export: this is the export test of the separable blocks."""
    path = save_generator(mobile, tmp_path / "s.safetensors", direction="gta2city")
    net, _ = load_generator(path)
    runner = create_backend(backend, net, precision="fp32", device="cpu")
    runner.prepare(max_batch=2, height=64, width=96)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        expected = mobile(x)
    assert (runner.infer(x) - expected).abs().max() < 1e-4


def test_mobile_student_exports_with_dynamic_sizes(mobile):
    dims = {0: torch.export.Dim("batch", min=1, max=8), 2: 4 * torch.export.Dim("h", min=2, max=64),
            3: 4 * torch.export.Dim("w", min=2, max=64)}
    exported = torch.export.export(mobile, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=(dims,))
    x = torch.rand(1, 3, 48, 80) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), mobile(x), atol=1e-5)


def test_translate_and_bench_take_a_student(tmp_path, mobile):
    weights = save_generator(mobile, tmp_path / "s.safetensors", direction="gta2city")
    images = make_image_tree(tmp_path / "frames")
    result = CliRunner().invoke(cli, ["translate", str(tmp_path / "frames"), "-o", str(tmp_path / "out"),
                                      "--weights", str(weights), "--backend", "openvino", "-q"])
    assert result.exit_code == 0, result.output
    translated = [p for p in (tmp_path / "out").rglob("*")
                  if p.is_file() and p.name != "gtacity-job.json" and ".gtacity-job" not in p.parts]
    assert len(translated) == len(images)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--backend", "torch", "--device", "cpu", "--size", "32x32",
                                      "--weights", str(weights), "--repeats", "1", "--json", str(out), "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["settings"]["arch"] == "mobile_resnet_generator"
    expected = count_macs(8, 2, 32, 32, arch="mobile_resnet_generator") / 1e9
    assert np.isclose(data["results"][0]["gmacs_per_frame"], expected)


def test_mobile_student_exports_to_onnx_with_its_arch_recorded(mobile):
    import onnxruntime as ort

    from gtacity.engine.exporters.onnx import INPUT_NAME, OUTPUT_NAME, to_onnx

    model = to_onnx(mobile)
    meta = {p.key: p.value for p in model.metadata_props}
    assert (meta["arch"], meta["ngf"], meta["n_blocks"]) == ("mobile_resnet_generator", "8", "2")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 40, 64) * 2 - 1
    with torch.no_grad():
        expected = mobile(x)
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    assert (got - expected).abs().max() < 1e-4
