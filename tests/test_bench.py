"""`gtacity bench`: real backends on tiny generators and sizes, through the API and the CLI."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from dataclasses import asdict

import pytest
import torch
from click.testing import CliRunner
from media import make_clip

from gtacity.checkpoint import bundled_generators, save_generator
from gtacity.cli import cli
from gtacity.engine.backends import create_backend
from gtacity.engine.measure.bench import run_bench
from gtacity.engine.measure.bench_plan import TOLERANCES, BenchConfig, BenchError, Tolerance, parse_ints, parse_sizes
from gtacity.engine.measure.bench_report import HostPeak, describe_disagreement, time_calls
from gtacity.engine.stream.stages import STAGES
from gtacity.nets import count_macs

TINY = {"ngf": 8, "n_blocks": 2, "repeats": 3, "warmup": 1}
TOP_LEVEL = {"format", "format_version", "date", "ok", "machine", "versions", "settings", "tolerances",
             "unavailable", "skipped", "agreement", "results", "e2e"}
MACHINE = {"cpu", "cpu_cores_usable", "torch_threads", "memory_gib", "gpus", "os", "host_peak_per_config"}
RESULT = {"backend", "device", "precision", "describe", "size", "batch", "fps", "ms_per_frame_p50",
          "ms_per_frame_p95", "repeats", "build_s", "warmup_s", "peak_host_mib", "peak_device_mib",
          "gmacs_per_frame", "gmac_per_s", "matmul_share"}
AGREEMENT = {"backend", "device", "precision", "size", "batch", "max_abs", "mean_abs", "tolerance", "ok"}
TARGET = {"backend", "device", "precision", "reason"}
E2E = {"backend", "device", "precision", "describe", "size", "batch", "frames", "input_frames", "stopped_by",
       "wall_s", "fps", "stage_s", "bound_by", "bound_share", "build_s", "peak_host_mib", "peak_device_mib",
       "streams"}


def test_every_backend_is_checked_then_timed_at_every_size_and_batch(tmp_path):
    lines: list[str] = []
    cfg = BenchConfig(device="cpu", sizes=((32, 32), (48, 32)), batch_sizes=(1, 2),
                      json_path=tmp_path / "bench.json", **TINY)
    report = run_bench(cfg, log=lines.append)

    configs = [(r.backend, r.size, r.batch) for r in report.results]
    assert configs == [(b, s, n) for b in ("torch", "openvino") for s in ("32x32", "48x32") for n in (1, 2)]
    assert report.ok and len(report.agreement) == 8
    for r in report.results:
        assert r.device == "cpu" and r.repeats == 3
        assert 0 < r.ms_per_frame_p50 <= r.ms_per_frame_p95
        assert r.fps == pytest.approx(1000 / r.ms_per_frame_p50)
        width, height = map(int, r.size.split("x"))
        assert r.gmacs_per_frame == pytest.approx(count_macs(8, 2, height, width) / 1e9)
        assert r.gmac_per_s == pytest.approx(r.gmacs_per_frame * r.fps)
        assert r.peak_host_mib > 50 and r.peak_device_mib is None and r.matmul_share is None
    # each backend at its own default precision: torch fp32 on CPU, openvino its CPU's default
    assert {r.precision for r in report.results if r.backend == "torch"} == {"fp32"}
    assert "agreement: all 8 configurations within tolerance" in lines
    table = report.format()
    assert "frames/s" in table and "ms p95" in table and "GMAC/s" in table
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report.to_json()))


def test_json_has_the_documented_fields(tmp_path):
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["bench", "--backend", "torch", "--device", "cpu", "--size", "32x32",
                                      "--batch-size", "1,2", "--ngf", "8", "--n-blocks", "2",
                                      "--repeats", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "machine   " in result.output and "versions  python " in result.output
    data = json.loads(out.read_text())
    assert set(data) == TOP_LEVEL
    assert data["format"] == "gtacity-bench" and data["ok"] is True
    assert MACHINE <= set(data["machine"])
    assert {"python", "gtacity", "torch"} <= set(data["versions"])
    assert data["settings"]["sizes"] == ["32x32"] and data["settings"]["batch_sizes"] == [1, 2]
    assert (data["settings"]["ngf"], data["settings"]["n_blocks"]) == (8, 2)
    assert set(data["tolerances"]["fp32"]) == {"max_abs", "mean_abs"}
    assert [set(r) for r in data["results"]] == [RESULT, RESULT]
    assert [set(a) for a in data["agreement"]] == [AGREEMENT, AGREEMENT]
    assert all(set(t) == TARGET for t in data["unavailable"] + data["skipped"])
    assert data["e2e"] == []


def test_a_backend_outside_its_tolerance_is_reported_and_not_timed():
    lines: list[str] = []
    wrong = {**TOLERANCES, "bf16": Tolerance(max_abs=1e-6, mean_abs=1e-7)}
    cfg = BenchConfig(backends=("torch",), device="cpu", precisions=("fp32", "bf16"), sizes=((32, 32),),
                      tolerances=wrong, **TINY)
    report = run_bench(cfg, log=lines.append)

    assert not report.ok
    [bad] = report.disagreements()
    assert (bad.backend, bad.precision, bad.ok) == ("torch", "bf16", False)
    assert bad.max_abs > 1e-6 and bad.tolerance == "bf16: max 1e-06, mean 1e-07"
    assert [(r.backend, r.precision) for r in report.results] == [("torch", "fp32")]
    assert any(line.startswith("DISAGREES, not timed: torch bf16 on cpu at 32x32") for line in lines)
    assert "DISAGREE (not timed): torch bf16 on cpu at 32x32 batch 1" in report.format()


def test_a_precision_missing_from_the_tolerance_table_is_an_error():
    cfg = BenchConfig(backends=("torch",), device="cpu", sizes=((32, 32),),
                      tolerances={"bf16": TOLERANCES["bf16"]}, **TINY)
    with pytest.raises(BenchError, match="no fp32 tolerance in the table"):
        run_bench(cfg)


def test_unavailable_and_skipped_backends_say_why():
    cfg = BenchConfig(backends=("torch",), device="all", precisions=("fp32", "fp16"), sizes=((32, 32),),
                      **TINY)
    report = run_bench(cfg)
    assert ("torch", "cpu", "fp32") in [(r.backend, r.device, r.precision) for r in report.results]
    if not torch.cuda.is_available():
        assert [(t.backend, t.device, t.reason) for t in report.unavailable] == [
            ("torch", "cuda", "CUDA not available")
        ]
        assert "unavailable  torch on cuda: CUDA not available" in report.format()
    # torch has no fp16 path on the CPU: skipped with what it does have
    [skip] = [t for t in report.skipped if t.device == "cpu"]
    assert (skip.precision, skip.reason) == ("fp16", "it has fp32, bf16 on cpu here")
    assert all(t.reason for t in report.unavailable + report.skipped)


def test_e2e_times_every_stage_and_names_the_bound(tmp_path):
    make_clip(tmp_path / "drive.mp4", frames=12, size=(60, 44), audio=None)
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "gtacity-bench-*")))
    cfg = BenchConfig(backends=("torch",), device="cpu", batch_sizes=(1, 5), e2e=tmp_path / "drive.mp4", **TINY)
    report = run_bench(cfg)

    assert report.results == [] and report.ok
    assert [(a.size, a.batch) for a in report.agreement] == [("60x44", 1), ("60x44", 5)]  # padded size
    assert [(r.size, r.batch, r.frames) for r in report.e2e] == [("60x44", 1, 12), ("60x44", 5, 12)]
    for r in report.e2e:
        assert tuple(r.stage_s) == STAGES and all(s >= 0 for s in r.stage_s.values())
        assert r.stage_s["infer"] > 0 and r.bound_by in STAGES
        assert r.fps == pytest.approx(r.frames / r.wall_s)
        assert set(asdict(r)) == E2E and r.streams == 3
        assert (r.input_frames, r.stopped_by) == (12, None)
        # one stage on one thread works at most the run's wall time: the share cannot pass 100%
        assert r.bound_share == pytest.approx(r.stage_s[r.bound_by] / r.wall_s) and 0 < r.bound_share <= 1
    assert "bound by" in report.format() and "bound busy %" in report.format()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "gtacity-bench-*"))) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.mp4"]


@pytest.mark.parametrize("name", sorted(bundled_generators()))
def test_every_shipped_generator_passes_the_fp32_agreement_check(name):
    """openvino fp32 against torch fp32 on the bench's own input, at a bench size where the trained
    demo differed by 1.3e-4, beyond the bound the bench once had (1e-4): the shipped models must pass."""
    cfg = BenchConfig(backends=("openvino",), device="cpu", precisions=("fp32",), sizes=((512, 256),),
                      weights=name, warmup=0, repeats=1)
    report = run_bench(cfg)
    [check] = report.agreement
    assert report.ok, describe_disagreement(check)
    assert 0 < check.max_abs <= TOLERANCES["fp32"].max_abs  # two implementations, not the same one
    if name == "gta2city_demo":  # the command, through the CLI: exit 0, numbers printed
        result = CliRunner().invoke(cli, ["bench", "--weights", name, "--backend", "openvino", "--precision",
                                          "fp32", "--size", "512x256", "--repeats", "1", "-q"])
        assert result.exit_code == 0 and "frames/s" in result.stdout, result.output


def test_a_generator_file_is_benched_with_its_own_architecture(tmp_path, tiny_generator):
    weights = save_generator(tiny_generator, tmp_path / "g.safetensors", direction="gta2city")
    cfg = BenchConfig(backends=("torch",), device="cpu", sizes=((32, 32),), weights=weights, repeats=1)
    report = run_bench(cfg)
    assert (report.settings["ngf"], report.settings["n_blocks"]) == (8, 2)
    assert report.settings["weights"] == str(weights) and report.ok


def test_nothing_runnable_is_an_error_that_says_why():
    with pytest.raises(BenchError, match=r"nothing to run \(.*torch on cpu: it has fp32, bf16 on cpu here"):
        run_bench(BenchConfig(backends=("torch",), device="cpu", precisions=("fp16",), **TINY))


@pytest.mark.parametrize(("cfg", "message"), [
    (BenchConfig(sizes=((30, 32),)), "size 30x32: each side must be a multiple of 4"),
    (BenchConfig(precisions=("fp8",)), "unknown precision 'fp8'"),
    (BenchConfig(batch_sizes=(0,)), "batch sizes and repeats must be at least 1"),
    (BenchConfig(backends=("nope",), ngf=8, n_blocks=2), "unknown backend 'nope'"),
    (BenchConfig(device="tpu"), "unknown device 'tpu'"),
    (BenchConfig(json_path="/no/such/folder/b.json"), "its folder does not exist"),
])
def test_bad_settings_fail_before_anything_runs(cfg, message):
    with pytest.raises(BenchError, match=message):
        run_bench(cfg)


def test_sizes_and_batches_parse_and_reject_junk():
    assert parse_sizes("512x256, 1024X512") == ((512, 256), (1024, 512))
    assert parse_ints("1,4") == (1, 4)
    for text in ("512", "512x", "axb", ""):
        with pytest.raises(BenchError, match="WIDTHxHEIGHT"):
            parse_sizes(text)
    with pytest.raises(BenchError, match="whole numbers"):
        parse_ints("1,x")
    result = CliRunner().invoke(cli, ["bench", "--size", "256"])
    assert result.exit_code == 1 and "error: sizes are WIDTHxHEIGHT" in result.output


def test_host_peak_restarts_per_configuration():
    host = HostPeak()
    if not host.per_config:
        pytest.skip("/proc/self/clear_refs is not writable here")
    base = host.peak_mib()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    assert host.peak_mib() >= base + 60
    del block
    host.reset()
    assert host.peak_mib() < base + 30


@pytest.mark.cuda
def test_cuda_calls_are_timed_with_events(tiny_generator):
    backend = create_backend("torch", tiny_generator, precision="fp16", device="cuda")
    backend.prepare(2, 64, 64)
    seconds = time_calls(backend, torch.zeros(2, 3, 64, 64, device=backend.device), repeats=4)
    assert len(seconds) == 4 and all(0 < s < 1 for s in seconds)


@pytest.mark.cuda
def test_cuda_bench_reports_device_memory_and_matmul_share():
    cfg = BenchConfig(backends=("torch",), device="cuda", precisions=("fp32", "fp16"), sizes=((64, 64),),
                      batch_sizes=(2,), **TINY)
    report = run_bench(cfg)
    assert report.ok and [r.precision for r in report.results] == ["fp32", "fp16"]
    assert [a.tolerance.split(":")[0] for a in report.agreement] == ["tf32", "fp16"]
    for r in report.results:
        assert r.device.startswith("cuda") and r.peak_device_mib > 0
        assert 0 < r.matmul_share < 1.5
    assert len(report.machine["matmul_tflops"]) == 2


def test_e2e_defaults_to_the_generator_translate_uses(tmp_path):
    make_clip(tmp_path / "drive.mp4", frames=4, size=(64, 48), audio=None)
    report = run_bench(BenchConfig(backends=("torch",), device="cpu", e2e=tmp_path / "drive.mp4", repeats=1))
    demo = (report.settings["arch"], report.settings["ngf"], report.settings["n_blocks"])
    assert demo == ("resnet_generator", 32, 6)  # the bundled gta2city demo, not a random ngf 64
    city = run_bench(BenchConfig(backends=("torch",), device="cpu", e2e=tmp_path / "drive.mp4", repeats=1,
                                 direction="city2gta", e2e_frames=1))
    assert city.ok and city.e2e[0].frames == 1
    # asking for a size still gets random weights of that size
    sized = run_bench(BenchConfig(backends=("torch",), device="cpu", e2e=tmp_path / "drive.mp4", e2e_frames=1,
                                  ngf=8, n_blocks=2, repeats=1))
    assert (sized.settings["ngf"], sized.settings["n_blocks"]) == (8, 2)


def test_e2e_stops_at_frames_and_at_seconds(tmp_path):
    make_clip(tmp_path / "long.mp4", frames=250, size=(96, 64), audio=None)
    by_count = run_bench(BenchConfig(backends=("torch",), device="cpu", e2e=tmp_path / "long.mp4",
                                     e2e_frames=7, batch_sizes=(2,), **TINY))
    [r] = by_count.e2e
    assert (r.frames, r.input_frames, r.stopped_by) == (7, 250, "--frames 7")
    # the demo generator takes several seconds for 250 frames here; the pass ends near 1 s instead
    by_time = run_bench(BenchConfig(backends=("torch",), device="cpu", e2e=tmp_path / "long.mp4",
                                    e2e_seconds=1.0, repeats=1))
    [r] = by_time.e2e
    assert r.stopped_by == "--seconds 1" and 0 < r.frames < 250
    assert r.wall_s < 10  # frames in flight are projected, not a queue's worth run past the limit


def test_e2e_cli_shows_progress_on_stderr_and_quiet_hides_it(tmp_path):
    make_clip(tmp_path / "drive.mp4", frames=6, size=(64, 48), audio=None)
    args = ["bench", "--e2e", str(tmp_path / "drive.mp4"), "--backend", "torch", "--device", "cpu",
            "--ngf", "8", "--n-blocks", "2", "--repeats", "1", "--frames", "5"]
    loud = CliRunner().invoke(cli, args)
    assert loud.exit_code == 0, loud.output
    assert "e2e torch fp32 batch 1: 100%" in loud.stderr and "5/5" in loud.stderr  # tqdm's bar
    assert "5/6" in loud.stdout and "bound busy %" in loud.stdout
    quiet = CliRunner().invoke(cli, [*args, "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
