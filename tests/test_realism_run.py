"""``gtacity eval realism --run``: a tiny real training run, every saved generator scored, best marked."""

from __future__ import annotations

import json

import cv2
import pytest
from click.testing import CliRunner
from test_trainer import make_domains

from gtacity.cli import cli
from gtacity.engine.measure.realism import RealismError, RealismSettings
from gtacity.engine.measure.realism_run import RunRealismConfig, evaluate_run, run_generators


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    gta, city = make_domains(root / "data")
    result = CliRunner().invoke(cli, [
        "train", "--gta", str(gta), "--city", str(city), "--out", str(root / "run"), "--ngf", "8",
        "--n-blocks", "2", "--ndf", "8", "--preprocess", "crop", "--load-size", "48", "--crop-size", "32",
        "--epochs", "1", "--epochs-decay", "1", "--workers", "0", "--checkpoint-every", "8", "--amp", "off",
    ])
    assert result.exit_code == 0, result.output
    return root / "run", gta, city


def test_train_keeps_one_generator_per_checkpoint(tiny_run):
    run, _, _ = tiny_run
    assert [step for step, _ in run_generators(run, "gta2city")] == [8, 16]


@pytest.mark.slow
def test_run_table_marks_the_best_draws_it_and_copies_it(tiny_run, tmp_path):
    run, gta, city = tiny_run
    best, plot, out = tmp_path / "best.safetensors", tmp_path / "curves.png", tmp_path / "run.json"
    args = ["eval", "realism", "--run", str(run), "--images", str(gta), "--real", str(city), "--features",
            "standin", "--max-frames", "3", "--kid-subsets", "5", "--backend", "torch", "--best-to", str(best),
            "--plot", str(plot), "--json", str(out), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.strip().split(" ")[0] in ("8", "16")]
    assert len(rows) == 2 and sum("<- best (KID)" in r for r in rows) == 1
    assert "artifacts" in lines[1] and "NOT FID/KID values" in result.stdout
    data = json.loads(out.read_text())
    assert [r["step"] for r in data["rows"]] == [8, 16]
    best_row = min(data["rows"], key=lambda r: r["kid"])
    assert data["best_step"] == best_row["step"]
    assert best.read_bytes() == (run / "generators" / f"step_{best_row['step']:08d}_gta2city.safetensors").read_bytes()
    assert all(r["artifacts"]["frames"] == 3 for r in data["rows"])
    image = cv2.imread(str(plot))
    assert image is not None and image.shape == (400, 720, 3) and image.std() > 10
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and again.stderr.strip().splitlines() == [
        f"error: {best} exists; remove it or choose another --best-to"]


def test_a_folder_without_generators_is_one_line(tmp_path):
    settings = RealismSettings(real=tmp_path)
    with pytest.raises(RealismError, match=r"no generators/step_\*_gta2city.safetensors; point --run at"):
        evaluate_run(RunRealismConfig(tmp_path, tmp_path, settings))
