"""The ``gtacity`` command line: a thin shell over the Python API.

Every command parses its options into one frozen config and makes ONE call into
:mod:`gtacity.engine` or :mod:`gtacity.trainer`. Errors a user can cause arrive as
:class:`~gtacity.errors.GtacityError` and leave as one line on stderr with a non-zero exit;
``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import sys
import traceback

import click

from gtacity import __version__
from gtacity.errors import GtacityError

_DEBUG = {"on": False}


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GtacityError as e:
            if _DEBUG["on"]:
                traceback.print_exc()
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


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


@cli.group()
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="gtacity")
