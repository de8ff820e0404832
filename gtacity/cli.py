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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="gtacity")
