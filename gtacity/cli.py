"""The ``gtacity`` command line: a thin shell over the Python API.

Every command parses its options into one frozen config and makes ONE call into
:mod:`gtacity.engine` or :mod:`gtacity.trainer`. Errors a user can cause arrive as
:class:`~gtacity.errors.GtacityError` and leave as one line on stderr with a non-zero exit;
``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import signal
import sys
import traceback

import click

from gtacity import __version__
from gtacity.cli_learn import average, data, distill, train
from gtacity.cli_realism import eval_realism
from gtacity.cli_report import eval_report
from gtacity.cli_segment import eval_miou, eval_segmentation
from gtacity.cli_slice import max_frames_option, slice_options
from gtacity.errors import GtacityError

_DEBUG = {"on": False}


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C, so every sink aborts its partial output."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _stop_on(signum: int, _frame) -> None:
    # Raise once: a second signal during the cleanup must not cut the cleanup short.
    for handled in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(handled, signal.SIG_IGN)
    raise Stopped(signum)


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        # What `timeout`, Docker, Slurm (SIGTERM) and a closed terminal (SIGHUP) send: stop
        # like Ctrl-C instead of dying with the output half-written.
        for handled in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(handled, _stop_on)
        try:
            return super().invoke(ctx)
        except GtacityError as e:
            if _DEBUG["on"]:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except Stopped as e:
            name = signal.Signals(e.signum).name
            click.echo(f"stopped by {name}", err=True)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except MemoryError:
            if _DEBUG["on"]:
                traceback.print_exc()
            click.echo("error: out of memory; close other programs or use a machine with more", err=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors and --help print as click means them to
        except Exception as e:  # a bug of ours: one line, the traceback only with --debug
            if _DEBUG["on"]:
                raise
            click.echo(f"error: internal error ({type(e).__name__}: {e}); run again with --debug "
                       "and report the traceback", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtacity")
@click.option("--debug", is_flag=True, help="Show the full traceback when a command fails.")
def cli(debug: bool) -> None:
    """Translate GTA5 footage into Cityscapes-style street imagery, and back (CycleGAN).

    \b
    Examples:
      gtacity translate drive.mp4 -o out.mp4             # GTA5 -> Cityscapes
      gtacity translate city.mp4 -o gta.mp4 --direction city2gta
      gtacity translate frames/ -o frames_city/          # a whole folder tree of images
      gtacity translate --help                           # every option, with examples
    """
    _DEBUG["on"] = debug


@cli.command(epilog="""\b
Examples:
  gtacity translate drive.mp4 -o out.mp4                        # GTA5 -> Cityscapes look
  gtacity translate city.mp4 -o gta.mp4 --direction city2gta    # and back
  gtacity translate frames/ -o frames_city/                     # folder tree, mirrored
  gtacity translate shot.png -o shot_city.png
  gtacity translate drive.mp4 -o out.mp4 --weights latest_net_G_A.pth   # official CycleGAN weights
  gtacity translate drive.mp4 -o out.mp4 --weights runs/exp1/gta2city.safetensors --crf 14
  gtacity translate drive.mp4 -o out.mp4 --weights gta2city_demo_fast   # the bundled student: ~5x faster
  gtacity translate drive.mp4 -o out.mp4 --device cuda --streams 3   # torch CUDA: fp16, CUDA graphs
  gtacity translate gta5/images -o gta5_city/images             # rerun the same command = resume
  gtacity translate gta5/images -o out --shard 3/16             # one of 16 machines
  gtacity translate gta5/images -o out --shard auto             # in a Slurm array / Kubernetes indexed Job
  gtacity translate gta5/ -o gta5_city/ --dataset gta5 --labels trainids   # labels carried along
  gtacity translate clips/ -o clips_city/                       # a folder of videos, each translated
  gtacity translate gta5/images -o out --ray local              # on a Ray cluster of this machine
  gtacity translate clips/ -o clips_city/ --ray auto --device cuda   # on the cluster in RAY_ADDRESS, one GPU actor per video
  gtacity translate drive.mp4 -o out.mp4 --precision int8       # CPU: faster than fp32, PSNR vs fp32 printed
  gtacity translate drive.mp4 -o out.mp4 --temporal flow        # less flicker (gtacity eval flicker)
  gtacity translate drive.mp4 -o part.mp4 --start 1:30 --duration 10   # try a piece first (audio kept)
  gtacity translate drive.mp4 -o look.png --preview 6           # 6 frames, input | translation, one PNG
""")
@click.argument("input", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Video file (.mp4/.mkv/.mov), folder (for a folder input) or image file.")
@click.option("--direction", default=None, metavar="gta2city|city2gta",
              help="Translation direction.  [default: the generator file's own, else gta2city]")
@click.option("--weights", type=click.Path(), default=None,
              help="Generator file: ours (.safetensors) or an official latest_net_G_*.pth, or a bundled one by name "
                   "(gta2city_demo, city2gta_demo, and their distilled students gta2city_demo_fast, city2gta_demo_fast: "
                   "~5x faster).  [default: bundled demo]")
@click.option("--backend", default="auto", show_default=True, metavar="auto|torch|openvino|tensorrt",
              help="Inference backend (auto: tensorrt or torch on CUDA, else openvino, else torch; tensorrt needs "
                   "an NVIDIA GPU and pip install 'gtacity[tensorrt]').")
@click.option("--precision", default="auto", show_default=True, metavar="auto|fp32|fp16|bf16|int8",
              help="Inference precision (auto: bf16 on CPUs that have it natively via openvino, else fp32; "
                   "fp16 on CUDA). int8: openvino, calibrated on the input, PSNR vs fp32 printed.")
@click.option("--calibration", type=click.Path(), default=None,
              help="int8: video, folder or image to calibrate on.  [default: 32 frames of the input]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=None, help="Frames per inference call.  [default: 1 on CPU, 8 on CUDA]")
@click.option("--streams", type=int, default=None,
              help="Batches in flight at once, each on its own CUDA stream on a GPU.  [default: 3]")
@click.option("--crf", default=18, show_default=True, help="Video quality (libx264 CRF; lower = better, bigger).")
@click.option("--preset", default="medium", show_default=True, help="libx264 preset (ultrafast ... veryslow).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (never the input); a folder job redoes every file.")
@click.option("--shard", default=None, metavar="K/N|auto|auto/N",
              help="Folder input: translate shard K of N (from 1); auto reads Slurm array / Kubernetes indexed Job variables.")
@click.option("--dataset", default=None, metavar="gta5|cityscapes",
              help="Folder input is a GTA5 (images/ labels/) or Cityscapes (leftImg8bit/ gtFine/) tree: label maps travel along.")
@click.option("--labels", default="copy", show_default=True, metavar="copy|trainids",
              help="With --dataset: copy label maps unchanged, or also write Cityscapes train-ID maps (19 classes, 255 = ignore).")
@click.option("--workers", type=int, default=None, help="Threads decoding/encoding a folder's images.  [default: every core]")
@click.option("--ray", default=None, metavar="local|auto|ADDRESS",
              help="Folder input: run the job on a Ray cluster (pip install \"gtacity[ray]\"): local (this machine), "
                   "auto (RAY_ADDRESS / ray start) or a cluster's address. Output on a filesystem every node sees.")
@click.option("--ray-workers", type=int, default=None,
              help="With --ray: translating actors, each loading the generator once.  [default: one per GPU, else half the CPUs]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--tile", type=int, default=None, metavar="N",
              help="Translate frames larger than N pixels in overlapping NxN tiles; 0 never tiles.  "
                   "[default: tiles of 1024 when a frame would need more than 4 GiB]")
@click.option("--max-pixels", type=int, default=None, metavar="N",
              help="Refuse (in a folder: list and skip) images with more pixels, before decoding them.  "
                   "[default: what the free memory can translate]")
@click.option("--allow-damaged", is_flag=True,
              help="Exit 0 when the input video is damaged (the summary still says what was lost).")
@click.option("--temporal", default="off", show_default=True, type=click.Choice(["off", "stats", "flow"]),
              help="Flicker remedy for videos: stats (InstanceNorm statistics averaged over frames; torch "
                   "backend) or flow (previous output blended in along the optical flow; any backend).")
@slice_options
def translate(input, output, quiet, **opts) -> None:
    """Translate a video, a folder of images or an image between GTA5 and Cityscapes looks.

    Videos keep their frame rate, timestamps, colours and audio; folders are mirrored with the
    same relative paths, names and formats; every output has the size of its input. A folder job
    resumes when rerun, goes on past unreadable files (listed in gtacity-failures.txt; exit 1),
    and can be split over machines with --shard.
    """
    from gtacity.engine import TranslateConfig
    from gtacity.engine import translate as run_translate

    report = run_translate(TranslateConfig(input=input, output=output, progress=not quiet, **opts))
    click.echo(report.summary())
    if report.job is not None and report.job.failed:
        from gtacity.engine.jobs.folder import JobFailedError

        listed = report.job.failures_file
        raise JobFailedError(f"{report.job.failed} file(s) failed and were skipped (listed in {listed}); "
                             "fix or remove them and rerun the same command to finish the job")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: use WIDTHxHEIGHT, e.g. 512x288") from None
    return width, height


@cli.command("demo-clip", epilog="""\b
Examples:
  gtacity demo-clip drive.mp4 && gtacity translate drive.mp4 -o drive_city.mp4
  gtacity demo-clip long.mp4 --seconds 60 --size 1280x720
  gtacity demo-clip synth/ --labels --seconds 40 --fps 1   # 40 PNG frames + Cityscapes label maps
""")
@click.argument("output", type=click.Path())
@click.option("--seconds", default=6.0, show_default=True, help="Clip length.")
@click.option("--size", default="512x288", show_default=True, help="WIDTHxHEIGHT, both even.")
@click.option("--fps", default=25, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@click.option("--labels", is_flag=True,
              help="Write PNG frames with the Cityscapes label maps of what was drawn into the folder OUTPUT "
                   "(leftImg8bit/ gtFine/) instead of a video.")
@click.option("--split", default="train", show_default=True, help="With --labels: the split folder of the tree.")
def demo_clip(output, seconds, size, fps, seed, overwrite, labels, split) -> None:
    """Render a synthetic game-style driving clip (H.264 + AAC) to try gtacity on.

    The street is drawn by gtacity itself (no game footage ships with it), flat-shaded the way
    older games look, so a fresh install has something to translate.
    """
    from gtacity.democlip import write_demo_clip, write_labelled_frames

    if labels:
        frames = write_labelled_frames(output, seconds=seconds, size=_size(size), fps=fps, seed=seed,
                                       split=split, overwrite=overwrite)
        click.echo(f"wrote {len(frames)} frames with label maps ({size}) under {output}")
        return
    path = write_demo_clip(output, seconds=seconds, size=_size(size), fps=fps, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {path} ({seconds:g} s, {size}, {fps} fps, with audio)")


@cli.command(epilog="""\b
Examples:
  gtacity bench                                  # best backends for this machine, sensible sizes
  gtacity bench --fp16                           # also the native fp16/bf16 paths; emulated ones listed
  gtacity bench --backend torch,openvino --size 512x256,1024x512 --batch-size 1,4 --json out.json
  gtacity bench --e2e drive.mp4                  # decode -> translate -> encode, as translate runs it
  gtacity bench --e2e drive.mp4 --frames 50 --weights gta2city_demo_fast
  gtacity bench --weights runs/exp1/gta2city.safetensors --device all
""")
@click.option("--backend", "backends", default="", metavar="NAME[,NAME...]",
              help="Backends to run.  [default: every registered one]")
@click.option("--precision", default="auto", show_default=True, metavar="auto|reduced|fp32|fp16|bf16|int8[,...]",
              help="auto: each backend's default; reduced: its fp16/bf16 paths native here; int8: openvino, calibrated on the bench input.")
@click.option("--fp16", is_flag=True, help="Also bench the reduced-precision paths (fp16/bf16) this CPU or GPU runs natively; adds --precision reduced.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present, else CPU), all, cpu, cuda or cuda:N.")
@click.option("--size", "sizes", default="", metavar="WxH[,WxH...]",
              help="Frame sizes, multiples of 4.  [default: 256x256,512x256 on CPU; 1024x512,1920x1080 on CUDA]")
@click.option("--batch-size", "batch_sizes", default="", metavar="N[,N...]",
              help="Frames per call.  [default: 1 on CPU; 1,8 on CUDA]")
@click.option("--weights", type=click.Path(), default=None,
              help="Generator file or bundled name.  [default: seeded random ngf 64 / 9 blocks (speed does not "
                   "depend on the weights); with --e2e, the bundled demo for --direction, as translate]")
@click.option("--direction", default="gta2city", show_default=True, metavar="gta2city|city2gta",
              help="--e2e without --weights: which bundled demo generator.")
@click.option("--ngf", type=int, default=None, help="Random weights of this width.  [default: 64]")
@click.option("--n-blocks", type=int, default=None, help="Random weights with this many residual blocks.  [default: 9]")
@click.option("--warmup", default=1, show_default=True, help="Untimed calls after the agreement check.")
@click.option("--repeats", default=10, show_default=True, help="Timed calls per configuration (medians reported); fewer (at least 3) once they take 5 s.")
@click.option("--e2e", type=click.Path(), default=None,
              help="Time decode -> translate -> encode over this video (or image folder) instead.")
@click.option("--frames", "e2e_frames", type=int, default=None, help="--e2e: at most this many frames per configuration.")
@click.option("--seconds", "e2e_seconds", type=float, default=30.0, show_default=True,
              help="--e2e: stop reading once a configuration's pass would end after this long; 0 = the whole input.")
@click.option("--streams", type=int, default=None, help="Batches in flight with --e2e (CUDA streams on a GPU).  [default: 3]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the report here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines or bars on stderr.")
def bench(backends, precision, fp16, sizes, batch_sizes, quiet, e2e_seconds, **opts) -> None:
    """Measure how fast each backend translates here, after checking they all agree.

    Every configuration (backend x precision x size x batch) is first compared with torch fp32 on
    the CPU; one outside its precision's tolerance is reported and not timed, and the command
    fails. Prints machine, versions and settings with frames/s, ms per frame (p50, p95), peak
    memory and GMAC/s.

    With --e2e: one pass of the whole pipeline per configuration (a progress bar each), the seconds
    each stage worked (busy, not waiting), the stage that bounds the run and "bound busy %", the
    share of the run's wall time that stage was working: 100 means the pipeline hides every other
    stage behind it; less is time lost to start-up, hand-overs between stages, or stages competing
    for the same cores. It is measured inside the one run, so a busy machine does not skew it.
    """
    from gtacity.engine.measure.bench import run_bench
    from gtacity.engine.measure.bench_plan import BenchConfig, BenchError, parse_ints, parse_sizes
    from gtacity.engine.measure.bench_report import describe_disagreement

    precisions = tuple(p.strip() for p in precision.split(",") if p.strip())
    if fp16:  # next to each backend's default, the reference they are read against
        precisions = (*precisions, "reduced")
    cfg = BenchConfig(
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()), precisions=precisions,
        sizes=parse_sizes(sizes) if sizes else (), batch_sizes=parse_ints(batch_sizes) if batch_sizes else (),
        e2e_seconds=e2e_seconds or None, progress=not quiet, **opts,
    )
    report = run_bench(cfg, log=lambda line: None if quiet else click.echo(line, err=True))
    click.echo(report.format())
    if not report.ok:
        bad = report.disagreements()
        raise BenchError(f"{len(bad)} configuration(s) disagree with torch fp32 on the CPU and were "
                         f"not timed: {'; '.join(map(describe_disagreement, bad))}")


@cli.command(epilog="""\b
Examples:
  gtacity export gen.safetensors --format onnx -o gen.onnx          # dynamic batch, height, width
  gtacity export gen.safetensors --format onnx-fp16 -o gen16.onnx   # fp16, InstanceNorm in fp32
  gtacity export gen.safetensors --format onnx --shape 1x3x512x1024 -o gen_512.onnx   # fixed shape
  gtacity export gen.safetensors --format engine --shape 8x3x512x1024 -o gen.engine   # TensorRT fp16
  gtacity export gen.safetensors --format engine --shape 8x3x1056x1920 \\
      --min-shape 1x3x1056x1920 --via torch-tensorrt -o gen_1080p.engine
  gtacity export gen.safetensors --format openvino-int8 --calibration gta5/images -o gen_int8.xml
""")
@click.argument("weights", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The file to write.")
@click.option("--format", "format_", default="onnx", show_default=True, metavar="onnx|onnx-fp16|engine|openvino-int8",
              help="onnx: fp32; onnx-fp16: fp16 weights and convolutions; engine: TensorRT fp16 plan; "
                   "openvino-int8: OpenVINO IR quantised by NNCF (also becomes the generator's int8 model "
                   "for --precision int8 on this machine).")
@click.option("--calibration", default=None, type=click.Path(),
              help="openvino-int8: frames like the ones it will translate (a folder, video or image).")
@click.option("--shape", default=None, metavar="NxCxHxW",
              help="ONNX: fix the graph to this shape (default: dynamic). engine: the shape TensorRT optimises for (required).")
@click.option("--min-shape", default=None, metavar="NxCxHxW", help="engine: smallest accepted shape.  [default: batch 1 at --shape's size]")
@click.option("--max-shape", default=None, metavar="NxCxHxW", help="engine: largest accepted shape.  [default: --shape]")
@click.option("--via", default="onnx", show_default=True, metavar="onnx|torch-tensorrt",
              help="engine: build with TensorRT's ONNX parser or with torch-tensorrt.")
@click.option("--workspace-gib", default=4.0, show_default=True, help="engine: TensorRT's build scratch-memory limit.")
@click.option("--direction", default=None, metavar="gta2city|city2gta",
              help="Recorded in the file's metadata, for generator files that do not say.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (never the input).")
def export(weights, output, format_, **opts) -> None:
    """Export a generator as ONNX, FP16 ONNX, a TensorRT engine or an int8 OpenVINO IR (with its metadata).

    Engines are kept in the engine cache (see README, "Export and TensorRT"): exporting the
    same generator, shapes and precision again on the same GPU copies the cached engine.
    """
    from gtacity.engine import ExportConfig
    from gtacity.engine import export as run_export

    path = run_export(ExportConfig(weights=weights, output=output, format=format_, **opts))
    click.echo(f"wrote {path} ({format_})")


@cli.group("eval")
def evaluate() -> None:
    """Measure what a translation is like."""


@evaluate.command("fidelity", epilog="""\b
Examples:
  gtacity eval fidelity --teacher runs/exp1/gta2city.safetensors --student runs/fast/gta2city.safetensors frames/
  gtacity eval fidelity --teacher T.safetensors --student S.safetensors drive.mp4 --max-frames 100
  gtacity eval fidelity --teacher T.safetensors --student S.safetensors frames/ --backend torch --json out.json
""")
@click.argument("input", type=click.Path())
@click.option("--teacher", required=True, type=click.Path(), help="The generator the student was distilled from.")
@click.option("--student", required=True, type=click.Path(), help="The distilled generator.")
@click.option("--backend", default="auto", show_default=True, metavar="auto|torch|openvino", help="Backend for both.")
@click.option("--precision", default="auto", show_default=True, metavar="auto|fp32|fp16|bf16")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@max_frames_option("Compare at most this many frames.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write the numbers here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def eval_fidelity(input, teacher, student, json_path, quiet, **opts) -> None:
    """PSNR and SSIM of a student's translations vs its teacher's over INPUT (folder, video or
    image), and the frames/s of each through the same backend, side by side."""
    from dataclasses import asdict

    from gtacity.engine import FidelityConfig, evaluate_fidelity
    from gtacity.files import write_json

    report = evaluate_fidelity(FidelityConfig(input, teacher, student, progress=not quiet, **opts))
    click.echo(report.format())
    if json_path:
        data = {**asdict(report), "teacher_fps": report.teacher.fps, "student_fps": report.student.fps}
        write_json(json_path, data, default=str)


@evaluate.command("flicker", epilog="""\b
Examples:
  gtacity eval flicker drive.mp4 drive_city.mp4                  # how much the output flickers
  gtacity eval flicker drive.mp4 drive_city.mp4 --plot flicker.png --json > flicker.json
""")
@click.argument("input", type=click.Path())
@click.argument("output", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, per-pair curves included.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Draw the per-frame error curves into this PNG.")
@click.option("--preset", default="medium", show_default=True, type=click.Choice(["ultrafast", "fast", "medium"]),
              help="DIS optical-flow preset (faster presets: rougher flow, higher errors for both videos).")
@click.option("-q", "--quiet", is_flag=True, help="No progress counter.")
def eval_flicker(input, output, as_json, plot, preset, quiet) -> None:
    """How much OUTPUT (a translation of INPUT) flickers: the warping error of Lai et al. (2018).

    Optical flow and occlusion masks come from INPUT; each OUTPUT frame is warped onto the one
    before it and compared where the flow is reliable (mean squared RGB difference, 0..1 scale).
    The same measure of INPUT itself is printed beside it as a reference (what the scene itself
    scores; not a floor: --temporal flow blends frames and can score below it).
    """
    from gtacity.engine import FlickerConfig, evaluate_flicker

    report = evaluate_flicker(FlickerConfig(input, output, plot=plot, preset=preset, progress=not quiet))
    click.echo(report.to_json() if as_json else report.summary())


evaluate.add_command(eval_realism)
evaluate.add_command(eval_miou)
evaluate.add_command(eval_segmentation)
evaluate.add_command(eval_report)

for _command in (train, data, distill, average):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="gtacity")
