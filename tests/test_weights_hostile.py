"""Weights files that are edited, broken or of the wrong kind: one line naming the file and what it
is, before anything large is built, from every command that takes a generator."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import openvino as ov
import pytest
import torch
from click.testing import CliRunner
from media import make_image
from safetensors import safe_open
from safetensors.torch import save_file

from gtacity.checkpoint import CheckpointError, check_finite_output, load_generator, save_generator
from gtacity.cli import cli
from gtacity.engine import ExportConfig, export
from gtacity.engine.exporters.plan import pack
from gtacity.nets import ResnetGenerator, init_weights
from gtacity.trainer.state import Progress, save_checkpoint
from gtacity.trainer.step import CycleGAN, Precision, StepConfig


def edited(src, dst, meta=None, tensors=None):
    """A copy of the generator file ``src`` with some metadata values or tensors replaced."""
    with safe_open(str(src), framework="pt") as f:
        old_meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file({**state, **(tensors or {})}, str(dst), metadata={**old_meta, **(meta or {})})
    return dst


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """One file of every kind that is not a generator, each made the way a user would have it."""
    root = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    net = init_weights(ResnetGenerator(ngf=8, n_blocks=2)).eval()
    generator = save_generator(net, root / "gen.safetensors", direction="gta2city")
    export(ExportConfig(str(generator), str(root / "gen.onnx")))
    ov.save_model(ov.convert_model(net, example_input=torch.zeros(1, 3, 32, 32)), str(root / "gen.xml"))
    header = {"key": {"source_sha256": "0" * 64}, "generator": {"direction": "gta2city"}}
    (root / "gen.engine").write_bytes(pack(header, b"ftrt" + bytes(256)))
    (root / "raw.plan").write_bytes(b"ftrt" + bytes(256))
    with zipfile.ZipFile(root / "weights.zip", "w") as zf:
        zf.writestr("readme.txt", "the weights are elsewhere")
    torch.save(net, root / "whole_model.pth")
    (root / "empty.pth").write_bytes(b"")
    model = CycleGAN(8, 2, 8, StepConfig())
    save_checkpoint(root / "run", model, Precision(), Progress(step=3), {"out": "run"}, 32)
    return root


# (file, words the one line must hold)
KINDS = [
    ("gen.onnx", "is an ONNX model, not a generator file"),
    ("gen.xml", "is an OpenVINO IR model, not a generator file"),
    ("gen.bin", "is the weights of the OpenVINO IR model gen.xml"),
    ("gen.engine", "is a gtacity TensorRT engine"),
    ("raw.plan", "is a TensorRT engine (plan) file"),
    ("weights.zip", "is a zip archive of 1 files (first: readme.txt), not a PyTorch file"),
    ("whole_model.pth", "holds pickled Python objects (gtacity.nets.ResnetGenerator)"),
    ("empty.pth", "is empty (0 bytes)"),
    ("run/checkpoints/latest.pt", "is a gtacity training checkpoint"),
]


def commands(weights, tmp_path):
    image = tmp_path / "in.png"
    make_image(image, size=(32, 32))
    return {
        "translate": ["translate", str(image), "-o", str(tmp_path / "out.png"), "--weights", weights],
        "export": ["export", weights, "-o", str(tmp_path / "out.onnx")],
        "distill": ["distill", "--teacher", weights, "--images", str(tmp_path), "--out", str(tmp_path / "run")],
    }


@pytest.mark.parametrize("command", ["translate", "export", "distill"])
@pytest.mark.parametrize("name, what", KINDS)
def test_wrong_kind_of_weights_is_named_in_one_line(kinds, tmp_path, command, name, what):
    weights = str(kinds / name)
    result = CliRunner().invoke(cli, commands(weights, tmp_path)[command])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert lines == [lines[0]] and lines[0].startswith(f"error: {weights}: {what}"), result.output
    # torch's advice to load with weights_only=False (which runs the file's code) is never passed on
    assert "weights_only" not in result.output and "internal error" not in result.output
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.onnx").exists()


def test_training_checkpoint_points_at_the_runs_generators(kinds):
    with pytest.raises(CheckpointError) as e:
        load_generator(kinds / "run" / "checkpoints" / "latest.pt")
    assert str(kinds / "run" / "gta2city.safetensors") in str(e.value)
    assert str(kinds / "run" / "city2gta.safetensors") in str(e.value)


def test_real_generators_still_load(kinds):
    net, info = load_generator(kinds / "gen.safetensors")
    assert (info.ngf, info.n_blocks) == (8, 2)


# Run under an address-space cap 1 GiB above what the interpreter already maps: building what the
# edited metadata asks for (e.g. ngf 3000: 20 GB of weights) cannot fit, checking it must.
CAPPED = """
import re, resource, sys
import torch
from gtacity.checkpoint import CheckpointError, load_generator
mapped = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read())[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30),) * 2)
for path in sys.argv[1:]:
    try:
        load_generator(path)
        print("loaded", path)
    except CheckpointError as e:
        print(e)
"""


def test_metadata_is_checked_against_the_tensors_before_building(tmp_path, tiny_generator):
    src = save_generator(tiny_generator, tmp_path / "gen.safetensors", direction="gta2city")
    files = [
        edited(src, tmp_path / "ngf3000.safetensors", {"ngf": "3000"}),
        edited(src, tmp_path / "ngf100000.safetensors", {"ngf": "100000"}),
        edited(src, tmp_path / "blocks.safetensors", {"n_blocks": "100000000"}),
        src,
    ]
    out = subprocess.run([sys.executable, "-c", CAPPED, *map(str, files)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"{files[0]}: tensor model.1.weight has shape (8, 3, 7, 7), a ngf=3000, 2-block generator needs "
        "(3000, 3, 7, 7)",
        f"{files[1]}: tensor model.1.weight has shape (8, 3, 7, 7), a ngf=100000, 2-block generator needs "
        "(100000, 3, 7, 7)",
        f"{files[2]}: generator metadata gives n_blocks=100000000, but the file holds only 20 tensors; "
        "the file is damaged or was edited",
        f"loaded {src}",
    ]


@pytest.mark.parametrize("version", ["abc", "\u00b2", "-1"])
def test_format_version_that_is_not_a_number_is_one_line(tmp_path, tiny_generator, version):
    src = save_generator(tiny_generator, tmp_path / "gen.safetensors", direction="gta2city")
    bad = edited(src, tmp_path / "bad.safetensors", {"format_version": version})
    result = CliRunner().invoke(cli, ["export", str(bad), "-o", str(tmp_path / "out.onnx")])
    assert result.exit_code == 1
    assert result.output == (f"error: {bad}: generator metadata gives format_version {version!r}, not a number; "
                             "the file is damaged or was not written by gtacity\n")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_at_load(tmp_path, tiny_generator, value):
    src = save_generator(tiny_generator, tmp_path / "gen.safetensors", direction="gta2city")
    state = tiny_generator.state_dict()
    nan_all = edited(src, tmp_path / "all.safetensors", tensors={k: torch.full_like(v, value) for k, v in state.items()})
    one = state["model.10.conv_block.5.weight"].clone()
    one[3, 1, 2, 2] = value
    nan_one = edited(src, tmp_path / "one.safetensors", tensors={"model.10.conv_block.5.weight": one})
    image = tmp_path / "in.png"
    make_image(image, size=(32, 32))
    for bad, key, count in ((nan_all, "model.1.bias", 8), (nan_one, "model.10.conv_block.5.weight", 1)):
        result = CliRunner().invoke(cli, ["translate", str(image), "-o", str(tmp_path / "out.png"), "--weights", str(bad)])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"error: {bad}: tensor {key} holds {count} NaN/Inf values")
        assert len(result.output.splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_first_batch_check_names_the_weights_and_precision():
    check_finite_output(torch.zeros(2, 3, 8, 8), "gen.safetensors", "fp16")  # finite: no error
    batch = torch.zeros(2, 3, 8, 8)
    batch[1, 0, :2] = float("nan")
    batch[0, 2, 0, 0] = float("inf")
    with pytest.raises(CheckpointError) as e:
        check_finite_output(batch, "gen.safetensors", "fp16")
    assert str(e.value).startswith("gen.safetensors: the generator's output for the first batch holds 17 "
                                   "NaN/Inf values (of 384) at fp16 precision")
    assert "\n" not in str(e.value)
