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


# --- device side: run, bench -------------------------------------------------------------------------------

_RUN_OPTIONS = {
    # cli option name -> config key under [run]
    "model": "model",
    "source": "source",
    "sink": "sinks",
    "task": "task",
    "device": "device",
    "threads": "threads",
    "top_k": "top_k",
    "threshold": "threshold",
    "labels": "labels",
    "classes": "classes",
    "max_fps": "max_fps",
    "frames": "frames",
    "realtime": "realtime",
    "only_changes": "only_changes",
    "stats_interval": "stats_interval",
    "camera": "camera",
    "http": "http.listen",
    "http_fps": "http.fps",
}


def _config_key(option: str) -> str:
    """The dotted config key of a `run` option (keys of other sections are spelled out in _RUN_OPTIONS)."""
    key = _RUN_OPTIONS[option]
    return key if "." in key else f"run.{key}"


@cli.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--model", help="Folder written by edgekit convert, or a .tflite.")
@click.option("--source", help="picamera2[:N], /dev/videoN or N, rtsp://..., a video file or an image folder.")
@click.option("--sink", multiple=True, help="stdout, file:PATH, mqtt://HOST/TOPIC (repeatable).")
@click.option("--task", type=click.Choice(["auto", "classify", "detect"]), help="Default: from the model.")
@click.option("--device", help="cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N].")
@click.option("--threads", type=int, help="CPU threads for the interpreter (0: all cores).")
@click.option("--top-k", type=int, help="Classes (or detections) per result.")
@click.option("--threshold", type=float, help="Minimum score, 0..1.")
@click.option("--labels", help="Labels file (one per line, or 'ID label').")
@click.option("--classes", multiple=True, help="Detection: keep only this class, label or id (repeatable).")
@click.option("--max-fps", type=float, help="Process at most this many frames per second (0: as fast as possible).")
@click.option("--frames", type=int, help="Stop after this many results (0: run until the source ends).")
@click.option("--realtime/--no-realtime", default=None, help="Play video files at their own frame rate.")
@click.option("--only-changes/--every-frame", default=None, help="Publish only when the result changes.")
@click.option("--stats-interval", type=float, help="Seconds between stats records (0: off).")
@click.option("--camera", help="Name carried in every record (default: the host name).")
@click.option("--http", metavar="[HOST:]PORT", help="Serve the live preview page and /metrics (e.g. 127.0.0.1:8080).")
@click.option("--http-fps", type=float, help="Frames per second of the preview stream (default 5).")
@click.option("--print-config", is_flag=True, help="Print the effective config as TOML and exit.")
@click.option("--validate-config", is_flag=True, help="Check config, model and labels, then exit.")
def run_command(config_path: str | None, print_config: bool, validate_config: bool, **options: Any) -> None:
    """Classify or detect on camera frames and publish each result (JSON lines on stdout by default).

    Every option is also a key in the [run] table of the config file; options override the file.
    """
    from edgekit.config import dump_toml, load_config, to_dict
    from edgekit.device import daemon

    overrides = {
        _config_key(name): list(value) if isinstance(value, tuple) else value
        for name, value in options.items()
        if value is not None and value != ()
    }
    if print_config:
        click.echo(dump_toml(to_dict(load_config(config_path, overrides))), nl=False)
        return
    if validate_config:
        daemon.validate(config_path, overrides)
        click.echo("config OK", err=True)
        return
    daemon.serve(config_path, overrides)


@cli.command("bench")
@click.argument("model")
@click.option("--device", default="cpu", show_default=True, help="cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N].")
@click.option("--threads", default=0, show_default=True, help="CPU threads (0: all cores).")
@click.option("--runs", default=100, show_default=True, help="Timed invocations.")
@click.option("--video", type=click.Path(exists=True, dir_okay=False), help="Video for the pipeline run.")
@click.option("--frames", default=200, show_default=True, help="Frames of the generated video.")
def bench_command(model: str, device: str, threads: int, runs: int, video: str | None, frames: int) -> None:
    """Invoke latency (min/p50/p95) beside the full pipeline on a video (generated unless --video)."""
    from edgekit.device import bench

    report = bench.bench(model, device=device, threads=threads, runs=runs, video=video, frames=frames)
    click.echo(report.table())
