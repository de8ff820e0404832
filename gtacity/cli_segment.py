"""The segmentation commands of ``gtacity eval``: ``miou`` (the official Cityscapes score) and
``segmentation`` (train a segmenter on translated images, score it on Cityscapes).

Registered on the ``eval`` group by :mod:`gtacity.cli`; the rule holds: parse -> one frozen config
-> ONE call.
"""

from __future__ import annotations

import click

from gtacity.files import write_json


@click.command("miou", epilog="""\b
Examples:
  gtacity eval miou predictions/ --gt cityscapes/gtFine/val               # label-ID PNGs
  gtacity eval miou predictions/ --gt cityscapes/gtFine/val --train-ids   # train-ID PNGs (0..18, 255)
  gtacity eval miou predictions/ --gt cityscapes/gtFine/val --json miou.json
""")
@click.argument("pred", type=click.Path())
@click.option("--gt", required=True, type=click.Path(),
              help="Folder of ground truth *_gtFine_labelIds.png (searched recursively), e.g. cityscapes/gtFine/val.")
@click.option("--train-ids", is_flag=True, help="Predictions hold train IDs (0..18, 255 = none) instead of label IDs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the scores here (miou, classes, categories, pixel_accuracy, fwiou, n_images, confusion).")
def eval_miou(pred, gt, train_ids, json_path) -> None:
    """The official Cityscapes pixel-level scores of the prediction PNGs under PRED.

    Each prediction is matched to the ground truth by the frame id its name starts with
    (aachen_000000_000019_*.png). Prints each class IoU, mIoU, category IoU, pixel accuracy and
    fwIoU; the numbers are cityscapesScripts' evalPixelLevelSemanticLabeling's (without iIoU).
    """
    from gtacity.cityscapes import evaluate_folder

    result = evaluate_folder(pred, gt, train_ids=train_ids)
    click.echo(result.format())
    if json_path:
        write_json(json_path, result.to_json())


@click.command("segmentation", epilog="""\b
Examples:
  gtacity eval segmentation --train gta5_city/ --val cityscapes/ --compare gta5/   # translated vs raw GTA5
  gtacity eval segmentation --train frames_city/ --labels gta5/labels --val cityscapes/ --recipe deeplabv3-resnet50
  gtacity eval segmentation --train gta5_city/ --val cityscapes/ --out runs/seg --resume   # after a kill
  gtacity demo-clip synth/ --labels --seconds 40 --fps 1 && \\
    gtacity eval segmentation --train synth/ --val synth/ --val-split train --steps 300   # the synthetic game
  tensorboard --logdir runs/eval-segmentation
""")
@click.option("--train", "train", required=True, type=click.Path(),
              help="Images to train on: a GTA5 tree (images/ labels/), a Cityscapes tree, or a folder with --labels.")
@click.option("--labels", type=click.Path(), default=None,
              help="Label maps of --train (and --compare): GTA5 palette PNGs or gtFine labelIds, same names.")
@click.option("--val", required=True, type=click.Path(), help="Cityscapes tree to score on (leftImg8bit/ gtFine/).")
@click.option("--val-split", default="val", show_default=True, help="Split of --val scored (if it has split folders).")
@click.option("--compare", type=click.Path(), default=None,
              help="Other images with the same labels (e.g. the raw GTA5 frames): same recipe, seed and steps.")
@click.option("--recipe", default="auto", show_default=True,
              metavar="auto|cpu-tiny|deeplabv3-mobilenet|deeplabv3-resnet50",
              help="Segmenter recipe (auto: deeplabv3-resnet50 on CUDA, cpu-tiny otherwise).")
@click.option("--steps", type=int, default=None, help="Optimiser steps.  [default: the recipe's]")
@click.option("--out", default="runs/eval-segmentation", show_default=True, type=click.Path(),
              help="Folder of the runs (train/, compare/) and segmentation.json.")
@click.option("--resume", is_flag=True, help="Continue the runs in --out where they stopped (same settings).")
@click.option("--backbone-weights", type=click.Path(), default=None,
              help="ImageNet backbone .pth for the DeepLabV3 recipes.  [default: torchvision's cache, else from scratch]")
@click.option("--seed", default=0, show_default=True)
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]),
              help="Mixed precision (auto: bf16 where native on the CPU; bf16, else fp16 on CUDA).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--checkpoint-every", default=500, show_default=True, help="Steps between checkpoints.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the report here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_segmentation(resume, json_path, quiet, **opts) -> None:
    """Does a translation help segmentation? Train a segmenter on --train's images with their labels,
    score it on Cityscapes (official mIoU), and with --compare on the other images as well.

    The protocol of CyCADA (Hoffman et al. 2018): a segmenter trained on translated GTA5 frames
    with their GTA5 labels, scored on Cityscapes val over 19 classes. Writes OUT/segmentation.json;
    each run folder holds segmenter.safetensors, its checkpoint and TensorBoard logs.
    """
    from gtacity.trainer.seg_eval import SegEvalConfig, evaluate_segmentation

    report = evaluate_segmentation(SegEvalConfig(**opts), resume=resume, progress_bar=not quiet)
    click.echo(report.format())
    if json_path:
        write_json(json_path, report.to_json())
