"""The segmentation commands of ``gtacity eval``: ``miou`` (the official Cityscapes score) and
``segmentation`` (train a segmenter on translated images, score it on Cityscapes).

Registered on the ``eval`` group by :mod:`gtacity.cli`; the rule holds: parse -> one frozen config
-> ONE call.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from gtacity.files import written_whole


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, appearing whole or not at all."""
    with written_whole(path) as partial:
        partial.write_text(json.dumps(data, indent=2) + "\n")


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
