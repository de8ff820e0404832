"""``gtacity eval report``: one self-contained HTML page of a run's or some generators' translations,
their FID/KID, artifact scores, flicker and segmentation results."""

from __future__ import annotations

import click

from gtacity.cli_realism import feature_options, realism_settings


@click.command("report", epilog="""\b
Examples:
  gtacity eval report runs/exp1 --images gta5/val --real cityscapes/leftImg8bit/val -o report.html
  gtacity eval report gta2city_demo gta2city_demo_fast --images gta5/ --real city/ -o demo.html --video drive.mp4
  gtacity eval report runs/exp1 --images gta5/val --real city/val -o r.html --segmentation runs/seg/segmentation.json
  gtacity eval report gen.safetensors --back city2gta.safetensors --images gta5/ --real city/ -o r.html \\
      --features standin     # offline: NOT FID/KID values
""")
@click.argument("generators", nargs=-1, required=True, metavar="RUN_OR_GENERATORS...")
@click.option("--images", required=True, type=click.Path(),
              help="Held-out source-domain frames (folder, video or image): all scored, --frames of them shown.")
@click.option("--real", required=True, type=click.Path(), help="Real target-domain frames: folder, video or image.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The page to write (.html).")
@click.option("--frames", "n_frames", default=4, show_default=True, help="Frames shown per generator.")
@click.option("--video", type=click.Path(), default=None,
              help="A source-domain clip: the flicker curve of each translation of it (a run: of its best).")
@click.option("--segmentation", type=click.Path(dir_okay=False), default=None,
              help="A JSON of gtacity eval miou --json or eval segmentation: its class IoU table.")
@click.option("--direction", default="gta2city", show_default=True, metavar="gta2city|city2gta",
              help="With a run folder: which of its generators.")
@click.option("--back", default=None, help="Generator that translates back for the cycle reconstruction.  "
              "[default: the run's of the same step, else the bundled demo of the other direction]")
@click.option("--backend", default="auto", show_default=True, metavar="auto|torch|openvino")
@click.option("--precision", default="auto", show_default=True, metavar="auto|fp32|fp16|bf16")
@feature_options
@click.option("--thumb-width", default=320, show_default=True, help="Width in pixels of the shown frames.")
@click.option("--title", default="gtacity translation report", show_default=True, help="The page's heading.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_report(generators, images, real, output, n_frames, video, segmentation, direction, back, features,
                standin_seed, inception_weights, kid_subsets, kid_subset_size, max_frames, backend, precision, device,
                thumb_width, title, quiet) -> None:
    """One HTML page to judge translations: RUN_OR_GENERATORS is a training run folder (every generator
    it saved) or generator files / bundled names (gta2city_demo ...).

    For --frames fixed frames of --images: input | translation | cycle reconstruction | 1:1 detail,
    per generator; FID/KID against --real (and the untranslated inputs as a baseline), their curves
    over a run's steps, the checkerboard scores, flicker with --video, and --segmentation's IoUs.
    The images are embedded: the page is one file and fetches nothing.
    """
    from gtacity.engine import ReportConfig, build_report

    settings = realism_settings(real, quiet, inception_weights, features, kid_subsets, kid_subset_size, max_frames,
                                device, standin_seed)
    summary = build_report(ReportConfig(tuple(generators), images, output, settings, n_frames, direction, back,
                                        video, segmentation, backend, precision, thumb_width, title))
    click.echo(summary.line())
