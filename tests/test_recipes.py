"""`gtacity train` on a CPU: the CPU-sized recipe by name, the advice and the measured ETA at start,
and the resume hint of a torchrun run."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_trainer import make_domains

from gtacity.cli import cli
from gtacity.trainer.recipes import RECIPES, Pace, cpu_advice, describe_duration

CARD = Path(__file__).resolve().parent.parent / "gtacity" / "models" / "MODEL_CARD.md"


def _card_command() -> list[str]:
    """The `gtacity train` command of the model card's "Training" section, as arguments."""
    text = CARD.read_text().split("## Training", 1)[1]
    match = re.search(r"^\s+gtacity train .*?(?=\n\s*\n)", text, re.MULTILINE | re.DOTALL)
    return shlex.split(match.group(0).replace("\\\n", " "))[2:]


def test_cpu_demo_is_exactly_the_model_cards_recipe():
    args = _card_command()
    options = {}
    for name, value in zip(args[::2], args[1::2]):
        if name not in ("--gta", "--city", "--out"):  # data and run folder: the user's own
            options[name.removeprefix("--").replace("-", "_")] = value
    assert options == {k: str(v) for k, v in RECIPES["cpu-demo"].items()}


def test_recipe_sets_the_run_and_the_first_steps_give_an_eta(tmp_path):
    gta, city = make_domains(tmp_path / "data", n_gta=3, n_city=3, size=64)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--gta", str(gta), "--city", str(city), "--out", str(out),
                                      "--recipe", "cpu-demo", "--workers", "0", "--device", "cpu", "--amp", "off",
                                      "--load-size", "64", "--crop-size", "32", "--stop-after", "5",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["ngf"], config["n_blocks"], config["epochs"], config["epochs_decay"]) == (32, 6, 64, 64)
    assert config["preprocess"]["mode"] == "scale_width_and_crop"
    assert (config["checkpoint_every"], config["sample_every"], config["log_every"]) == (125, 250, 25)
    assert (config["upsample"], config["preprocess"]["load_size_max"]) == ("bilinear", 768)
    step = config["step"]
    assert (step["lambda_grid"], step["grid_term"], step["d_antialias"]) == (10.0, "phase", "blurpool")
    # given on the command line (to keep this test fast): they win over the recipe
    assert (config["workers"], config["preprocess"]["load_size"], config["preprocess"]["crop_size"]) == (0, 64, 32)
    # 3 images per domain, 128 epochs: 384 steps in all; steps 2-4 measured, 380 left after step 4
    assert re.search(r"measured \d+\.\d\d s a step \(steps 2-4\): 380 steps left, about \d", result.output)


def test_a_gpu_sized_run_on_the_cpu_names_the_cpu_recipe(tmp_path):
    gta, city = make_domains(tmp_path / "data", n_gta=2, n_city=2, size=40)
    result = CliRunner().invoke(cli, ["train", "--gta", str(gta), "--city", str(city), "--out", str(tmp_path / "r"),
                                      "--ngf", "8", "--n-blocks", "2", "--ndf", "8", "--load-size", "40",
                                      "--crop-size", "32", "--workers", "0", "--device", "cpu", "--amp", "off",
                                      "--stop-after", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert ("training on the CPU: ngf 8, 2 blocks, 32 px crops is a GPU-sized recipe" in result.output
            and "--recipe cpu-demo is the CPU-sized one" in result.output)
    assert f"continue with: gtacity train --resume {tmp_path / 'r'}" in result.output


def test_the_advice_is_left_out_where_the_run_is_cpu_sized():
    recipe = RECIPES["cpu-demo"]
    assert cpu_advice(recipe["ngf"], recipe["n_blocks"], recipe["crop_size"]) is None
    assert "--recipe cpu-demo" in cpu_advice(64, 9, 256)


def test_recipe_and_resume_do_not_mix(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "--recipe", "cpu-demo"])
    assert result.exit_code == 2 and "drop --recipe" in result.output


def test_pace_measures_after_a_warm_up_step():
    pace = Pace(start_step=10, total=1010, measured=2)
    assert [pace.step_done() for _ in range(2)] == [None, None]
    line = pace.step_done()
    assert line.startswith("measured ") and "(steps 12-13): 997 steps left" in line
    assert pace.step_done() is None  # said once
    assert describe_duration(3 * 3600 + 125) == "3 h 02 min" and describe_duration(250) == "4 min 10 s"


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_a_torchrun_run_says_how_to_resume_with_torchrun(tmp_path):
    gta, city = make_domains(tmp_path / "data", n_gta=4, n_city=4, size=40)
    out = tmp_path / "ddp"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    done = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", port, "-m", "gtacity", "train", "--gta", str(gta),
         "--city", str(city), "--out", str(out), "--ngf", "8", "--n-blocks", "2", "--ndf", "8",
         "--load-size", "40", "--crop-size", "32", "--workers", "0", "--device", "cpu", "--amp", "off",
         "--stop-after", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"continue with: torchrun --nproc-per-node 2 -m gtacity train --resume {out}" in done.stdout
