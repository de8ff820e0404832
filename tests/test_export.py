"""ONNX and FP16 ONNX export: parity with torch fp32 (onnxruntime on the CPU), graph types, metadata,
and ``gtacity export``'s answers to bad input.

Measured on the tiny generator (ngf 8, 2 blocks, seeded), random inputs in [-1, 1], against torch
fp32: ONNX fp32 max abs 1.5e-6; FP16 ONNX max abs 0.0022, mean 0.00026 (onnxruntime runs the fp16
graph's ops through its CPU kernels, rounding every weight and activation to fp16).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from gtacity.checkpoint import GeneratorInfo, save_generator
from gtacity.cli import cli
from gtacity.engine.exporters.onnx import INPUT_NAME, OUTPUT_NAME, to_fp16, to_onnx, weights_checksum
from gtacity.engine.frames import Frame
from gtacity.engine.stream.convert import to_batch

FP32_MAX = 1e-4
FP16_MAX, FP16_MEAN = 0.01, 0.001
INFO = GeneratorInfo(ngf=8, n_blocks=2, direction="gta2city", trained_resolution=256)


@pytest.fixture(scope="module")
def generator() -> torch.nn.Module:
    from gtacity.nets import ResnetGenerator, init_weights

    torch.manual_seed(0)
    return init_weights(ResnetGenerator(ngf=8, n_blocks=2)).eval()


@pytest.fixture(scope="module")
def dynamic_onnx(generator):
    return to_onnx(generator, INFO)


def frames(n: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator) * 2 - 1


def run(model, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def reference(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


def odd_frames_padded(n: int, height: int, width: int) -> tuple[torch.Tensor, list[Frame]]:
    """Frames of a size that is no multiple of 4, padded the way the pipeline pads them."""
    rng = np.random.default_rng(3)
    batch = [Frame(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), i) for i in range(n)]
    return to_batch(batch, torch.device("cpu")), batch


def test_dynamic_onnx_matches_torch_at_two_sizes_and_odd_frames(generator, dynamic_onnx):
    dims = dynamic_onnx.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 3
    assert max(o.version for o in dynamic_onnx.opset_import if o.domain in ("", "ai.onnx")) >= 18
    ops = {node.op_type for node in dynamic_onnx.graph.node}
    assert "InstanceNormalization" in ops and ops <= {
        "Conv", "ConvTranspose", "InstanceNormalization", "Pad", "Relu", "Add", "Tanh"}
    for x in (frames(2, 32, 48), frames(3, 64, 96)):
        out = run(dynamic_onnx, x)
        assert out.shape == x.shape
        assert (out - reference(generator, x)).abs().max().item() <= FP32_MAX
    padded, originals = odd_frames_padded(2, 37, 53)
    assert padded.shape == (2, 3, 40, 56)
    diff = (run(dynamic_onnx, padded) - reference(generator, padded))[:, :, :37, :53]
    assert diff.abs().max().item() <= FP32_MAX


def test_onnx_metadata_describes_the_generator(generator, dynamic_onnx):
    meta = {p.key: p.value for p in dynamic_onnx.metadata_props}
    assert meta["direction"] == "gta2city" and meta["value_range"] == "-1,1"
    assert (meta["arch"], meta["ngf"], meta["n_blocks"]) == ("resnet_generator", "8", "2")
    assert meta["source_sha256"] == weights_checksum(generator) and meta["precision"] == "fp32"
    assert meta["gtacity_version"]


def test_fixed_shape_onnx_matches_torch_and_takes_only_its_shape(generator):
    model = to_onnx(generator, INFO, shape=(2, 3, 64, 96))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 96]
    x = frames(2, 64, 96)
    assert (run(model, x) - reference(generator, x)).abs().max().item() <= FP32_MAX
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run(model, frames(2, 32, 32))


def test_fp16_onnx_keeps_instance_norm_and_io_in_fp32(generator, dynamic_onnx):
    half = to_fp16(dynamic_onnx)
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    initializers = {t.name: t.data_type for t in half.graph.initializer}
    producers = {out: node for node in half.graph.node for out in node.output}
    convs = [n for n in half.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 10 and all(initializers[n.input[1]] == fp16 for n in convs)
    norms = [n for n in half.graph.node if n.op_type == "InstanceNormalization"]
    assert len(norms) == 9
    for node in norms:  # input, scale and bias all arrive as fp32
        for name in node.input:
            cast = producers.get(name)
            assert initializers.get(name) == fp32 or (
                cast is not None and cast.op_type == "Cast" and cast.attribute[0].i == fp32)
    for value in (*half.graph.input, *half.graph.output):
        assert value.type.tensor_type.elem_type == fp32
    assert {p.key: p.value for p in half.metadata_props}["precision"] == "fp16"

    x = frames(2, 64, 96)
    diff = (run(half, x) - reference(generator, x)).abs()
    assert 1e-5 < diff.max().item() <= FP16_MAX  # really fp16, and close
    assert diff.mean().item() <= FP16_MEAN


def test_export_command_writes_fp16_onnx_and_refuses_bad_input(tmp_path, generator):
    weights = save_generator(generator, tmp_path / "gen.safetensors", direction="city2gta")
    out = tmp_path / "gen16.onnx"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(weights), "--format", "onnx-fp16", "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta["direction"] == "city2gta" and meta["precision"] == "fp16"
    model = onnx.load(str(out))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    before = out.read_bytes()
    bad = {
        (str(weights), "-o", str(out)): "exists; pass --overwrite",
        (str(weights), "-o", str(weights), "--overwrite"): "that is the input generator",
        (str(weights), "-o", str(tmp_path / "x.onnx"), "--format", "tflite"): "unknown format 'tflite'",
        (str(weights), "-o", str(tmp_path / "x.onnx"), "--shape", "1x3x30x32"): "multiples of 4",
        (str(weights), "-o", str(tmp_path / "x.onnx"), "--shape", "1x3x32"): "use NxCxHxW",
        (str(weights), "-o", str(tmp_path / "x.onnx"), "--max-shape", "1x3x32x32"): "are for --format engine",
        (str(weights), "-o", str(tmp_path / "x.onnx"), "--via", "torch-tensorrt"): "are for --format engine",
        (str(weights), "-o", str(tmp_path / "x.engine"), "--format", "engine"): "needs --shape",
        (str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "x.onnx")): "no such weights file",
    }
    for args, message in bad.items():
        result = runner.invoke(cli, ["export", *args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and result.output.count("\n") == 1, result.output
    assert out.read_bytes() == before and not (tmp_path / "x.onnx").exists()
