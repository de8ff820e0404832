"""`gtacity distill`: a student learns a tiny teacher, resumes exactly, and its file works everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from media import make_image, patches

from gtacity.checkpoint import CheckpointError, generator_path, load_generator, read_generator_file, save_generator
from gtacity.cli import cli
from gtacity.hardware import CpuCapabilities
from gtacity.nets import ResnetGenerator, init_weights
from gtacity.quality import psnr, ssim
from gtacity.trainer.data import DataError, Preprocess, find_images
from gtacity.trainer.distill import (
    DistillConfig,
    SourceImages,
    choose_precision,
    distill,
    init_student,
    read_init_source,
)
from gtacity.trainer.distill_step import Distiller, DistillLosses, distill_step
from gtacity.trainer.losses import spectral_grid_loss


@pytest.fixture
def teacher(tmp_path) -> str:
    torch.manual_seed(3)
    net = init_weights(ResnetGenerator(ngf=8, n_blocks=2))
    return str(save_generator(net, tmp_path / "teacher.safetensors", direction="city2gta"))


@pytest.fixture
def images(tmp_path):
    for i in range(6):
        make_image(tmp_path / "city" / f"f{i}.png", size=(48, 40), seed=i)
    return str(tmp_path / "city")


def config(tmp_path, teacher, images, **kw) -> DistillConfig:
    kw = {"out": str(tmp_path / "run"), "teacher": teacher, "images": (images,), "ngf": 4, "n_blocks": 2,
          "preprocess": Preprocess("crop", 32, 32), "steps": 6, "workers": 0,
          "log_every": 2, "sample_every": 3, "checkpoint_every": 3, **kw}
    return DistillConfig(**kw)


def fidelity(student_path, teacher_path, images) -> float:
    """Mean PSNR of student vs teacher over whole images (not training crops)."""
    student, _ = load_generator(student_path)
    teacher, _ = load_generator(teacher_path)
    x = torch.stack([SourceImages(find_images(Path(images)), Preprocess("none", flip=False))[i] for i in range(6)])
    with torch.no_grad():
        return float(psnr(student(x) * 0.5 + 0.5, teacher(x) * 0.5 + 0.5).mean())


@pytest.mark.slow
def test_student_learns_the_teacher(tmp_path, teacher, images):
    cfg = config(tmp_path, teacher, images, steps=200, losses=DistillLosses(lr=2e-3, lambda_gan=0.1),
                 checkpoint_every=1, sample_every=200, log_every=50)
    distill(cfg, progress_bar=False, stop_after=1)
    before = fidelity(tmp_path / "run" / "city2gta.safetensors", teacher, images)
    distill(cfg, resume=True, progress_bar=False)
    after = fidelity(tmp_path / "run" / "city2gta.safetensors", teacher, images)
    assert after > before + 2, (before, after)  # measured: 18.1 -> 21.0 dB
    grids = sorted((tmp_path / "run" / "samples").glob("step_*.png"))
    assert [p.name for p in grids][-1] == "step_00000200.png"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"l1", "feat", "gan", "D", "S_total"} <= set(records[-2]) and "psnr_samples" in records[-1]


def test_stopped_and_resumed_equals_uninterrupted(tmp_path, teacher, images):
    straight = config(tmp_path, teacher, images, out=str(tmp_path / "straight"))
    distill(straight, progress_bar=False)
    split = config(tmp_path, teacher, images, out=str(tmp_path / "split"))
    distill(split, progress_bar=False, stop_after=4)  # stops between checkpoints: saves at 4
    distill(DistillConfig(out=split.out), resume=True, progress_bar=False)
    a, info_a = read_generator_file(tmp_path / "straight" / "city2gta.safetensors")
    b, info_b = read_generator_file(tmp_path / "split" / "city2gta.safetensors")
    assert info_a == info_b and info_a.arch == "mobile_resnet_generator"
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_a_new_total_equals_a_run_planned_that_long(tmp_path, teacher, images):
    straight = config(tmp_path, teacher, images, out=str(tmp_path / "straight"), steps=6)
    distill(straight, progress_bar=False)
    longer = config(tmp_path, teacher, images, out=str(tmp_path / "longer"), steps=8)
    distill(longer, progress_bar=False, stop_after=2)  # lr still constant under 6 and 8 steps
    resume = ["distill", "--resume", longer.out, "--workers", "0", "--no-progress"]
    short = CliRunner().invoke(cli, [*resume, "--steps", "1"])
    assert short.exit_code == 1 and "the run is at step 2; --steps must be at least that" in short.output
    done = CliRunner().invoke(cli, [*resume, "--steps", "6"])
    assert done.exit_code == 0 and "done: 6 steps" in done.output, done.output
    a, _ = read_generator_file(tmp_path / "straight" / "city2gta.safetensors")
    b, _ = read_generator_file(tmp_path / "longer" / "city2gta.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = CliRunner().invoke(cli, resume)  # the new total is the run's own now
    assert again.exit_code == 0 and "done: 6 steps" in again.output, again.output


def test_resume_refuses_a_changed_teacher(tmp_path, teacher, images):
    distill(config(tmp_path, teacher, images), progress_bar=False, stop_after=1)
    torch.manual_seed(9)
    save_generator(init_weights(ResnetGenerator(8, 2)), teacher, direction="city2gta")
    with pytest.raises(DataError, match="teacher file changed since this run began"):
        distill(DistillConfig(out=str(tmp_path / "run")), resume=True, progress_bar=False)


def test_cli_writes_a_student_named_by_direction_that_every_backend_runs(tmp_path, teacher, images):
    result = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", images, "--out",
                                      str(tmp_path / "cli"), "--arch", "resnet", "--n-blocks", "1",
                                      "--preprocess", "crop", "--crop-size", "32", "--load-size", "32",
                                      "--steps", "2", "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    student = tmp_path / "cli" / "city2gta.safetensors"
    _, info = load_generator(student)
    assert (info.arch, info.ngf, info.n_blocks, info.direction) == ("resnet_generator", 4, 1, "city2gta")
    # (every arch runs alike on every backend: test_students.py)
    again = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", images, "--out", str(tmp_path / "cli")])
    assert again.exit_code == 1 and "already holds a run; continue it with --resume" in again.output


def test_missing_images_is_one_line(tmp_path, teacher):
    result = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", str(tmp_path / "nope"),
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'nope'}: no such folder for the city images"


def test_grid_term_keeps_a_transposed_conv_student_from_drawing_a_grid(teacher):
    """--lambda-grid: the same student, the same steps, with and without the spectral grid term.

    A transposed-conv student learning by L1 alone raised its period-2/4 peaks over its input's
    (measured: the term's value 1.21 -> 2.30 in 40 steps); with the term they fell to nothing (0.016).
    """
    teacher_net, _ = load_generator(teacher)
    x = torch.stack([torch.from_numpy(patches(32, 32, seed=i)).permute(2, 0, 1).float() / 127.5 - 1
                     for i in range(4)])
    prec = choose_precision("off", torch.device("cpu"), CpuCapabilities())
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        d = Distiller(teacher_net, "mobile_resnet_generator", 4, 2,
                      DistillLosses(lambda_feat=0, lambda_gan=0, lambda_grid=weight, lr=2e-3, lambda_l1=1.0),
                      upsample="transpose")
        with torch.no_grad():
            before = float(spectral_grid_loss(d.student(x), x))
            expected = spectral_grid_loss(d.student(x), x) * weight
        losses = distill_step(d, x, prec)
        assert ("grid" in losses) is (weight > 0)
        if weight:
            assert torch.isclose(losses["grid"], expected, rtol=1e-4)
        for _ in range(39):
            distill_step(d, x, prec)
        with torch.no_grad():
            after[weight] = float(spectral_grid_loss(d.student(x), x))
    assert before > 0.5 and after[1.0] < before / 4 and after[0.0] > 10 * after[1.0], (before, after)


def test_grid_term_refuses_crops_too_small_to_measure(tmp_path, teacher, images):
    result = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", images, "--out", str(tmp_path / "r"),
                                      "--preprocess", "crop", "--crop-size", "12", "--lambda-grid", "1",
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: --lambda-grid needs training crops of at least 16 px (--crop-size is "
                                     "12); use larger crops or --lambda-grid 0")
    assert not (tmp_path / "r").exists()


def test_grid_weight_is_saved_with_the_run_and_resumed(tmp_path, teacher, images):
    distill(config(tmp_path, teacher, images, losses=DistillLosses(lambda_grid=0.5)), progress_bar=False, stop_after=2)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["losses"]["lambda_grid"] == 0.5
    distill(DistillConfig(out=str(tmp_path / "run")), resume=True, progress_bar=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("grid" in r for r in records if "l1" in r) and records[-1].get("step") == 6


def _nets(path):
    return torch.load(Path(path) / "checkpoints" / "latest.pt", weights_only=True)["nets"]


def test_init_from_a_distill_run_or_a_student_file_starts_a_fine_tune(tmp_path, teacher, images):
    """--init-from: the student (and from a run its projections) start where the source ended; the
    new run has its own losses, schedule and optimiser, and its first step moves on from there."""
    distill(config(tmp_path, teacher, images, out=str(tmp_path / "a"), losses=DistillLosses(lambda_gan=0.1)),
            progress_bar=False)
    source = _nets(tmp_path / "a")
    result = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", images, "--out", str(tmp_path / "b"),
                                      "--init-from", str(tmp_path / "a"), "--ngf", "4", "--n-blocks", "2",
                                      "--preprocess", "crop", "--crop-size", "32", "--load-size", "32",
                                      "--lambda-gan", "0", "--lambda-grid", "1", "--lr", "1e-9", "--steps", "1",
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"initialised student, projections from {tmp_path / 'a'}" in result.output  # no D: b has none
    tuned = _nets(tmp_path / "b")
    for name in ("student", "projections"):  # one step at lr 1e-9 (Adam: steps of ~lr) from a's weights
        assert all(torch.allclose(tuned[name][k], source[name][k], atol=1e-7) for k in source[name]), name
    assert not all(torch.equal(tuned["student"][k], source["student"][k]) for k in source["student"])
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["init_from"] == str(tmp_path / "a") and saved["losses"]["lambda_grid"] == 1.0

    d = Distiller(load_generator(teacher)[0], "mobile_resnet_generator", 4, 2, DistillLosses())
    assert init_student(d, read_init_source(tmp_path / "a" / "city2gta.safetensors", "city2gta")) == ["student"]
    file_state, _ = read_generator_file(tmp_path / "a" / "city2gta.safetensors")
    assert all(torch.equal(d.student.state_dict()[k], file_state[k].float()) for k in file_state)
    checkpoint = read_init_source(tmp_path / "a" / "checkpoints" / "latest.pt", "city2gta")
    assert init_student(d, checkpoint) == ["student", "projections", "D"]


def test_init_from_takes_the_students_architecture_unless_told_otherwise(tmp_path, teacher, images):
    """A bundled student by name, no student options: lite, ngf 16, 6 blocks, bilinear, as the file
    says (the defaults would have made a mobile ngf 4, 2-block, transpose student that it cannot fill)."""
    result = CliRunner().invoke(cli, ["distill", "--teacher", teacher, "--images", images, "--out", str(tmp_path / "b"),
                                      "--init-from", "city2gta_demo_fast", "--preprocess", "crop", "--crop-size", "32",
                                      "--load-size", "32", "--lambda-gan", "0", "--lr", "1e-9", "--steps", "1",
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "student: lite_mobile_resnet_generator, ngf 16, 6 blocks, bilinear upsampling" in result.output
    assert "initialised student from city2gta_demo_fast" in result.output
    _, info = read_generator_file(tmp_path / "b" / "city2gta.safetensors")
    assert (info.arch, info.ngf, info.n_blocks, info.upsample) == ("lite_mobile_resnet_generator", 16, 6, "bilinear")
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (saved["arch"], saved["ngf"], saved["n_blocks"], saved["upsample"]) == (
        "lite_mobile_resnet_generator", 16, 6, "bilinear")  # resolved: a resume needs no --init-from source
    bundled, _ = read_generator_file(generator_path("city2gta_demo_fast"))
    tuned, _ = read_generator_file(tmp_path / "b" / "city2gta.safetensors")
    assert all(torch.allclose(tuned[k], bundled[k].float(), atol=1e-7) for k in bundled)


def test_init_from_refuses_weights_that_do_not_fit_in_one_line(tmp_path, teacher, images):
    distill(config(tmp_path, teacher, images, out=str(tmp_path / "a")), progress_bar=False, stop_after=1)
    base = ["distill", "--teacher", teacher, "--images", images, "--preprocess", "crop", "--crop-size", "32",
            "--load-size", "32", "--steps", "1", "--workers", "0", "--no-progress"]
    wide = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "a"),
                                    "--ngf", "8", "--n-blocks", "2"])
    assert wide.exit_code == 1 and wide.output.count("\n") == 1, wide.output
    assert wide.output.startswith(f"error: {tmp_path / 'a'}: weights for the student do not fit this run's "
                                  "architecture at ") and "(check --arch / --ngf / --n-blocks / --upsample)" in wide.output
    assert not (tmp_path / "b" / "checkpoints").exists()
    torch.manual_seed(1)
    other = save_generator(init_weights(ResnetGenerator(4, 2)), tmp_path / "g2c.safetensors", direction="gta2city")
    turned = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "c"), "--init-from", str(other), "--arch", "resnet",
                                      "--ngf", "4", "--n-blocks", "2"])
    assert turned.exit_code == 1
    assert turned.output.strip() == f"error: {other}: a gta2city generator; this run distills city2gta"
    both = CliRunner().invoke(cli, ["distill", "--resume", str(tmp_path / "a"), "--init-from", str(tmp_path / "a")])
    assert both.exit_code == 2 and "drop --init-from" in both.output


def test_init_from_refuses_a_training_run(tmp_path, teacher, images):
    from test_trainer import tiny_config

    from gtacity.trainer.loop import train

    train(tiny_config(tmp_path, out="cyclegan"), progress_bar=False, stop_after=1)
    with pytest.raises(CheckpointError, match="a training run's checkpoint, not a distill run's; pass one of its "
                                              r"generator files \(<run>/city2gta.safetensors\) instead"):
        read_init_source(tmp_path / "cyclegan", "city2gta")


@pytest.mark.parametrize("native,expected", [(False, None), (True, torch.bfloat16)])
def test_cpu_autocast_only_where_bf16_is_native(native, expected):
    caps = CpuCapabilities(avx2=True, avx512f=native, avx512_bf16=native)
    assert caps.native_bf16 is native
    assert choose_precision("auto", torch.device("cpu"), caps).dtype is expected
    with pytest.raises(DataError, match="--amp fp16 needs a CUDA GPU"):
        choose_precision("fp16", torch.device("cpu"), caps)


def test_psnr_and_ssim_known_values():
    a = torch.full((1, 3, 16, 16), 0.5)
    assert torch.isclose(psnr(a, a + 0.1), torch.tensor(20.0, dtype=torch.float64))
    assert torch.isclose(ssim(a, a), torch.tensor(1.0, dtype=torch.float64))
    c1 = 0.01**2  # constant images: SSIM is the luminance term only
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert torch.isclose(ssim(a, torch.full_like(a, 0.6)), torch.tensor(expected, dtype=torch.float64))
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    assert ssim(a, noisy) < 0.5
