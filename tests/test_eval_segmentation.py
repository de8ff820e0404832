"""``gtacity eval segmentation`` end to end on the labelled synthetic game: both runs, the side-by-side
report and its JSON, TensorBoard scalars, --resume, and one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gtacity.cli import cli
from gtacity.democlip import write_labelled_frames

SIZE = (128, 64)


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    root = tmp_path_factory.mktemp("game")
    write_labelled_frames(root / "train", seconds=4, fps=1, size=SIZE, seed=0)
    write_labelled_frames(root / "raw", seconds=4, fps=1, size=SIZE, seed=2)
    write_labelled_frames(root / "val", seconds=2, fps=1, size=SIZE, seed=1, split="val")
    return root


def segmentation(*args):
    return CliRunner().invoke(cli, ["eval", "segmentation", "-q", *map(str, args)])


def test_compare_side_by_side_json_tensorboard_and_resume(game, tmp_path):
    # --compare: other images, the same label maps (here: the training drive's labels for both).
    labels = game / "train" / "gtFine"
    args = ["--train", game / "train" / "leftImg8bit", "--labels", labels, "--val", game / "val",
            "--compare", game / "train" / "leftImg8bit", "--recipe", "cpu-tiny", "--steps", 2,
            "--out", tmp_path / "out", "--json", tmp_path / "report.json"]
    first = segmentation(*args)
    assert first.exit_code == 0, first.output
    assert "class           train  compare   diff" in first.output and "mIoU" in first.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["kind"] == "segmentation" and report["recipe"]["name"] == "cpu-tiny" and report["recipe"]["steps"] == 2
    for run in ("train", "compare"):
        assert report[run]["n_images"] == 2 and report[run]["n_train_images"] == 4 and report[run]["steps"] == 2
        assert set(report[run]) >= {"miou", "classes", "categories", "pixel_accuracy", "fwiou", "weights_origin"}
        assert (tmp_path / "out" / run / "segmenter.safetensors").is_file()
    # the same recipe, seed, steps and labels on the same images: the same segmenter, difference 0
    assert report["miou_difference"] == 0.0 and report["train"]["miou"] == report["compare"]["miou"]
    assert json.loads((tmp_path / "out" / "segmentation.json").read_text()) == report
    events = EventAccumulator(str(tmp_path / "out" / "train"))
    events.Reload()
    assert {"loss/cross_entropy", "val/miou"} <= set(events.Tags()["scalars"])
    assert events.Scalars("val/miou")[0].value == pytest.approx(report["train"]["miou"])

    again = segmentation(*args, "--resume")
    assert again.exit_code == 0 and "already trained and scored" in again.output
    assert json.loads((tmp_path / "report.json").read_text()) == report
    changed = segmentation(*args[:-2], "--seed", 1, "--resume")
    assert changed.exit_code == 1 and "was started with another seed (0)" in changed.stderr.strip()
    fresh = segmentation(*args[:-2])
    assert fresh.exit_code == 1 and "already holds segmenter runs; continue them with --resume" in fresh.stderr


@pytest.mark.parametrize("case, message", [
    ("val", "not a Cityscapes tree (it needs leftImg8bit/ and gtFine/"),
    ("recipe", "unknown segmenter recipe 'huge'; choose from cpu-tiny, deeplabv3-mobilenet, deeplabv3-resnet50"),
    ("labels", "have no label map in"),
    ("weights", "--backbone-weights is for the DeepLabV3 recipes"),
])
def test_bad_input_is_one_line(game, tmp_path, case, message):
    args = {"--train": game / "train", "--val": game / "val", "--recipe": "cpu-tiny", "--steps": 1,
            "--out": tmp_path / "out"}
    if case == "val":
        args["--val"] = game / "train" / "leftImg8bit"
    elif case == "recipe":
        args["--recipe"] = "huge"
    elif case == "labels":
        args["--labels"] = game / "val" / "gtFine"
    else:
        args["--backbone-weights"] = game / "nothing.pth"
    result = segmentation(*[v for kv in args.items() for v in kv])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
