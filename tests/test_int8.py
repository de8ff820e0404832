"""int8 on the openvino backend: NNCF quantisation, its cache, the PSNR gate, translate and bench."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_clip

from gtacity import hardware
from gtacity.checkpoint import save_generator
from gtacity.cli import cli
from gtacity.engine.backends import BackendError, create_backend
from gtacity.engine.exporters.int8 import CROP, REUSE_CROP, REUSE_SPAN, calibration_frames, check_frames
from gtacity.engine.measure.bench import run_bench
from gtacity.engine.measure.bench_plan import BenchConfig
from gtacity.engine.media.sources import open_source
from gtacity.quality import psnr

pytest.importorskip("nncf")
if hardware.emulation_reason(hardware.cpu_capabilities(), "int8"):
    pytest.skip("OpenVINO runs no int8 on this CPU", allow_module_level=True)


def frames(n: int, seed: int, size: int = 48) -> list[torch.Tensor]:
    """Smooth test images (int8 ranges are set by content; noise would be the worst case)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return list(x.split(1))


def again_line_expected(check) -> bool:
    return check.line().endswith("cached model, checked when first used on this kind of CPU")


def cache_dir():
    from gtacity.engine.exporters.cache import cache_root

    return cache_root(None, "openvino")


def test_int8_is_calibrated_checked_cached_and_close_to_fp32(tiny_generator):
    calibration = frames(6, seed=1)
    backend = create_backend("openvino", tiny_generator, precision="int8", device="cpu")
    assert backend.needs_calibration()
    with pytest.raises(BackendError, match="int8 needs calibration frames first"):
        backend.prepare(1, 48, 48)
    backend.calibrate(calibration)
    check = backend.int8_check
    assert not check.from_cache and check.quantize_s > 0 and check.frames == 6
    assert 30 <= check.worst_db <= check.mean_db < 80
    assert check.line().startswith(f"int8: PSNR vs fp32 on {check.checked} calibration frames: mean ")
    backend.prepare(2, 48, 48)
    x = torch.cat(frames(2, seed=7))
    y = backend.infer(x)
    with torch.no_grad():
        expected = tiny_generator(x)
    assert y.shape == x.shape and backend.precision == "int8"
    assert 28 < float(psnr(y.reshape(1, -1) / 2, expected.reshape(1, -1) / 2)) < 80  # unseen frames, int8 and not fp32
    # same weights and frames: the cached model, same numbers; other frames: quantised afresh
    # and the comparison with fp32 made then, on this kind of CPU, is not repeated
    assert check.rechecked and not again_line_expected(check)
    again = create_backend("openvino", tiny_generator, precision="int8", device="cpu")
    again.calibrate(calibration)
    assert again.int8_check.from_cache and again.int8_check.worst_db == check.worst_db
    assert not again.int8_check.rechecked and again_line_expected(again.int8_check)
    stored = list(cache_dir().glob("int8-*/check-*.json"))
    assert stored, "the check is kept with the cached model"
    for path in stored:
        path.write_text("{damaged")  # a damaged record: compare again, same numbers
    third = create_backend("openvino", tiny_generator, precision="int8", device="cpu")
    third.calibrate(calibration)
    assert third.int8_check.rechecked and third.int8_check.worst_db == check.worst_db
    other = create_backend("openvino", tiny_generator, precision="int8", device="cpu")
    other.calibrate(frames(6, seed=2))
    assert not other.int8_check.from_cache


def test_int8_below_the_floor_is_refused_in_one_line(tiny_generator):
    backend = create_backend("openvino", tiny_generator, precision="int8", device="cpu", min_psnr_db=99)
    with pytest.raises(BackendError, match=r"^int8 refused: [\d.]+ dB PSNR vs fp32 .* below the 99 dB floor; use"):
        backend.calibrate(frames(6, seed=1))


def test_translate_int8_prints_its_psnr_and_writes_every_frame(tmp_path, tiny_generator):
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=10, size=(64, 48), audio=None)
    assert len(calibration_frames(clip, count=4)) == 4
    runner = CliRunner()
    result = runner.invoke(cli, ["translate", str(clip), "-o", str(tmp_path / "out.mp4"), "-q",
                                 "--weights", str(weights), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    # the tiny generator may already carry its int8 model from an earlier test: either way, a PSNR line
    assert re.search(r"^int8: .*PSNR vs fp32 on \d+ ", result.stderr, re.M) and "with openvino int8" in result.stdout
    with open_source(tmp_path / "out.mp4") as out:
        images = [f.image for f in out]
    assert len(images) == 10 and images[0].shape == (48, 64, 3) and np.ptp(images[0]) > 0
    refused = runner.invoke(cli, ["translate", str(clip), "-o", str(tmp_path / "o2.mp4"), "--weights",
                                  str(weights), "--precision", "fp32", "--calibration", str(clip)])
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "error: --calibration is for --precision int8; this job runs fp32"


def test_int8_joins_the_bench_by_name(tiny_generator, tmp_path):
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    cfg = BenchConfig(backends=("openvino",), device="cpu", precisions=("int8",), sizes=((48, 48),),
                      weights=weights, repeats=3, warmup=1)
    report = run_bench(cfg)
    assert report.ok and [(r.backend, r.precision) for r in report.results] == [("openvino", "int8")]


def test_a_generator_calibrates_once_and_every_later_input_only_checks(tmp_path, tiny_generator, monkeypatch):
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    runner = CliRunner()
    lines = []
    for name, size in (("first.mp4", (64, 48)), ("second.mp4", (80, 48)), ("third.mp4", (64, 64))):
        make_clip(tmp_path / name, frames=12, size=size, audio=None)
        result = runner.invoke(cli, ["translate", str(tmp_path / name), "-o", str(tmp_path / f"out_{name}"), "-q",
                                     "--weights", str(weights), "--precision", "int8"])
        assert result.exit_code == 0, result.output
        lines.append(result.stderr.strip().splitlines()[-1])
    assert "quantised on 12 frames" in lines[0]  # the first input calibrates the generator
    for line in lines[1:]:  # later inputs reuse it, checked on a few of their own frames
        assert line.startswith("int8: the generator's cached int8 model; PSNR vs fp32 on 4 frames of this input: mean ")
    entries = list((tmp_path / "cache" / "openvino").glob("int8-gen-*"))
    assert len(entries) == 1, "one int8 model per generator, not per input"


def test_a_reused_model_is_checked_on_small_crops_from_the_start_of_the_input(tmp_path):
    """The reuse check is a fresh job's fixed cost: 4 crops of 128 px (a quarter of a calibration
    crop's pixels each), spread over the first REUSE_SPAN frames."""
    make_clip(tmp_path / "long.mp4", frames=REUSE_SPAN + 60, size=(320, 192), audio=None)
    checked = check_frames(tmp_path / "long.mp4")
    calibration = calibration_frames(tmp_path / "long.mp4", count=2)
    assert len(checked) == 4
    assert all(tuple(x.shape) == (1, 3, REUSE_CROP, REUSE_CROP) for x in checked)
    assert all(tuple(x.shape) == (1, 3, 192, CROP) for x in calibration)  # 256 wide, the whole 192 high
    assert REUSE_CROP ** 2 * 4 <= CROP ** 2, "the check should cost at most one calibration crop"


def test_a_reused_int8_model_below_the_floor_is_refused(tmp_path, tiny_generator, monkeypatch):
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    create_backend("openvino", tiny_generator, precision="int8", device="cpu").calibrate(frames(6, seed=1))
    strict = create_backend("openvino", tiny_generator, precision="int8", device="cpu", min_psnr_db=99)
    with pytest.raises(BackendError, match=r"^int8 refused: [\d.]+ dB PSNR vs fp32 .* below the 99 dB floor"):
        strict.reuse_calibration(frames(4, seed=5))
    fresh = create_backend("openvino", tiny_generator, precision="int8", device="cpu", cache_dir="")
    assert not fresh.reuse_calibration(frames(4, seed=5))  # no cache, nothing shipped: calibrate instead


def test_export_openvino_int8_writes_the_ir_and_makes_it_the_generators_int8_model(tmp_path, tiny_generator,
                                                                                      monkeypatch):
    import openvino as ov

    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    make_clip(tmp_path / "calib.mp4", frames=8, size=(64, 48), audio=None)
    runner = CliRunner()
    missing = runner.invoke(cli, ["export", str(weights), "--format", "openvino-int8", "-o", str(tmp_path / "g.xml")])
    assert missing.exit_code == 1 and "needs --calibration DIR" in missing.stderr
    result = runner.invoke(cli, ["export", str(weights), "--format", "openvino-int8", "--calibration",
                                 str(tmp_path / "calib.mp4"), "-o", str(tmp_path / "g.xml")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("g.*")) == ["g.bin", "g.safetensors", "g.xml"]
    model = ov.Core().compile_model(str(tmp_path / "g.xml"), "CPU")
    y = model(torch.cat(frames(1, seed=3, size=64)).numpy())[0]
    assert y.shape == (1, 3, 64, 64) and np.isfinite(y).all()
    make_clip(tmp_path / "drive.mp4", frames=6, size=(80, 48), audio=None)
    used = runner.invoke(cli, ["translate", str(tmp_path / "drive.mp4"), "-o", str(tmp_path / "out.mp4"), "-q",
                               "--weights", str(weights), "--precision", "int8"])
    assert used.exit_code == 0, used.output
    assert "the generator's cached int8 model" in used.stderr


@pytest.mark.parametrize("name", ["gta2city_demo", "gta2city_demo_fast", "city2gta_demo", "city2gta_demo_fast"])
def test_bundled_generators_ship_their_int8_model_and_never_calibrate(tmp_path, monkeypatch, name):
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached: only what ships
    make_clip(tmp_path / "drive.mp4", frames=4, size=(96, 64), audio=None)
    result = CliRunner().invoke(cli, ["translate", str(tmp_path / "drive.mp4"), "-o", str(tmp_path / "out.mp4"),
                                      "-q", "--weights", name, "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert "int8: the generator's shipped int8 model; PSNR vs fp32 on 4 frames of this input" in result.stderr
    assert not list((tmp_path / "cache" / "openvino").glob("int8-gen-*")), "nothing was calibrated"


def test_a_finished_training_run_calibrates_its_generators_on_its_own_frames(tmp_path, monkeypatch):
    from test_trainer import make_domains

    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))
    gta, city = make_domains(tmp_path / "data")
    runner = CliRunner()
    result = runner.invoke(cli, [
        "train", "--gta", str(gta), "--city", str(city), "--out", str(tmp_path / "run"), "--ngf", "8",
        "--n-blocks", "2", "--ndf", "8", "--preprocess", "crop", "--load-size", "48", "--crop-size", "32",
        "--epochs", "1", "--epochs-decay", "0", "--workers", "0", "--amp", "off", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    for direction in ("gta2city", "city2gta"):
        assert re.search(rf"^{direction}: int8: PSNR vs fp32 on \d+ calibration frames: .* quantised on", result.stderr,
                         re.M), result.stderr
    make_clip(tmp_path / "drive.mp4", frames=4, size=(64, 48), audio=None)
    used = runner.invoke(cli, ["translate", str(tmp_path / "drive.mp4"), "-o", str(tmp_path / "out.mp4"), "-q",
                               "--weights", str(tmp_path / "run" / "gta2city.safetensors"), "--precision", "int8"])
    assert used.exit_code == 0, used.output
    assert "the generator's cached int8 model" in used.stderr  # the run's calibration, not this clip's


def test_quiet_silences_nncf_progress_bars(tmp_path, tiny_generator, monkeypatch):
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache"))  # nothing cached: NNCF quantises
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    clip = tmp_path / "drive.mp4"
    make_clip(clip, frames=4, size=(64, 48), audio=None)
    args = ["translate", str(clip), "--weights", str(weights), "--precision", "int8"]
    loud = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "loud.mp4")])
    assert loud.exit_code == 0, loud.output
    assert "Statistics collection" in loud.stderr  # NNCF's bar, on stderr: progress, not output
    monkeypatch.setenv("GTACITY_CACHE_DIR", str(tmp_path / "cache2"))
    quiet = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "quiet.mp4"), "-q"])
    assert quiet.exit_code == 0, quiet.output
    [line] = quiet.stderr.strip().splitlines()  # only the PSNR line the README promises
    assert line.startswith("int8: PSNR vs fp32 on") and "quantised on" in line
