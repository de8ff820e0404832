"""``gtacity average``: the mean of a run's step generators, and what it refuses."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from gtacity.averaging import AverageConfig, AverageError, average_generators, average_run
from gtacity.checkpoint import CheckpointError, load_generator, save_generator, step_generator_path
from gtacity.cli import cli
from gtacity.nets import build_generator

STEPS = (10, 20, 30)


def _net(seed: int, ngf: int = 4, upsample: str = "bilinear") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("resnet_generator", ngf, 1, upsample)


@pytest.fixture
def run(tmp_path):
    """A run folder as `gtacity train` leaves it: a generator per direction per kept step."""
    root = tmp_path / "run"
    for direction in ("gta2city", "city2gta"):
        for i, step in enumerate(STEPS):
            save_generator(_net(i + (10 if direction == "city2gta" else 0)), step_generator_path(root, step, direction),
                           direction=direction, trained_resolution=64, extra={"training_step": str(step)})
        save_generator(_net(99), root / f"{direction}.safetensors", direction=direction)
    return root


def _state(path) -> dict[str, torch.Tensor]:
    net, _ = load_generator(path)
    return net.state_dict()


def test_average_is_the_elementwise_mean(run):
    paths = [step_generator_path(run, s, "gta2city") for s in STEPS]
    state, info = average_generators(paths)
    states = [_state(p) for p in paths]
    assert info.upsample == "bilinear" and info.direction == "gta2city"
    for key, value in state.items():
        expected = (states[0][key].double() + states[1][key].double() + states[2][key].double()) / 3
        torch.testing.assert_close(value, expected.float(), rtol=0, atol=1e-7)
    conv = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    assert not torch.equal(state[conv], states[0][conv])


def test_run_range_writes_both_directions_with_their_steps(run, tmp_path):
    out = tmp_path / "avg"
    written = average_run(AverageConfig(run, out, from_step=20))
    assert [(w.direction, w.steps) for w in written] == [("gta2city", (20, 30)), ("city2gta", (20, 30))]
    for direction in ("gta2city", "city2gta"):
        path = out / f"{direction}.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        assert meta["averaged_steps"] == "20,30" and meta["training_step"] == "30"
        assert meta["direction"] == direction and meta["upsample"] == "bilinear" and meta["trained_resolution"] == "64"
        a, b = (_state(step_generator_path(run, s, direction)) for s in (20, 30))
        net, _ = load_generator(path, direction=direction)
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2, rtol=0, atol=1e-6)
        with torch.no_grad():
            assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_to_step_and_one_direction(run, tmp_path):
    written = average_run(AverageConfig(run, tmp_path / "avg", 0, to_step=20, directions=("city2gta",)))
    assert [(w.direction, w.steps) for w in written] == [("city2gta", (10, 20))]
    assert not (tmp_path / "avg" / "gta2city.safetensors").exists()


def test_a_distill_run_averages_its_one_direction(tmp_path):
    run = tmp_path / "student"
    for step in STEPS:
        save_generator(_net(step), step_generator_path(run, step, "city2gta"), direction="city2gta")
    written = average_run(AverageConfig(run, tmp_path / "avg", 0))
    assert [(w.direction, w.steps) for w in written] == [("city2gta", STEPS)]
    with pytest.raises(AverageError, match="no generators/step_\\*_gta2city.safetensors"):
        average_run(AverageConfig(run, tmp_path / "avg2", 0, directions=("gta2city",)))


@pytest.mark.parametrize(("cfg", "message"), [
    (dict(from_step=30), r"1 gta2city generator\(s\) between steps 30 and 30 \(the run kept steps 10-30\)"),
    (dict(from_step=20, to_step=10), "--to-step 10 is before --from-step 20"),
])
def test_ranges_without_two_generators_are_refused(run, tmp_path, cfg, message):
    with pytest.raises(AverageError, match=message):
        average_run(AverageConfig(run, tmp_path / "avg", **cfg))
    assert not (tmp_path / "avg").exists()


def test_never_writes_over_the_run_or_an_existing_file(run, tmp_path):
    before = (run / "gta2city.safetensors").read_bytes()
    with pytest.raises(AverageError, match="that is the run folder itself"):
        average_run(AverageConfig(run, run, 10))
    assert (run / "gta2city.safetensors").read_bytes() == before
    out = tmp_path / "avg"
    out.mkdir()
    (out / "city2gta.safetensors").write_bytes(b"mine")
    with pytest.raises(AverageError, match="city2gta.safetensors exists; pass --overwrite"):
        average_run(AverageConfig(run, out, 10))
    # checked before anything is written: gta2city (first in order) is not left behind alone
    assert sorted(p.name for p in out.iterdir()) == ["city2gta.safetensors"]
    average_run(AverageConfig(run, out, 10, overwrite=True))
    assert load_generator(out / "city2gta.safetensors")[1].direction == "city2gta"


def test_generators_of_different_shapes_are_refused(run, tmp_path):
    save_generator(_net(5, ngf=8), step_generator_path(run, 40, "gta2city"), direction="gta2city")
    with pytest.raises(CheckpointError, match="step_00000040_gta2city.safetensors: ngf 8 differs from"):
        average_run(AverageConfig(run, tmp_path / "avg", 10))
    save_generator(_net(5, upsample="transpose"), step_generator_path(run, 40, "gta2city"), direction="gta2city")
    with pytest.raises(CheckpointError, match="upsample transpose differs from"):
        average_run(AverageConfig(run, tmp_path / "avg", 10))


def test_cli_prints_what_it_wrote_and_refuses_in_one_line(run, tmp_path):
    out = tmp_path / "avg"
    result = CliRunner().invoke(cli, ["average", str(run), "--from-step", "20", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{out / 'gta2city.safetensors'}: mean of 2 gta2city generators, steps 20-30" in result.output
    result = CliRunner().invoke(cli, ["average", str(tmp_path / "nothing"), "--from-step", "0", "-o", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: no such run folder; point it at a gtacity train or distill run"]
