"""TensorRT engines: profiles, the cache key, the metadata header and the engine cache on the CPU;
building, cache hits and parity with fp32 where TensorRT and a GPU exist (``tensorrt`` marker).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import pytest
import torch
from click.testing import CliRunner
from media import make_clip

from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.backends import BackendError, backend_class, create_backend
from gtacity.engine.exporters.onnx import ExportError, onnx_format_for
from gtacity.engine.exporters.plan import (
    PlanCache,
    PlanError,
    PlanKey,
    Profile,
    pack,
    profile_for_batch,
    profile_from,
    read_engine,
    unpack,
    write_engine,
)
from gtacity.engine.exporters.tensorrt import (
    TypedGenerator,
    cached_onnx,
    engine_for,
    export_for_profile,
    tensorrt_missing,
)
from gtacity.engine.measure.bench_plan import TOLERANCES
from gtacity.engine.translation import TranslateConfig, translate

KEY = PlanKey("ab" * 32, "onnx", "fp16", "1x3x64x96:4x3x64x96:4x3x64x96", "10.13.3",
                "NVIDIA H100 80GB HBM3", "9.0")
HEADER = {"key": dataclasses.asdict(KEY), "generator": {"direction": "gta2city", "ngf": "8"}}
PLAN = bytes(range(256)) * 5
no_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                                 reason="TensorRT is installed here")


def test_profile_from_shape_options():
    assert profile_from("8x3x512x1024") == Profile((1, 3, 512, 1024), (8, 3, 512, 1024), (8, 3, 512, 1024))
    p = profile_from("4x3x256x256", "1x3x128x128", "8x3x512x512")
    assert (p.min, p.opt, p.max) == ((1, 3, 128, 128), (4, 3, 256, 256), (8, 3, 512, 512))
    assert str(p) == "1x3x128x128:4x3x256x256:8x3x512x512"
    assert p.accepts((2, 3, 200, 400)) and not p.accepts((9, 3, 256, 256))
    assert profile_for_batch(4, 64, 96) == Profile((1, 3, 64, 96), (4, 3, 64, 96), (4, 3, 64, 96))
    bad = {("8x3x512",): "use NxCxHxW", ("8x1x512x512",): "N x 3 x H x W", ("8x3x510x512",): "multiples of 4",
           ("0x3x512x512",): "N >= 1", ("4x3x64x64", "8x3x64x64"): "--min-shape <= --shape",
           ("4x3x64x64", None, "4x3x32x64"): "--min-shape <= --shape", ("8x3xAx4",): "use NxCxHxW"}
    for args, message in bad.items():
        with pytest.raises(ExportError, match=message):
            profile_from(*args)


def test_cache_key_changes_exactly_when_one_of_its_inputs_changes():
    assert KEY.digest() == PlanKey(**dataclasses.asdict(KEY)).digest()
    digests = {KEY.digest()}
    for field in dataclasses.fields(PlanKey):
        changed = dataclasses.replace(KEY, **{field.name: getattr(KEY, field.name) + "x"})
        digests.add(changed.digest())
    assert len(digests) == 1 + len(dataclasses.fields(PlanKey))


def test_metadata_header_round_trips(tmp_path):
    header, plan = unpack(pack(HEADER, PLAN), "mem")
    assert plan == PLAN and header["key"] == HEADER["key"] and header["generator"] == HEADER["generator"]
    assert PlanKey.from_dict(header["key"]) == KEY
    path = write_engine(tmp_path / "sub" / "gen.engine", HEADER, PLAN)
    assert read_engine(path) == (header, PLAN)
    assert [p.name for p in path.parent.iterdir()] == ["gen.engine"]  # no temporary left behind


@pytest.mark.parametrize("content, message", [
    (PLAN, "not a gtacity TensorRT engine"),                     # a raw plan, no header
    (b"", "not a gtacity TensorRT engine"),
    (pack(HEADER, PLAN)[:20], "damaged gtacity engine header"),  # truncated inside the header
    (pack(HEADER, b""), "ends after its header"),
    (pack({"generator": {}}, PLAN), "damaged gtacity engine header"),  # no key
    (pack(HEADER, PLAN).replace(b'"format_version": 1', b'"format_version": 9'), "upgrade gtacity"),
    (pack(HEADER, PLAN).replace(b'"key"', b'"kex"'), "damaged gtacity engine header"),
])
def test_a_corrupt_or_foreign_engine_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "gen.engine"
    path.write_bytes(content)
    with pytest.raises(PlanError, match=message) as error:
        read_engine(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(PlanError, match="cannot read the engine file"):
        read_engine(tmp_path / "missing.engine")


def test_engine_cache_loads_an_unchanged_key_and_misses_a_changed_one(tmp_path):
    cache = PlanCache(tmp_path / "tensorrt")
    assert cache.load(KEY) is None
    stored = cache.store(KEY, HEADER, PLAN)
    assert stored.built and stored.path == tmp_path / "tensorrt" / f"{KEY.digest()}.engine"
    hit = cache.load(KEY)
    assert hit is not None and not hit.built and hit.plan == PLAN
    other = dataclasses.replace(KEY, profile="1x3x64x96:8x3x64x96:8x3x64x96")
    assert cache.load(other) is None
    # an entry holding another key (copied in by hand) or a damaged one is a miss, rebuilt over
    stored.path.rename(cache.path(other))
    assert cache.load(other) is None
    cache.path(KEY).write_bytes(b"garbage")
    assert cache.load(KEY) is None
    assert PlanCache(None).store(KEY, HEADER, PLAN).path is None


def test_engines_build_from_the_onnx_that_carries_their_precision():
    assert onnx_format_for("fp16", strongly_typed=True) == "onnx-fp16"   # TensorRT 11
    assert onnx_format_for("fp16", strongly_typed=False) == "onnx"       # TensorRT 10 + FP16 flag
    assert onnx_format_for("fp32", strongly_typed=True) == "onnx"


def test_the_onnx_an_engine_builds_from_is_exported_once_and_kept(tmp_path, tiny_generator):
    import onnx

    path = cached_onnx(tiny_generator, None, onnx_format_for("fp16", strongly_typed=True), str(tmp_path))
    assert path.parent == tmp_path / "onnx" and path.name.endswith("-onnx-fp16.onnx")
    model = onnx.load(str(path))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert weights["model.1.weight"] == onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    stamp = path.stat().st_mtime_ns
    assert cached_onnx(tiny_generator, None, "onnx-fp16", str(tmp_path)) == path  # not exported again
    assert path.stat().st_mtime_ns == stamp


def test_torch_tensorrt_export_follows_the_profile(tiny_generator):
    """The torch.export half of ``--via torch-tensorrt``: dims that vary are dynamic, others fixed."""
    module = TypedGenerator(tiny_generator, torch.float32)
    exported = export_for_profile(module, Profile((1, 3, 32, 48), (2, 3, 64, 48), (4, 3, 64, 48)),
                                  torch.device("cpu"))
    run = exported.module()
    for shape in ((1, 3, 32, 48), (3, 3, 64, 48)):
        x = torch.rand(shape) * 2 - 1
        with torch.no_grad():
            assert (run(x) - tiny_generator(x)).abs().max().item() < 1e-5
    with pytest.raises(Exception):
        run(torch.zeros(2, 3, 64, 64))  # width is fixed by the profile


@no_tensorrt
def test_without_tensorrt_every_way_in_says_how_to_get_it(tmp_path, tiny_generator):
    hint = 'pip install "gtacity[tensorrt]"'
    assert hint in tensorrt_missing()
    with pytest.raises(BackendError, match="TensorRT is not installed") as error:
        create_backend("tensorrt", tiny_generator)
    assert hint in str(error.value)
    with pytest.raises(PlanError, match="TensorRT is not installed"):
        engine_for(tiny_generator, None, profile_for_batch(1, 32, 32), _options())
    weights = save_generator(tiny_generator, tmp_path / "gen.safetensors", direction="gta2city")
    result = CliRunner().invoke(cli, ["export", str(weights), "--format", "engine", "--shape",
                                      "2x3x64x64", "-o", str(tmp_path / "gen.engine")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and hint in result.output
    assert not (tmp_path / "gen.engine").exists()


@no_tensorrt
@pytest.mark.skipif(torch.cuda.is_available(), reason="auto would pick torch on CUDA")
def test_auto_on_cuda_tries_tensorrt_first_then_torch():
    with pytest.raises(BackendError) as error:
        backend_class("auto", "cuda")
    message = str(error.value)
    assert "TensorRT is not installed" in message and "CUDA not available" in message
    assert message.index("tensorrt") < message.index("torch")


def _options(**changes):
    from gtacity.engine.exporters.tensorrt import BuildOptions

    return BuildOptions(**{"cache_dir": os.environ["GTACITY_CACHE_DIR"], **changes})


def _frames(n, height, width, device="cuda"):
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(n, 3, height, width, generator=generator) * 2 - 1).to(device)


def _within(out: torch.Tensor, ref: torch.Tensor, key: str) -> None:
    diff = (out.float().cpu() - ref).abs()
    tol = TOLERANCES[key]
    assert diff.max().item() <= tol.max_abs and diff.mean().item() <= tol.mean_abs, (key, diff.max())


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_tensorrt_builds_once_then_loads_from_the_cache(tmp_path, tiny_generator, precision):
    config = {"cache_dir": str(tmp_path)}
    first = create_backend("tensorrt", tiny_generator, precision=precision, **config)
    first.prepare(3, 64, 96)
    assert first.engines_built == 1 and first.precision == precision
    x = _frames(3, 64, 96)
    with torch.no_grad():
        ref = tiny_generator(x.cpu())
    out = first.infer(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    _within(out, ref, "fp16" if precision == "fp16" else "tf32")
    _within(first.infer(x[:1]), ref[:1], "fp16" if precision == "fp16" else "tf32")  # short batch

    again = create_backend("tensorrt", tiny_generator, precision=precision, **config)
    again.prepare(3, 64, 96)
    assert again.engines_built == 0  # same key: loaded, never rebuilt
    assert torch.equal(again.infer(x), out)
    again.prepare(4, 64, 96)  # a larger profile is another key
    assert again.engines_built == 1


@pytest.mark.tensorrt
def test_tensorrt_runs_on_the_current_stream_with_a_context_per_stream(tmp_path, tiny_generator):
    backend = create_backend("tensorrt", tiny_generator, cache_dir=str(tmp_path))
    backend.prepare(2, 64, 64)
    x = [_frames(2, 64, 64), _frames(2, 64, 64).flip(-1)]
    expected = [backend.infer(b).clone() for b in x]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    outs = []
    for stream, batch in zip(streams, x):
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outs.append(backend.infer(batch))
    torch.cuda.synchronize()
    assert all(torch.equal(o, e) for o, e in zip(outs, expected))
    engine = backend._shapes[(64, 64)][1]
    assert len(engine._contexts) == 3  # the default stream and the two others


@pytest.mark.tensorrt
def test_translate_with_tensorrt_builds_once_then_reuses_the_engine(tmp_path, monkeypatch):
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    make_clip(tmp_path / "in.mp4", frames=10, size=(60, 44), audio=None)
    engines = tmp_path / "cache" / "tensorrt"
    reports = []
    for name in ("a.mp4", "b.mp4"):
        reports.append(translate(TranslateConfig(tmp_path / "in.mp4", tmp_path / name,
                                                 backend="tensorrt", batch_size=4, progress=False)))
        if name == "a.mp4":
            built = {p: p.stat().st_mtime_ns for p in engines.glob("*.engine")}
    assert [r.frames for r in reports] == [10, 10] and reports[0].backend == "tensorrt"
    assert len(built) == 1  # one frame size (padded to 64x44), batches of 1 to 4
    assert {p: p.stat().st_mtime_ns for p in engines.glob("*.engine")} == built


@pytest.mark.tensorrt
def test_export_engine_writes_a_cached_engine_with_its_metadata(tmp_path, tiny_generator):
    weights = save_generator(tiny_generator, tmp_path / "gen.safetensors", direction="city2gta")
    out = tmp_path / "gen.engine"
    result = CliRunner().invoke(cli, ["export", str(weights), "--format", "engine", "--shape",
                                      "2x3x64x64", "-o", str(out)])
    assert result.exit_code == 0, result.output
    header, plan = read_engine(out)
    assert header["key"]["precision"] == "fp16" and header["key"]["profile"] == "1x3x64x64:2x3x64x64:2x3x64x64"
    assert header["generator"]["direction"] == "city2gta" and plan


@pytest.mark.tensorrt
def test_torch_tensorrt_engine_matches_fp32(tmp_path, tiny_generator):
    if importlib.util.find_spec("torch_tensorrt") is None:
        (pytest.fail if os.environ.get("GTACITY_REQUIRE_CUDA") == "1" else pytest.skip)("needs torch-tensorrt")
    backend = create_backend("tensorrt", tiny_generator, via="torch-tensorrt", cache_dir=str(tmp_path))
    backend.prepare(2, 64, 96)
    x = _frames(2, 64, 96)
    with torch.no_grad():
        _within(backend.infer(x), tiny_generator(x.cpu()), "fp16")
