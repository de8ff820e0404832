"""Training: the paper's losses, exact resume, data-parallel replicas, learning on toy domains."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import socket
import threading

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from torch import nn

from gtacity.checkpoint import load_generator
from gtacity.cli import cli
from gtacity.cli_learn import D_ANTIALIAS_CHOICES, GRID_TERM_CHOICES
from gtacity.nets import D_ANTIALIAS, Blur, PatchDiscriminator, init_weights
from gtacity.trainer.data import DataError, Preprocess, unaligned_files
from gtacity.trainer.loop import TrainConfig, lr_factor, train
from gtacity.trainer.step import GRID_TERMS, CycleGAN, Precision, StepConfig, train_step


def make_domains(root, n_gta=6, n_city=8, size=48, seed=0):
    """Two toy domains: shapes on reddish backgrounds ("gta") and bluish ones ("city")."""
    rng = np.random.default_rng(seed)
    for name, n, tint in (("gta", n_gta, (200, 60, 40)), ("city", n_city, (40, 80, 200))):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.full((size, size, 3), tint, np.uint8)
            img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
            x, y, r = (int(v) for v in rng.integers(8, size - 8, 3))
            cv2.circle(img, (x, y), r // 2, (230, 230, 230), -1)
            cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return root / "gta", root / "city"


def tiny_config(tmp_path, out="run", **kw) -> TrainConfig:
    gta, city = make_domains(tmp_path / "data")
    base = dict(out=str(tmp_path / out), gta=(str(gta),), city=(str(city),), ngf=8, n_blocks=2, ndf=8,
                preprocess=Preprocess("crop", 48, 32), epochs=2, epochs_decay=1, workers=0,
                checkpoint_every=1000, log_every=1, sample_every=1000, amp="off")
    return TrainConfig(**{**base, **kw})


def test_one_step_matches_the_paper_by_hand():
    torch.manual_seed(0)
    model = CycleGAN(8, 2, 8, StepConfig())
    before = copy.deepcopy(model)
    gta, city = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    losses = train_step(model, gta, city, Precision())

    G, Fn, D_city, D_gta = before.G_gta2city, before.G_city2gta, before.D_city, before.D_gta
    mse = lambda p, t: ((p - t) ** 2).mean()  # noqa: E731
    with torch.no_grad():
        fake_city, fake_gta = G(gta), Fn(city)
        expected = {
            "G_gta2city": mse(D_city(fake_city), 1.0),
            "G_city2gta": mse(D_gta(fake_gta), 1.0),
            "cycle_gta": 10 * (Fn(fake_city) - gta).abs().mean(),
            "cycle_city": 10 * (G(fake_gta) - city).abs().mean(),
            "idt_gta2city": 5 * (G(city) - city).abs().mean(),
            "idt_city2gta": 5 * (Fn(gta) - gta).abs().mean(),
        }
        expected["G_total"] = sum(expected.values())
        # The discriminators are updated after the generators, on fakes of the pre-update generators
        # (an empty pool returns its input), so they score those fakes with their own old weights.
        expected["D_city"] = 0.5 * (mse(D_city(city), 1.0) + mse(D_city(fake_city), 0.0))
        expected["D_gta"] = 0.5 * (mse(D_gta(gta), 1.0) + mse(D_gta(fake_gta), 0.0))
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # Both optimisers stepped: every net moved.
    for name in ("G_gta2city", "G_city2gta", "D_city", "D_gta"):
        w0 = next(getattr(before, name).parameters())
        assert not torch.equal(w0, next(getattr(model, name).parameters())), name


def test_the_grid_loss_is_the_period_4_pattern_by_hand_and_joins_the_generator_loss():
    from gtacity.trainer.losses import grid_loss, grid_pattern

    torch.manual_seed(0)
    x = torch.rand(2, 3, 33, 34) * 2 - 1  # sides not multiples of 4: cropped to 32 x 32
    phases = torch.stack([torch.stack([x[..., p:32:4, q:32:4].mean(dim=(2, 3)) for q in range(4)], -1)
                          for p in range(4)], -2)  # (2, 3, 4, 4)
    torch.testing.assert_close(grid_pattern(x), phases - phases.mean(dim=(2, 3), keepdim=True))
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(17, 17)[:33, :34] * 0.01
    assert grid_loss(x, x) == 0
    torch.testing.assert_close(grid_loss(x + checker, x), torch.tensor(0.01))
    assert grid_loss(x + 0.5, x) < 1e-6  # a change of colour is no grid

    model = CycleGAN(8, 2, 8, StepConfig(lambda_grid=10.0, grid_term="phase"))
    before = copy.deepcopy(model)
    gta, city = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    losses = train_step(model, gta, city, Precision())
    with torch.no_grad():
        expected = {"grid_gta2city": 10 * grid_loss(before.G_gta2city(gta), gta),
                    "grid_city2gta": 10 * grid_loss(before.G_city2gta(city), city)}
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-7, msg=name)
    assert "grid_gta2city" not in train_step(CycleGAN(8, 2, 8, StepConfig()), gta, city, Precision())
    # A run saved before the option existed resumes with it off; one saved before the spectral term
    # resumes with the phase means it trained with; a new run's config keeps its choice.
    assert TrainConfig.from_dict({"out": "run", "step": {"lambda_cycle": 10.0}}).step.lambda_grid == 0.0
    assert TrainConfig.from_dict({"out": "run", "step": {"lambda_grid": 10.0}}).step.grid_term == "phase"
    assert GRID_TERM_CHOICES == tuple(GRID_TERMS)  # what `train --grid-term` offers
    new = TrainConfig(out="run", step=StepConfig(lambda_grid=10.0))
    assert new.step.grid_term == "spectral" and TrainConfig.from_dict(new.to_dict()).step.grid_term == "spectral"


def test_the_spectral_grid_term_refuses_crops_too_small_to_measure(tmp_path):
    cfg = tiny_config(tmp_path, preprocess=Preprocess("crop", 48, 12), step=StepConfig(lambda_grid=1.0))
    with pytest.raises(DataError, match=r"at least 16 px \(--crop-size is 12\)"):
        train(cfg, progress_bar=False)
    assert not (tmp_path / "run").exists()


def _modulated_grid(h, w, amp):
    """A +-amp period-4 checkerboard whose sign flips between the left and right halves."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checker = torch.where(((yy // 2) + (xx // 2)) % 2 == 0, 1.0, -1.0)
    return amp * checker * torch.where(xx < w // 2, 1.0, -1.0)


def test_the_spectral_grid_term_sees_a_grid_the_phase_means_miss_and_not_one_rounding_erases():
    from gtacity.trainer.losses import grid_loss, spectral_grid_loss

    torch.manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 136, 136) * 2 - 1, 9, stride=1)  # (2, 3, 128, 128)
    grid = _modulated_grid(128, 128, 4 / 127.5)  # +-4 grey levels, sign flipping halfway
    assert grid_loss(smooth + grid, smooth) < 1e-6  # its phase means cancel: the first term is blind
    assert spectral_grid_loss(smooth + grid, smooth) > 0.3  # its 4 of the 15 bins stand out
    assert spectral_grid_loss(smooth, smooth) == 0
    assert spectral_grid_loss(smooth * 0.6 + 0.2, smooth) < 0.05  # colour and contrast are no grid
    faint = _modulated_grid(128, 128, 0.1 / 127.5)  # a tenth of a grey level: rounding erases it
    assert spectral_grid_loss(smooth + faint, smooth) < 0.05

    g = torch.zeros(128, 128).add(grid).requires_grad_(True)  # the grid as a learnable offset
    opt = torch.optim.Adam([g], lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        loss = spectral_grid_loss(smooth + g, smooth)
        loss.backward()
        opt.step()
    assert spectral_grid_loss(smooth + g.detach(), smooth) < 0.1 * spectral_grid_loss(smooth + grid, smooth)

    # Flattening a translation is no way out: the term does not change with the output's contrast
    # (with the floor fixed, a quarter of the contrast took a third off this loss).
    out = smooth + _modulated_grid(128, 128, 1.5 / 127.5)
    k = torch.tensor(1.0, requires_grad=True)
    mean = out.mean(dim=(-2, -1), keepdim=True)
    loss = spectral_grid_loss(mean + k * (out - mean), smooth)
    loss.backward()
    assert loss > 0.05 and abs(k.grad) < 1e-3 * loss
    for scale in (0.25, 0.5, 2.0):
        torch.testing.assert_close(spectral_grid_loss(mean + scale * (out - mean), smooth), loss.detach(), rtol=1e-3, atol=0)

    model = CycleGAN(8, 2, 8, StepConfig(lambda_grid=0.5))
    before = copy.deepcopy(model)
    gta, city = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    losses = train_step(model, gta, city, Precision())
    with torch.no_grad():
        expected = 0.5 * spectral_grid_loss(before.G_city2gta(city), city)
    torch.testing.assert_close(losses["grid_city2gta"], expected, rtol=1e-4, atol=1e-6)


def _same_weights(into: PatchDiscriminator, source: PatchDiscriminator) -> PatchDiscriminator:
    """``into`` with ``source``'s tensors, matched in order (the kinds index them differently)."""
    into.load_state_dict(dict(zip(into.state_dict(), source.state_dict().values(), strict=True)))
    return into


def test_a_blurred_discriminator_does_not_see_a_period_2_grid_and_resumes_as_it_was_saved():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 48) * 0.2
    plain = PatchDiscriminator(8)
    blurred = _same_weights(PatchDiscriminator(8, antialias="blur"), plain)
    with torch.no_grad():
        assert (plain(x + checker) - plain(x)).abs().max() > 0.05  # the lever a generator learns to pull
        torch.testing.assert_close(blurred(x + checker), blurred(x), rtol=0, atol=1e-5)
        assert blurred(x).shape == plain(x).shape
        # A smooth change still moves the score: the blur takes the grid away, not the picture.
        assert (blurred(x + 0.2 * torch.linspace(-1, 1, 96)) - blurred(x)).abs().max() > 0.05
    # Same tensors under other indices: no kind loads into another.
    blurpool = PatchDiscriminator(8, antialias="blurpool")
    for a, b in itertools.permutations([plain, blurred, blurpool], 2):
        with pytest.raises(RuntimeError):
            a.load_state_dict(b.state_dict())

    model = CycleGAN(8, 2, 8, StepConfig(d_antialias="blur"))
    assert all(any(isinstance(m, Blur) for m in d.modules()) for d in model.discriminators())
    assert not any(isinstance(m, Blur) for m in CycleGAN(8, 2, 8, StepConfig()).D_city.modules())
    # A run saved before the option existed resumes with it off; one saved when it was a yes/no, as
    # it was saved; one saved with a kind, with that kind.
    assert TrainConfig.from_dict({"out": "run", "step": {}}).step.d_antialias == "off"
    assert TrainConfig.from_dict({"out": "run", "step": {"d_antialias": True}}).step.d_antialias == "blur"
    assert TrainConfig.from_dict({"out": "run", "step": {"d_antialias": False}}).step.d_antialias == "off"
    assert TrainConfig.from_dict({"out": "run", "step": {"d_antialias": "blurpool"}}).step.d_antialias == "blurpool"
    with pytest.raises(ValueError, match="unknown d_antialias 'maybe'"):
        StepConfig(d_antialias="maybe")


def test_a_blurpool_discriminator_sees_detail_but_not_its_phase():
    torch.manual_seed(0)
    # A smooth picture (as a photo is, next to a grid), the paper's initialisation (as training's).
    x = nn.functional.interpolate(torch.rand(2, 3, 8, 12) * 2 - 1, size=(64, 96), mode="bicubic")
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 48) * 0.2
    texture = torch.randn(2, 3, 64, 96)
    texture = texture - nn.functional.avg_pool2d(nn.functional.pad(texture, (1, 1, 1, 1), mode="reflect"), 3, 1)
    texture *= checker.std() / texture.std()  # fine random detail with the grid's energy
    plain = init_weights(PatchDiscriminator(8))
    blurpool = _same_weights(PatchDiscriminator(8, antialias="blurpool"), plain)

    def moved(d, a, b):
        return float((d(a) - d(b)).abs().mean())

    with torch.no_grad():
        assert blurpool(x).shape == plain(x).shape
        # The grid's phase (the grid against the grid moved by one pixel): the plain discriminator's
        # strided conv tells them apart (the lever); blurpool's scores hardly move.
        assert moved(plain, x + checker, x - checker) > 0.05
        assert moved(blurpool, x + checker, x - checker) < moved(plain, x + checker, x - checker) / 50
        # Unlike "blur", detail is seen: a grid, and random detail of the same energy, about alike.
        grid, detail = moved(blurpool, x + checker, x), moved(blurpool, x + texture, x)
        assert grid > 10 * moved(blurpool, x + checker, x - checker) and detail > grid / 3
        blurred = _same_weights(PatchDiscriminator(8, antialias="blur"), plain)
        assert moved(blurred, x + texture, x) < detail / 3
    # Its first conv is the plain one's run at every position: every other output is the plain conv's.
    dense = nn.Sequential(*list(blurpool.model)[:2])
    torch.testing.assert_close(dense(x)[..., ::2, ::2], plain.model[0](x), rtol=1e-5, atol=1e-6)


def test_the_cli_offers_exactly_the_discriminator_kinds_the_networks_have():
    assert D_ANTIALIAS_CHOICES == D_ANTIALIAS
    train_command = cli.commands["train"]

    def parsed(*args):
        return train_command.make_context("train", ["--out", "run", *args]).params["d_antialias"]

    assert (parsed(), parsed("--d-antialias"), parsed("--d-antialias", "blurpool")) == ("off", "blur", "blurpool")
    assert parsed("--d-antialias", "--lambda-grid", "1") == "blur"  # the value alone, before another option


def test_cycle_noise_is_added_to_each_translation_before_it_is_translated_back():
    torch.manual_seed(0)
    model = CycleGAN(8, 2, 8, StepConfig(cycle_noise=0.05))
    before = copy.deepcopy(model)
    gta, city = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    torch.manual_seed(1)
    losses = train_step(model, gta, city, Precision())
    torch.manual_seed(1)
    noise_city, noise_gta = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)  # drawn in this order
    G, Fn = before.G_gta2city, before.G_city2gta
    with torch.no_grad():
        expected = {"cycle_gta": 10 * (Fn(G(gta) + 0.05 * noise_city) - gta).abs().mean(),
                    "cycle_city": 10 * (G(Fn(city) + 0.05 * noise_gta) - city).abs().mean(),
                    "G_gta2city": ((before.D_city(G(gta)) - 1) ** 2).mean()}  # D judges the clean one
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_lr_schedule_is_constant_then_linear_to_zero():
    assert lr_factor(0, 10, 2, 2) == 1.0 and lr_factor(20, 10, 2, 2) == 1.0
    assert lr_factor(30, 10, 2, 2) == pytest.approx(0.5)
    assert lr_factor(40, 10, 2, 2) == 0.0


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_config(tmp_path, "full")
    full = train(cfg, progress_bar=False)
    part = tiny_config(tmp_path, "part")
    train(part, progress_bar=False, stop_after=5)  # stops mid-epoch (8 items per epoch)
    resumed = train(TrainConfig(out=part.out), resume=True, progress_bar=False)
    assert full.step == resumed.step == 24
    a, b = ([r for r in read_metrics(run.run_dir) if "G_total" in r] for run in (full, resumed))
    assert [r["step"] for r in b] == list(range(1, 25))
    for ra, rb in zip(a, b):
        for key in ("G_total", "D_city", "D_gta", "cycle_gta", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), (ra["step"], key)
    for name, p in full.model.G_gta2city.state_dict().items():
        torch.testing.assert_close(p, resumed.model.G_gta2city.state_dict()[name], rtol=1e-5, atol=1e-6)


def test_run_folder_holds_generators_translate_can_use(tmp_path):
    result = train(tiny_config(tmp_path, sample_every=12, checkpoint_every=12), progress_bar=False)
    for direction in ("gta2city", "city2gta"):
        net, info = load_generator(result.run_dir / f"{direction}.safetensors", direction=direction)
        assert (info.ngf, info.n_blocks, info.trained_resolution) == (8, 2, 32)
    assert sorted(p.name for p in (result.run_dir / "samples").iterdir()) == [
        "step_00000012.png", "step_00000024.png"]
    record = [r for r in read_metrics(result.run_dir) if "G_total" in r][-1]
    assert {"G_gta2city", "G_city2gta", "cycle_gta", "cycle_city", "idt_gta2city", "idt_city2gta",
            "D_city", "D_gta", "lr", "step", "epoch"} <= set(record)
    assert list(result.run_dir.glob("events.out.tfevents.*"))


def test_translation_moves_toward_the_target_domain(tmp_path):
    cfg = tiny_config(tmp_path, epochs=40, epochs_decay=0, step=StepConfig(lr=1e-3), log_every=50)
    gta_images = torch.stack([
        torch.from_numpy(cv2.imread(str(p))[..., ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1
        for p in sorted((tmp_path / "data" / "gta").glob("*.png"))
    ])
    torch.manual_seed(0)
    result = train(cfg, progress_bar=False)  # 320 steps
    with torch.no_grad():
        out = result.model.G_gta2city(gta_images)
    blue_minus_red = lambda x: (x[:, 2] - x[:, 0]).mean().item()  # noqa: E731
    # gta is red (blue - red ~ -1.2 in [-1, 1] units), city is blue (+1.3).
    assert blue_minus_red(gta_images) < -1.0
    assert blue_minus_red(out) > 0.5, blue_minus_red(out)


def test_bad_image_is_skipped_with_a_warning(tmp_path, caplog):
    cfg = tiny_config(tmp_path, epochs=1, epochs_decay=0)
    (tmp_path / "data" / "gta" / "000.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        result = train(cfg, progress_bar=False)
    assert result.step == 8
    assert any("skipping unreadable image" in r.message and "000.png" in r.message for r in caplog.records)


def test_unaligned_layout_reads_sides_from_names_or_asks(tmp_path):
    for side, names in (("A", ["aachen_000000_000019_leftImg8bit.png"]), ("B", ["00001.png", "00002.png"])):
        (tmp_path / f"train{side}").mkdir()
        for n in names:
            cv2.imwrite(str(tmp_path / f"train{side}" / n), np.zeros((8, 8, 3), np.uint8))
    gta, city, side = unaligned_files(tmp_path)
    assert side == "B" and [p.name for p in gta] == ["00001.png", "00002.png"] and len(city) == 1
    (tmp_path / "trainA" / "aachen_000000_000019_leftImg8bit.png").rename(tmp_path / "trainA" / "street.png")
    (tmp_path / "trainB" / "00001.png").rename(tmp_path / "trainB" / "frame.png")
    with pytest.raises(DataError, match="pass --gta-side A or --gta-side B"):
        unaligned_files(tmp_path)
    assert unaligned_files(tmp_path, "B")[2] == "B"


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["train", "--gta", str(tmp_path / "nope"), "--city", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.stderr.strip().count("\n") == 0
    assert "nope: no such folder for the gta images" in r.stderr
    r = runner.invoke(cli, ["train", "--resume", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "no training checkpoint here" in r.stderr


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig, results: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(cfg, progress_bar=False)
    torch.save({k: v.clone() for k, v in result.model.state_dict().items()}, f"{results}/rank{rank}.pt")


def test_two_process_gloo_training_keeps_replicas_equal(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, epochs_decay=1, checkpoint_every=4, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, cfg, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # 8 items per epoch, 4 per process: 2 epochs -> 8 steps, and the replicas did learn.
    steps = [r["step"] for r in read_metrics(tmp_path / "run")]
    assert steps[-1] == 8
    torch.manual_seed(cfg.seed)
    initial = CycleGAN(8, 2, 8, StepConfig()).state_dict()
    assert not torch.equal(a["G_gta2city.model.1.weight"], initial["G_gta2city.model.1.weight"])


def test_results_logged_after_a_run_is_closed_leave_no_tensorboard_thread_behind(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from gtacity.trainer.logs import RunLogger

    before = set(threading.enumerate())
    RunLogger(tmp_path).results(7, {"miou": 0.25})  # as `eval segmentation` logs into a finished run
    assert set(threading.enumerate()) - before == set()  # its writer thread ended with its file
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 7, "val/miou": 0.25}
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val/miou")] == [(7, 0.25)]
