"""Segmenter training for ``gtacity eval segmentation``: labels paired and mapped right, recipes
built, the synthetic game learnt, resume exact after a real SIGKILL, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from gtacity.cityscapes import PALETTE, evaluate_folder, to_label_ids
from gtacity.democlip import write_labelled_frames
from gtacity.trainer.data import DataError
from gtacity.trainer.seg_data import LabelledImages, cityscapes_pairs, labelled_pairs, read_train_ids
from gtacity.trainer.seg_recipes import build_segmenter, recipe
from gtacity.trainer.segment import SegmentConfig, load_segmenter, predict, score_segmenter, train_segmenter

# Small enough for 2 busy cores: frames 160x80, trained at that width on 80x80 crops.
TINY = recipe("cpu-tiny", train_width=160, eval_width=160, crop=(80, 80), batch_size=8, steps=12)
SIZE = (160, 80)


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    """The labelled synthetic game: a training drive (seed 0) and a held-out one (seed 1)."""
    root = tmp_path_factory.mktemp("game")
    write_labelled_frames(root / "train", seconds=24, fps=1, size=SIZE, seed=0)
    write_labelled_frames(root / "val", seconds=6, fps=1, size=SIZE, seed=1, split="val")
    return root


def gta5_tree(root: Path, n: int = 3) -> Path:
    """A GTA5-style tree: images/NAME.png and labels/NAME.png as palette PNGs (index = label id)."""
    palette = [0] * 768
    rng = np.random.default_rng(0)
    for i in range(n):
        ids = rng.choice(np.array([7, 8, 11, 23, 26, 0, 30], np.uint8), size=(40, 64))
        label = Image.fromarray(ids, mode="P")
        label.putpalette(palette[:] if i else [v for rgb in PALETTE.tolist() for v in rgb] + [0] * (768 - 57))
        (root / "labels").mkdir(parents=True, exist_ok=True)
        label.save(root / "labels" / f"{i:05d}.png")
        (root / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(root / "images" / f"{i:05d}.png"), rng.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    return root


def test_gta5_palette_labels_read_by_index_and_mapped_to_train_ids(tmp_path):
    root = gta5_tree(tmp_path / "gta5")
    pairs = labelled_pairs(root)
    assert [(i.name, lab.name) for i, lab in pairs] == [(f"{k:05d}.png",) * 2 for k in range(3)]
    ids = np.asarray(Image.open(pairs[0][1]))
    train = read_train_ids(pairs[0][1], (64, 40))
    # by palette index, whatever the palette's colours: road 0, sidewalk 1, building 2, sky 10, car 13
    expected = {7: 0, 8: 1, 11: 2, 23: 10, 26: 13, 0: 255, 30: 255}
    assert all((train[ids == k] == v).all() for k, v in expected.items())
    # A half-size label map is scaled nearest-neighbour: no value it did not have appears.
    Image.fromarray(ids[::2, ::2]).save(tmp_path / "half.png")
    half = read_train_ids(tmp_path / "half.png", (64, 40))
    assert half.shape == (40, 64) and set(np.unique(half)) <= set(expected.values())
    Image.fromarray(ids[:, :20]).save(tmp_path / "other.png")
    with pytest.raises(DataError, match="belongs to another image"):
        read_train_ids(tmp_path / "other.png", (64, 40))


def test_crops_keep_only_label_values_that_were_there(game):
    rec = dataclasses.replace(TINY, scale=(0.6, 1.7), crop=(96, 96))
    data = LabelledImages(labelled_pairs(game / "train", split="train"), rec, seed=3)
    image, labels = data[(0, 5)]
    assert image.shape == (3, 96, 96) and labels.shape == (96, 96) and labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= {0, 1, 2, 8, 9, 10, 13, 255}
    assert torch.equal(data[(0, 5)][1], labels) and not torch.equal(data[(1, 5)][0], image)


def test_image_folder_with_labels_folder_and_missing_labels(game, tmp_path):
    images = game / "train" / "leftImg8bit"
    pairs = labelled_pairs(images, game / "train" / "gtFine")
    assert len(pairs) == 24 and all(lab.name.endswith("_gtFine_labelIds.png") for _, lab in pairs)
    assert len(labelled_pairs(game / "train", game / "train" / "gtFine")) == 24  # labels inside: not inputs
    cv2.imwrite(str(tmp_path / "lonely.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"1 of 1 images under .* have no label map .*expected lonely.png"):
        labelled_pairs(tmp_path, game / "train" / "gtFine")


def test_cpu_recipe_learns_the_synthetic_game(game, tmp_path):
    rec = dataclasses.replace(TINY, steps=40, batch_size=4, lr=1e-2)
    run = train_segmenter(SegmentConfig(out=str(tmp_path / "run"), train=str(game / "train"), recipe=rec,
                                        log_every=20), progress_bar=False)
    held_out = score_segmenter(run.net, rec, game / "val", "val", progress_bar=False)
    # Chance: a prediction that draws each pixel's class uniformly from the 19.
    rng = np.random.default_rng(0)
    pred_dir = tmp_path / "chance"
    for image, gt in cityscapes_pairs(game / "val", "val"):
        pred_dir.mkdir(exist_ok=True)
        guess = rng.integers(0, 19, (SIZE[1], SIZE[0])).astype(np.uint8)
        Image.fromarray(to_label_ids(guess)).save(pred_dir / gt.name.replace("_gtFine_labelIds", ""))
    chance = evaluate_folder(pred_dir, game / "val" / "gtFine")
    assert held_out.n_images == 6 and held_out.miou > 3 * chance.miou and held_out.miou > 0.4, held_out.format()
    assert held_out.classes["road"] > 0.8 and held_out.classes["sky"] > 0.8


def test_segmenter_file_holds_its_recipe(game, tmp_path):
    run = train_segmenter(SegmentConfig(out=str(tmp_path / "run"), train=str(game / "train"),
                                        recipe=dataclasses.replace(TINY, steps=2)), progress_bar=False)
    net, rec, meta = load_segmenter(tmp_path / "run" / "segmenter.safetensors")
    assert rec == dataclasses.replace(TINY, steps=2) and meta["training_step"] == "2" and meta["origin"] == "random init"
    image = cv2.cvtColor(cv2.imread(str(next((game / "val" / "leftImg8bit").rglob("*.png")))), cv2.COLOR_BGR2RGB)
    assert np.array_equal(predict(net, image, rec), predict(run.net, image, rec))
    with pytest.raises(DataError, match="not a gtacity segmenter file"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_segmenter(tmp_path / "other.safetensors")


def test_deeplab_recipe_trains_a_step_and_takes_backbone_weights(tmp_path):
    from torchvision.models import mobilenet_v3_large

    rec = recipe("deeplabv3-mobilenet", batch_size=2, crop=(64, 64))
    net, origin = build_segmenter(rec)
    assert origin.startswith("random init") and net(torch.zeros(2, 3, 64, 64)).shape == (2, 19, 64, 64)
    imagenet = mobilenet_v3_large()  # stands in for ImageNet weights: same layout
    torch.save(imagenet.state_dict(), tmp_path / "backbone.pth")
    net, origin = build_segmenter(rec, tmp_path / "backbone.pth")
    assert origin == f"ImageNet backbone from {tmp_path / 'backbone.pth'}"
    assert torch.equal(net.net.backbone["0"][0].weight, imagenet.features[0][0].weight)
    torch.save({"nope": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(DataError, match="not the ImageNet weights"):
        build_segmenter(rec, tmp_path / "wrong.pth")


# Long enough that a quiet machine cannot finish between the first checkpoint and the kill.
_TOTAL = 96
_RESUMABLE = dataclasses.replace(TINY, batch_size=4, steps=_TOTAL)
_TRAIN = textwrap.dedent(f"""
    import sys
    from gtacity.trainer.seg_recipes import Recipe
    from gtacity.trainer.segment import SegmentConfig, train_segmenter
    rec = Recipe.from_dict({_RESUMABLE.to_dict()!r})
    train_segmenter(SegmentConfig(out=sys.argv[1], train=sys.argv[2], recipe=rec, checkpoint_every=2, log_every=1),
                    resume=sys.argv[3] == "resume", progress_bar=False)
""")


def test_resume_after_sigkill_is_exact(game, tmp_path):
    def run(mode: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _TRAIN, str(tmp_path / "killed"), str(game / "train"), mode],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    victim = run("new")
    ckpt = tmp_path / "killed" / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # in the steps after a checkpoint
    assert victim.wait() == -signal.SIGKILL
    reached = torch.load(ckpt, weights_only=True)["progress"]["step"]
    assert 2 <= reached < _TOTAL
    resumed = run("resume")
    whole = train_segmenter(SegmentConfig(out=str(tmp_path / "whole"), train=str(game / "train"), recipe=_RESUMABLE,
                                          checkpoint_every=2, log_every=1), progress_bar=False).net
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    again, _, meta = load_segmenter(tmp_path / "killed" / "segmenter.safetensors")
    assert meta["training_step"] == str(_TOTAL)
    for (name, a), b in zip(whole.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == _TOTAL and reached + 1 in steps


@pytest.mark.cuda
def test_deeplab_on_cuda_trains_with_amp_and_channels_last(game, tmp_path):
    rec = recipe("deeplabv3-mobilenet", train_width=160, eval_width=160, crop=(80, 80), batch_size=4, steps=4)
    run = train_segmenter(SegmentConfig(out=str(tmp_path / "run"), train=str(game / "train"), recipe=rec,
                                        device="cuda", log_every=1), progress_bar=False)
    assert run.precision.dtype in (torch.bfloat16, torch.float16)
    conv = run.net.net.backbone["0"][0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    losses = [json.loads(line)["cross_entropy"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert score_segmenter(run.net, rec, game / "val", "val", run.precision, progress_bar=False).n_images == 6
