"""Every code block of README.md that can run on a CPU runs, as written, and succeeds.

A block that cannot (it needs a GPU, a cluster, a download, hours of training, or it is not a
command) carries ``<!-- not run by tests/test_readme.py: REASON -->`` on the line before it; exactly
those are skipped, with their reason. Each block runs in a fresh folder holding tiny inputs under
the names the README uses (a one-second 128x72 ``drive.mp4``, a few 64x48 images, the bundled
generators under the names of a user's files), so the whole file runs in minutes: a bash block as
one ``bash -e`` script, a python block as one script. A file a block makes itself with
``gtacity demo-clip`` is not provided.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gtacity.checkpoint import bundled_generators, load_generator
from gtacity.democlip import write_demo_clip

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUNNABLE = ("bash", "python")


def _blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, reason not run or None) for every fenced block of the README."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), match.group(2), reason.group(1) if reason else None))
    return found


BLOCKS = _blocks()


def _image(path: Path, seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "P":  # a GTA5-style palette label map: road (7) and car (26) by palette index
        labels = Image.fromarray(np.where(rng.random((48, 64)) < 0.5, 7, 26).astype(np.uint8), "P")
        labels.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        labels.save(path)
        return
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The tiny inputs every block finds under the README's names."""
    root = tmp_path_factory.mktemp("readme-inputs")
    write_demo_clip(root / "drive.mp4", seconds=1, size=(128, 72), fps=25, seed=0)
    write_demo_clip(root / "city.mp4", seconds=1, size=(128, 72), fps=25, seed=1)
    (root / "clips").mkdir()
    write_demo_clip(root / "clips" / "a.mp4", seconds=0.4, size=(64, 64), fps=25, seed=2)
    for i in range(2):
        _image(root / "frames" / "seq" / f"{i:03d}.png", i)
    _image(root / "shot.png", 5)
    for i in range(4):
        _image(root / "gta5" / "images" / f"{i:05d}.png", 10 + i)
        _image(root / "gta5" / "labels" / f"{i:05d}.png", 20 + i, mode="P")
    shipped = bundled_generators()
    net, _ = load_generator(shipped["gta2city_demo"])
    torch.save(net.state_dict(), root / "latest_net_G_A.pth")  # the official layout: a plain state dict
    (root / "runs" / "exp1").mkdir(parents=True)
    shutil.copy(shipped["gta2city_demo_fast"], root / "runs" / "exp1" / "gta2city.safetensors")
    shutil.copy(shipped["gta2city_demo_fast"], root / "gen.safetensors")
    return root


def test_every_block_is_run_or_says_why_not():
    for line, language, _, reason in BLOCKS:
        assert reason is not None or language in RUNNABLE, (
            f"README.md line {line}: a ```{language} block is not a command this test can run; put "
            "<!-- not run by tests/test_readme.py: REASON --> on the line before it")
    assert sum(reason is None for *_, reason in BLOCKS) >= 8


@pytest.mark.parametrize(("line", "language", "code", "reason"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, language, code, reason, inputs, tmp_path):
    if reason is not None:
        pytest.skip(f"README.md line {line}: {reason}")
    work = tmp_path / "work"
    made_here = set(re.findall(r"gtacity demo-clip (\S+)", code))
    shutil.copytree(inputs, work, ignore=lambda folder, names: [n for n in names if n in made_here])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # `--shard auto` reads a Kubernetes indexed Job's variables: run it as that Job's first pod
           "JOB_COMPLETION_INDEX": "0", "GTACITY_SHARD_COUNT": "16"}
    command = ["bash", "-e", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"README.md line {line} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_what_the_quick_start_writes_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    names = ["drive.mp4", "drive_city.mp4", "out.mp4"]  # the Quick start and the Python example's outputs
    done = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.stdout.split() == names


def test_translate_help_lists_every_backend_it_takes():
    from click.testing import CliRunner

    from gtacity.cli import cli
    from gtacity.engine.backends import BACKENDS

    result = CliRunner().invoke(cli, ["translate", "--help"])
    assert result.exit_code == 0
    assert f"--backend {'|'.join(['auto', *BACKENDS])}" in " ".join(result.output.split())
