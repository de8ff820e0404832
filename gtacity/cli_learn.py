"""The learning commands of the ``gtacity`` CLI: ``train``, ``data download`` and ``distill``.

Kept apart from :mod:`gtacity.cli` (which registers them on the ``gtacity`` group) so that each
file stays readable; the same rule holds: parse -> one frozen config -> ONE call into
:mod:`gtacity.trainer`.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from gtacity.trainer.recipes import RECIPES

# gtacity.nets.UPSAMPLES, spelled out so that the CLI loads without torch (tests/test_upsample.py checks).
UPSAMPLE_CHOICES = ("transpose", "resize", "bilinear")
# gtacity.nets.D_ANTIALIAS, the same way (tests/test_trainer.py checks).
D_ANTIALIAS_CHOICES = ("off", "blur", "blurpool")
GRID_TERM_CHOICES = ("spectral", "phase")  # trainer.step.GRID_TERMS, without importing torch


def _run_options(workers: int):
    """The options every training-style run takes (train, distill): precision, device, data
    workers, seed, the checkpoint/log/sample cadence and time-boxing."""
    options = [
        click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "off"]),
                     help="Mixed precision (auto: bf16 only where the CPU/GPU computes it natively, else fp32 "
                          "on CPU; bf16, else fp16 with grad scaling, on CUDA)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--workers", default=workers, show_default=True, help="DataLoader worker processes."),
        click.option("--seed", default=0, show_default=True),
        click.option("--checkpoint-every", default=1000, show_default=True, help="Steps between checkpoints."),
        click.option("--log-every", default=50, show_default=True, help="Steps between metrics lines."),
        click.option("--sample-every", default=500, show_default=True, help="Steps between sample grids."),
        click.option("--stop-after", type=int, default=None,
                     help="Stop (with a checkpoint) after this many steps; --resume continues. For time-boxed jobs."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


@click.command(epilog="""\b
Examples:
  gtacity train --data data/cityscapes2gta --out runs/exp1 --gta-side B   # trainA/ trainB/ layout
  gtacity train --gta GTA5/ --city cityscapes/ --out runs/exp1      # raw trees or image folders
  gtacity train --resume runs/exp1                                  # continue exactly where it stopped
  gtacity train --gta GTA5/ --city cityscapes/ --out runs/cpu --recipe cpu-demo   # sized for a CPU
  gtacity train --data data/cityscapes2gta --out runs/hd \\
      --preprocess scale_width_and_crop --load-size 1024 --crop-size 360
  torchrun --nproc-per-node 4 -m gtacity train --data ... --out runs/ddp   # data-parallel
  tensorboard --logdir runs/exp1
""")
@click.option("--gta", "gta", multiple=True, type=click.Path(), help="GTA5 images: a GTA5 tree (images/) or any image folder. Repeatable.")
@click.option("--city", "city", multiple=True, type=click.Path(), help="Cityscapes images: a Cityscapes tree (leftImg8bit/train) or any image folder. Repeatable.")
@click.option("--data", type=click.Path(), help="A CycleGAN unaligned folder (trainA/ trainB/), e.g. the cityscapes2gta archive.")
@click.option("--gta-side", type=click.Choice(["A", "B"]), default=None,
              help="Which letter of --data (and of an official --init-from run) is GTA5.  [default: read from the file names]")
@click.option("--out", type=click.Path(), help="Run folder for checkpoints, generators, logs and samples.")
@click.option("--resume", type=click.Path(), help="Continue the run in this folder with its saved settings.")
@click.option("--init-from", type=click.Path(), help="Start from weights: a gtacity run/checkpoint, a folder holding gta2city.safetensors and city2gta.safetensors, or an official CycleGAN run folder. Transpose generators warm-start a --upsample resize or bilinear run.")
@click.option("--ngf", default=64, show_default=True, help="Generator width.")
@click.option("--n-blocks", default=9, show_default=True, help="Residual blocks in each generator.")
@click.option("--ndf", default=64, show_default=True, help="Discriminator width.")
@click.option("--upsample", type=click.Choice(UPSAMPLE_CHOICES), default="transpose", show_default=True,
              help="Generator decoder: stride-2 transposed convs (the paper's; official runs), or x2 resize then "
                   "a 3x3 conv, nearest (resize) or bilinear (bilinear: the least period-2/4 pattern).")
@click.option("--preprocess", default="resize_and_crop", show_default=True,
              type=click.Choice(["resize_and_crop", "scale_width_and_crop", "scale_width", "crop", "none"]))
@click.option("--load-size", default=286, show_default=True, help="Resize target (side, or width for scale_width*).")
@click.option("--load-size-max", type=int, default=None,
              help="Multi-scale crops: draw each image's resize target from --load-size..this.  [default: fixed]")
@click.option("--crop-size", default=256, show_default=True, help="Square training crop.")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips.")
@click.option("--batch-size", default=1, show_default=True, help="Images per domain per step (per process).")
@click.option("--epochs", default=100, show_default=True, help="Epochs at the initial learning rate.")
@click.option("--epochs-decay", default=100, show_default=True, help="Epochs of linear decay to zero.")
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--beta1", default=0.5, show_default=True)
@click.option("--lambda-cycle", default=10.0, show_default=True, help="Weight of the cycle-consistency loss.")
@click.option("--lambda-identity", default=0.5, show_default=True, help="Identity loss weight, relative to --lambda-cycle.")
@click.option("--lambda-grid", default=0.0, show_default=True,
              help="Weight of a loss on each translation's period-2/4 pattern against its input's (not in the "
                   "paper; 0 = off): against the period-2/4 grid training can teach even a resize decoder.")
@click.option("--grid-term", type=click.Choice(GRID_TERM_CHOICES), default="spectral", show_default=True,
              help="What --lambda-grid weighs: spectral = each period-2/4 peak of the translation's spectrum over "
                   "its input's, as the artifact check measures them; phase = the crop's uniform period-4 phase "
                   "means (the first version).")
@click.option("--cycle-noise", default=0.0, show_default=True,
              help="Std of Gaussian noise (in [-1, 1] units) added to each translation before it is translated "
                   "back for the cycle loss (not in the paper; 0 = off): takes away the faint channel a "
                   "generator can hide the reconstruction in.")
@click.option("--d-antialias", type=click.Choice(D_ANTIALIAS_CHOICES), default="off", show_default=True, is_flag=False,
              flag_value="blur",
              help="How the discriminators downsample (not in the paper): a strided conv folds a period-2 grid onto "
                   "a constant, a lever generators learn to pull. blur (the value alone gives it): a blur before each "
                   "strided conv, blind to grids and to fine detail alike; blurpool: dense conv, rectifier, blur, "
                   "subsample: detail counts, its phase does not.")
@click.option("--pool-size", default=50, show_default=True, help="Generated images remembered for the discriminators.")
@click.option("--recipe", type=click.Choice(sorted(RECIPES)), default=None,
              help="Preset sizes and schedule; options given on the command line still win. cpu-demo: the bundled "
                   "demo's main run on a CPU (ngf 32, 6 blocks, bilinear, 128 px crops of frames scaled to "
                   "384-768 px, blurpool discriminators, phase grid term at 10, 64+64 epochs).")
@_run_options(workers=2)
def train(resume, no_progress, stop_after, recipe, **opts) -> None:
    """Train GTA5 <-> Cityscapes generators (CycleGAN) and export both directions.

    Writes, in the run folder: gta2city.safetensors and city2gta.safetensors (what
    `gtacity translate --weights` takes), checkpoints/latest.pt, metrics.jsonl,
    TensorBoard logs and samples/*.png.

    The defaults are the paper's recipe, sized for a GPU (20-27 s a step on a 2-core CPU). On a CPU,
    --recipe cpu-demo is the bundled demo generators' main run; the first steps are
    timed and the expected duration printed.
    """
    from gtacity.trainer.data import Preprocess
    from gtacity.trainer.loop import TrainConfig
    from gtacity.trainer.loop import train as run_training
    from gtacity.trainer.step import StepConfig

    if resume:
        given = [k for k in ("out", "data", "init_from") if opts[k]] + [k for k in ("gta", "city") if opts[k]]
        given += ["recipe"] * bool(recipe)
        if given:
            raise click.UsageError(f"--resume continues with the run's saved settings; drop --{given[0].replace('_', '-')}")
        result = run_training(TrainConfig(out=resume), resume=True, progress_bar=not no_progress, stop_after=stop_after)
        _int8_models(result)
        return
    if not opts["out"]:
        raise click.UsageError("--out is required (the run folder), or --resume a run")
    if recipe:
        source = click.get_current_context().get_parameter_source
        opts.update({k: v for k, v in RECIPES[recipe].items() if source(k) is not ParameterSource.COMMANDLINE})
    cfg = TrainConfig(
        out=opts["out"], gta=opts["gta"], city=opts["city"], data=opts["data"],
        gta_side=opts["gta_side"],
        ngf=opts["ngf"], n_blocks=opts["n_blocks"], ndf=opts["ndf"], upsample=opts["upsample"],
        preprocess=Preprocess(opts["preprocess"], opts["load_size"], opts["crop_size"], not opts["no_flip"],
                              opts["load_size_max"]),
        step=StepConfig(opts["lambda_cycle"], opts["lambda_identity"], opts["lr"], opts["beta1"], opts["pool_size"],
                        opts["lambda_grid"], opts["cycle_noise"], opts["d_antialias"], opts["grid_term"]),
        batch_size=opts["batch_size"], epochs=opts["epochs"], epochs_decay=opts["epochs_decay"],
        amp=opts["amp"], device=opts["device"], workers=opts["workers"], seed=opts["seed"],
        checkpoint_every=opts["checkpoint_every"], log_every=opts["log_every"],
        sample_every=opts["sample_every"], init_from=opts["init_from"],
    )
    _int8_models(run_training(cfg, progress_bar=not no_progress, stop_after=stop_after))


def _int8_models(result) -> None:
    """A finished run's generators get their int8 models (``--precision int8``), calibrated on the
    run's own training frames of their input domain, where this CPU runs int8 and NNCF is installed."""
    import importlib.util

    from gtacity import hardware

    if not result.files or importlib.util.find_spec("nncf") is None or importlib.util.find_spec("openvino") is None:
        return
    if hardware.emulation_reason(hardware.cpu_capabilities(), "int8"):
        return
    from gtacity.checkpoint import load_generator
    from gtacity.engine.exporters import int8
    from gtacity.engine.exporters.cache import cache_root
    from gtacity.errors import GtacityError

    for direction, domain in (("gta2city", "gta"), ("city2gta", "city")):
        net, _info = load_generator(result.run_dir / f"{direction}.safetensors")
        try:
            _model, check = int8.for_generator(net, int8.frames_of_images(result.files[domain]),
                                               cache_root(None, "openvino"))
        except GtacityError as e:  # training succeeded; int8 is an extra
            click.echo(f"{direction}: no int8 model kept ({e})", err=True)
            continue
        click.echo(f"{direction}: {check.line()}", err=True)


@click.group()
def data() -> None:
    """Get the datasets the trainer learns from."""


@data.command("download", epilog="""\b
Examples:
  gtacity data download cityscapes2gta                      # into data/cityscapes2gta/
  gtacity data download cityscapes2gta --to /mnt/big/data   # a disk with room
  gtacity data download cityscapes2gta --url http://127.0.0.1:8000/cityscapes2gta.zip   # a mirror
  gtacity data download cityscapes2gta --force --no-keep-zip   # fetch again, drop the .zip after
""")
@click.argument("name")
@click.option("--to", "to", default="data/", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives NAME.zip and the unpacked NAME/ folder.")
@click.option("--url", default=None, help="Download from this mirror instead of the authors' server.")
@click.option("--force", is_flag=True, help="Download and unpack again even when the dataset is already there.")
@click.option("--keep-zip/--no-keep-zip", default=True, show_default=True, help="Keep the .zip after unpacking it.")
def data_download(name: str, to: str, url: str | None, force: bool, keep_zip: bool) -> None:
    """Download dataset NAME (known: cityscapes2gta), unpack it and check its layout.

    An interrupted download resumes where it stopped when the same command runs again.
    Prints, per folder (trainA, trainB, testA, testB), the image count and the domain
    (gta or city) where the file names show it.
    """
    from gtacity.trainer.download import download_dataset

    layout = download_dataset(name, to, url=url, force=force, keep_zip=keep_zip, progress=True)
    for line in layout.summary_lines():
        click.echo(line)


@click.command(epilog="""\b
Examples:
  gtacity distill --teacher runs/exp1/gta2city.safetensors --images GTA5/images --out runs/fast
  gtacity distill --teacher runs/exp1/city2gta.safetensors --images cityscapes/ --out runs/fast_c \\
      --arch resnet --ngf 16 --n-blocks 9
  gtacity distill --resume runs/fast                 # continue exactly where it stopped
  gtacity distill --resume runs/fast --steps 40000   # ... and run longer than planned
  gtacity distill --teacher runs/exp1/gta2city.safetensors --images GTA5/images --out runs/fast_ft \\
      --init-from runs/fast --lr 2e-5 --steps 2000 --lambda-grid 1   # fine-tune a student
  gtacity translate drive.mp4 -o out.mp4 --weights runs/fast/gta2city.safetensors
""")
@click.option("--teacher", type=click.Path(), help="Generator file to imitate (its direction is the student's).")
@click.option("--images", multiple=True, type=click.Path(),
              help="Images of the teacher's source domain (GTA5 for gta2city, Cityscapes for city2gta). Repeatable.")
@click.option("--out", type=click.Path(), help="Run folder: <direction>.safetensors, checkpoints, logs, samples.")
@click.option("--resume", type=click.Path(), help="Continue the run in this folder with its saved settings.")
@click.option("--arch", type=click.Choice(["mobile", "lite", "resnet"]), default=None,
              help="Student: depthwise-separable residual blocks (mobile), also separable 7x7 stem and output "
                   "convs (lite: faster on CPUs), or the ResNet generator, smaller.  "
                   "[default: the --init-from student's, else mobile]")
@click.option("--ngf", type=int, default=None,
              help="Student width.  [default: the --init-from student's, else half the teacher's]")
@click.option("--n-blocks", type=int, default=None,
              help="Student residual blocks.  [default: the --init-from student's, else the teacher's]")
@click.option("--upsample", type=click.Choice(UPSAMPLE_CHOICES), default=None,
              help="Student decoder: transposed convs, or x2 resize (nearest or bilinear) then a 3x3 conv.  "
                   "[default: the --init-from student's, else the teacher's]")
@click.option("--steps", default=20000, show_default=True,
              help="Optimiser steps (lr constant for half, then linear to 0). With --resume: a new total for the run.")
@click.option("--preprocess", default="resize_and_crop", show_default=True,
              type=click.Choice(["resize_and_crop", "scale_width_and_crop", "scale_width", "crop", "none"]))
@click.option("--load-size", default=286, show_default=True, help="Resize target (side, or width for scale_width*).")
@click.option("--load-size-max", type=int, default=None,
              help="Multi-scale crops: draw each image's resize target from --load-size..this.  [default: fixed]")
@click.option("--crop-size", default=256, show_default=True, help="Square training crop.")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips.")
@click.option("--batch-size", default=1, show_default=True)
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--lambda-l1", default=10.0, show_default=True, help="Weight of the L1 distance to the teacher's output.")
@click.option("--lambda-feat", default=1.0, show_default=True, help="Weight of feature distillation (0 = off).")
@click.option("--lambda-gan", default=1.0, show_default=True, help="Weight of the conditional GAN term (0 = off).")
@click.option("--lambda-grid", default=0.0, show_default=True,
              help="Weight of the spectral grid term: the student's period-2/4 peaks over its input's (0 = off). "
                   "For a student that draws a grid its teacher does not.")
@click.option("--init-from", type=click.Path(),
              help="Start the student from weights: a distill run (student, feature projections, discriminator) "
                   "or a student file. A fine-tune: new losses, schedule and optimiser; the student's "
                   "architecture is the weights' unless --arch, --ngf, --n-blocks or --upsample say otherwise.")
@_run_options(workers=1)
def distill(resume, no_progress, stop_after, **opts) -> None:
    """Distill a trained generator into a student several times cheaper to run.

    The teacher translates --images on the fly (random crops and flips); the student learns the
    pairs (L1, feature distillation, conditional GAN). Writes <direction>.safetensors in the run
    folder, which `gtacity translate --weights` and every backend take like any generator.
    """
    from gtacity.trainer.data import Preprocess
    from gtacity.trainer.distill import DistillConfig
    from gtacity.trainer.distill import distill as run_distill
    from gtacity.trainer.distill_step import DistillLosses

    if resume:
        given = [k for k in ("out", "teacher", "images", "init_from") if opts[k]]
        if given:
            raise click.UsageError(f"--resume continues with the run's saved settings; drop --{given[0].replace('_', '-')}")
        steps_given = click.get_current_context().get_parameter_source("steps") is ParameterSource.COMMANDLINE
        run_distill(DistillConfig(out=resume), resume=True, progress_bar=not no_progress, stop_after=stop_after,
                    steps=opts["steps"] if steps_given else None)
        return
    for name in ("teacher", "out"):
        if not opts[name]:
            raise click.UsageError(f"--{name} is required (or --resume a run)")
    cfg = DistillConfig(
        out=opts["out"], teacher=opts["teacher"], images=opts["images"],
        arch={"mobile": "mobile_resnet_generator", "lite": "lite_mobile_resnet_generator",
              "resnet": "resnet_generator", None: None}[opts["arch"]],
        ngf=opts["ngf"], n_blocks=opts["n_blocks"], upsample=opts["upsample"], steps=opts["steps"],
        init_from=opts["init_from"],
        preprocess=Preprocess(opts["preprocess"], opts["load_size"], opts["crop_size"], not opts["no_flip"],
                              opts["load_size_max"]),
        losses=DistillLosses(opts["lambda_l1"], opts["lambda_feat"], opts["lambda_gan"],
                             lambda_grid=opts["lambda_grid"], lr=opts["lr"]),
        batch_size=opts["batch_size"], amp=opts["amp"], device=opts["device"], workers=opts["workers"],
        seed=opts["seed"], checkpoint_every=opts["checkpoint_every"], log_every=opts["log_every"],
        sample_every=opts["sample_every"],
    )
    run_distill(cfg, progress_bar=not no_progress, stop_after=stop_after)


@click.command(epilog="""\b
Examples:
  gtacity average runs/exp1 --from-step 3500 -o runs/exp1_avg     # both directions, steps 3500 to the last
  gtacity average runs/exp1 --from-step 3000 --to-step 4000 -o avg --direction gta2city
  gtacity translate drive.mp4 -o drive_city.mp4 --weights runs/exp1_avg/gta2city.safetensors
""")
@click.argument("run", type=click.Path())
@click.option("--from-step", type=click.IntRange(min=0), required=True,
              help="First step averaged (inclusive), e.g. where the learning rate has decayed to a "
                   "fraction of its start.")
@click.option("--to-step", type=click.IntRange(min=0), default=None, help="Last step averaged (inclusive).  [default: the last kept]")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Folder for <direction>.safetensors (not the run folder).")
@click.option("--direction", type=click.Choice(["gta2city", "city2gta"]), multiple=True,
              help="Average only this direction (repeatable).  [default: every direction the run kept]")
@click.option("--overwrite", is_flag=True, help="Replace existing output files (never the run's own).")
def average(run, from_step, to_step, out, direction, overwrite) -> None:
    """Average the generators a run kept over a range of steps into one per direction.

    A GAN's generator keeps moving late in training, and what it draws moves with it (a grid that
    comes and goes, contrast that rises and falls); where the learning rate is low (the end of the
    decay, a short fine-tune) the mean of its weights over that stretch evens the swings out. Reads RUN/generators/step_*_<direction>.safetensors (one per
    --checkpoint-every of `gtacity train` or `gtacity distill`: save often enough to have a few) and
    writes OUT/<direction>.safetensors, which `--weights` and `--init-from` take like any generator.
    """
    from gtacity.averaging import AverageConfig, average_run

    written = average_run(AverageConfig(run, out, from_step, to_step, tuple(direction) or None, overwrite))
    for item in written:
        click.echo(f"{item.path}: mean of {len(item.steps)} {item.direction} generators, "
                   f"steps {item.steps[0]}-{item.steps[-1]}")
