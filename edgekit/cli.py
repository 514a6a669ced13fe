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


def _triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give three numbers like 123.7,116.3,103.5") from None
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise click.BadParameter(f"{value!r}: give one number or three (R,G,B)")
    return (parts[0], parts[1], parts[2])


@cli.command("convert")
@click.argument("model")
@click.option("--calib", required=True, help="Calibration images: a folder (recursive) or a video file.")
@click.option("--out", default="edgekit-model", show_default=True, help="Output folder (written atomically).")
@click.option("--num-calib", default=300, show_default=True, help="Calibration images to use (augmented if fewer).")
@click.option("--eval", "eval_path", help="Held-out images (sub-folders named by class give accuracies).")
@click.option("--alpha", type=float, help="Width multiplier of a built-in architecture.")
@click.option("--input-size", type=int, help="Input size: built-ins (default 224) or a model with a dynamic input.")
@click.option("--weights", help="Built-ins: imagenet, none, torchvision-imagenet or a .pth/.h5 path.")
@click.option("--preprocess", type=click.Choice(["tf", "torch", "raw"]), help="Input normalisation to bake in.")
@click.option("--mean", callback=_triple, help="Per-channel mean in 0..255 units (R,G,B), instead of --preprocess.")
@click.option("--std", callback=_triple, help="Per-channel std in 0..255 units (R,G,B), instead of --preprocess.")
@click.option("--resize", type=click.Choice(["stretch", "center_crop", "letterbox"]), help="Resize policy.")
@click.option("--crop-fraction", type=float, help="Central fraction kept by --resize center_crop (e.g. 0.875).")
@click.option("--io", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True, help="I/O type.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Label file, one per line in output order.")
@click.option("--min-agreement", type=float, help="Exit 3 when int8-vs-float top-1 agreement is below this.")
@click.option(
    "--recipe",
    type=click.Choice(["edgekit", "textbook"]),
    default="edgekit",
    show_default=True,
    help="Quantization recipe (textbook = plain TFLiteConverter, for comparison).",
)
@click.option("--force", is_flag=True, help="Replace --out even if it is not an edgekit model folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no report (errors only).")
def convert_command(
    model: str, calib: str, out: str, num_calib: int, eval_path: str | None, as_json: bool, quiet: bool, **options: Any
) -> None:
    """Convert MODEL to a full-int8 TFLite classifier calibrated on your images, and prove its fidelity.

    MODEL is a .keras/.h5 file, a SavedModel folder, or a built-in architecture: mobilenet_v1, mobilenet_v2,
    mobilenet_v3_small, mobilenet_v3_large.

    \b
    Exit codes: 0 ok, 2 bad input (nothing written), 3 below --min-agreement (model written).
    """
    from edgekit.convert.pipeline import ConvertOptions, convert_classifier
    from edgekit.convert.report import to_json, to_text

    opts = ConvertOptions(model=model, calib=calib, out=out, num_calib=num_calib, eval=eval_path, **options)
    progress = None if quiet or as_json else _progress_bars()
    result = convert_classifier(opts, progress)
    if as_json:
        click.echo(to_json(result.report), nl=False)
    elif not quiet:
        try:
            from rich.console import Console

            from edgekit.convert.report import to_rich
        except ImportError:
            click.echo(to_text(result.report), nl=False)
        else:
            Console().print(to_rich(result.report))


def _progress_bars() -> Any:
    """A progress-bar factory on stderr when it is a terminal and rich is installed, else None."""
    import contextlib

    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    console = Console(stderr=True)
    if not console.is_terminal:
        return None  # bars in a log file or a pipe are noise

    @contextlib.contextmanager
    def bar(label: str, total: int) -> Any:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as prog:
            task = prog.add_task(label, total=total or None)
            yield lambda n: prog.advance(task, n)

    return bar
