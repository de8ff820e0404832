"""``gtacity eval realism``: FID/KID against real frames, for a set of translations or every
generator a training run saved (``--run``)."""

from __future__ import annotations

import click

# The options of every command that computes FID/KID (eval realism, eval report), in --help order.
_FEATURE_OPTIONS = [
    click.option("--inception-weights", type=click.Path(), default=None,
                 help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or torch-fidelity's copy).  "
                      "[default: fetched once into the cache]"),
    click.option("--features", default="inception", show_default=True, type=click.Choice(["inception", "standin"]),
                 help="standin: offline, random convolutions with batch norms fitted to 8 real frames "
                      "(NOT FID/KID values)."),
    click.option("--standin-seed", default=0, show_default=True,
                 help="With --features standin: the stand-in network's seed. On a few dozen frames two sets "
                      "can swap places from one seed to the next: trust an order all of 2-3 seeds agree on."),
    click.option("--kid-subsets", default=100, show_default=True, help="Random subsets KID is averaged over."),
    click.option("--kid-subset-size", type=int, default=None,
                 help="Frames per KID subset.  [default: half the smaller set, at most 1000]"),
    click.option("--max-frames", type=int, default=None, help="Use at most this many frames of each set."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
]


def feature_options(command):
    """``command`` with the FID/KID options; pass what they give to :func:`realism_settings`."""
    for option in reversed(_FEATURE_OPTIONS):
        command = option(command)
    return command


def realism_settings(real, quiet, inception_weights, features, kid_subsets, kid_subset_size, max_frames, device,
                     standin_seed=0):
    """The RealismSettings those options (and --real, --quiet) ask for."""
    from gtacity.engine.measure.realism import RealismSettings

    return RealismSettings(real=real, inception_weights=inception_weights, features=features,
                           standin_seed=standin_seed, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size,
                           max_frames=max_frames, device=device, progress=not quiet)


@click.command("realism", epilog="""\b
Examples:
  gtacity eval realism gta5_city/ --real cityscapes/leftImg8bit/val          # FID, KID (+- std)
  gtacity eval realism gta5_city/ --real cityscapes/val --inputs gta5/ --json realism.json   # + artifact check
  gtacity eval realism drive_city.mp4 --real city.mp4 --inception-weights pt_inception-2015-12-05-6726825d.pth
  gtacity eval realism --run runs/exp1 --images gta5/val --real cityscapes/val --best-to best.safetensors
  gtacity eval realism gta5_city/ --real cityscapes/val --features standin   # offline: NOT FID values
  gtacity eval realism gta5_city/ --real cityscapes/val --features standin --standin-seed 1   # another stand-in
""")
@click.argument("generated", required=False, type=click.Path())
@click.option("--real", required=True, type=click.Path(), help="Real frames: an image folder, a video or an image.")
@click.option("--inputs", type=click.Path(), default=None,
              help="The frames GENERATED translated (same order and sizes): adds the checkerboard check.")
@click.option("--run", "run_dir", type=click.Path(), default=None,
              help="A training or distillation run folder: score every generator it saved (needs --images).")
@click.option("--images", type=click.Path(), default=None, help="With --run: held-out frames to translate.")
@click.option("--direction", default="gta2city", show_default=True, metavar="gta2city|city2gta",
              help="With --run: which generators of the run.")
@click.option("--best-to", type=click.Path(dir_okay=False), default=None,
              help="With --run: copy the best generator file here.")
@click.option("--best-by", default="kid", show_default=True, type=click.Choice(["kid", "fid"]),
              help="With --run: which distance picks the best.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="With --run: draw KID, FID and artifact score per step into this PNG.")
@click.option("--backend", default="auto", show_default=True, metavar="auto|torch|openvino",
              help="With --run: inference backend for the translations.")
@click.option("--precision", default="auto", show_default=True, metavar="auto|fp32|fp16|bf16")
@feature_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the numbers here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def eval_realism(generated, real, inputs, run_dir, images, direction, best_to, best_by, plot, backend, precision,
                 inception_weights, features, standin_seed, kid_subsets, kid_subset_size, max_frames, device,
                 json_path, quiet) -> None:
    """FID and KID of GENERATED (translated frames: folder, video or image) against --real frames.

    Frames of any size are resized to 299x299 the clean-fid way (PIL bicubic, antialiased, kept in
    float). KID is the one to trust on a few hundred frames. With --inputs, or --run, each
    translation is also checked for the checkerboard of transposed convolutions.
    """
    from gtacity.engine.measure.realism import RealismConfig, RealismError, evaluate_realism

    settings = realism_settings(real, quiet, inception_weights, features, kid_subsets, kid_subset_size, max_frames,
                                device, standin_seed)
    if run_dir is not None:
        from gtacity.engine.measure.realism_run import RunRealismConfig, evaluate_run

        if generated is not None or images is None:
            raise RealismError("--run takes --images (the held-out frames to translate) and no GENERATED")
        report = evaluate_run(RunRealismConfig(run_dir, images, settings, direction, backend, precision,
                                               best_to, best_by, plot))
    else:
        if generated is None:
            raise RealismError("give GENERATED (translated frames) or --run RUN_DIR --images DIR")
        report = evaluate_realism(RealismConfig(generated, settings, inputs))
    click.echo(report.format())
    if json_path:
        report.write_json(json_path)
