"""The `edgekit` command: a thin click layer. Each command parses options, calls one library function, prints.

Library code raises `edgekit.errors.EdgekitError`; this module is the one place that turns those into a one-line
`Error: ...` on stderr and the error's exit code (2 for bad input, 3 for a missed quality gate). With `-v` the
traceback is logged too. Heavy modules (TensorFlow, the TFLite runtime, OpenCV) are imported inside commands so
that `edgekit --help` works on a Pi that has only the device extra.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.log import setup_logging

logger = logging.getLogger(__name__)


class UserError(click.ClickException):
    """An EdgekitError on its way to the terminal, keeping its exit code."""

    def __init__(self, error: EdgekitError) -> None:
        super().__init__(error.message)
        setattr(self, "exit_code", error.exit_code)  # noqa: B010  (a ClassVar in click's stubs)


class EdgekitGroup(click.Group):
    """A click group that reports library errors as one line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            logger.debug("failed", exc_info=True)
            raise UserError(exc) from None


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgekit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug with tracebacks).")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Take a MobileNet from a laptop to a Raspberry Pi or Coral, and keep it running there.

    \b
    On the laptop:  edgekit convert MODEL --calib PHOTOS   (int8 TFLite + proof of fidelity)
    On the device:  edgekit run --model DIR --source CAMERA (classify/detect -> stdout or MQTT)
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    setup_logging(verbose)
