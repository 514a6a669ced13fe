"""The `edgekit` command: a thin click layer. Each command parses options, calls one library function, prints.

Library code raises `edgekit.errors.EdgekitError`; this module is the one place that turns those into a one-line
`Error: ...` on stderr and the error's exit code (2 for bad input, 3 for a missed quality gate). With `-v` the
traceback is logged too. Heavy modules (TensorFlow, the TFLite runtime, OpenCV) are imported inside commands so
that `edgekit --help` works on a Pi that has only the device extra.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, ClassVar, cast

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.log import setup_logging

if TYPE_CHECKING:
    from edgekit.model.manifest import Downscale

logger = logging.getLogger(__name__)


class UserError(click.ClickException):
    """An EdgekitError on its way to the terminal, keeping its exit code."""

    def __init__(self, error: EdgekitError) -> None:
        super().__init__(error.message)
        setattr(self, "exit_code", error.exit_code)  # noqa: B010  (a ClassVar in click's stubs)


class EdgekitGroup(click.Group):
    """A click group that reports library errors as one line instead of a traceback.

    Commands in ``lazy`` (name -> module) are imported when named or listed (``--help``), not at start-up:
    `edgekit run` on a device does not pay for ``sweep``'s imports.
    """

    lazy: ClassVar[dict[str, str]] = {"sweep": "edgekit.cli_sweep"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            self.add_command(getattr(importlib.import_module(self.lazy[cmd_name]), cmd_name))
        return super().get_command(ctx, cmd_name)

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
    "fallback": "fallback",
    "threads": "threads",
    "streams": "streams",
    "top_k": "top_k",
    "threshold": "threshold",
    "labels": "labels",
    "classes": "classes",
    "max_fps": "max_fps",
    "downscale": "downscale",
    "frames": "frames",
    "realtime": "realtime",
    "only_changes": "only_changes",
    "stats_interval": "stats_interval",
    "camera": "camera",
    "tracking": "tracking.enabled",
    "events": "events.enabled",
    "http": "http.listen",
    "http_fps": "http.fps",
    "class_events": "class_events",
    "motion": "motion.enabled",
    "motion_keyframe": "motion.keyframe",
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
@click.option("--fallback", type=click.Choice(["none", "cpu"]), help="Edge TPU missing: run the CPU model (cpu).")
@click.option("--threads", type=int, help="CPU threads for the interpreter(s) (0: all cores).")
@click.option("--streams", type=int, help="Interpreters on consecutive frames at once (0: 2 for files, else 1).")
@click.option("--top-k", type=int, help="Classes (or detections) per result.")
@click.option("--threshold", type=float, help="Minimum score, 0..1.")
@click.option("--labels", help="Labels file (one per line, or 'ID label').")
@click.option("--classes", multiple=True, help="Detection: keep only this class, label or id (repeatable).")
@click.option("--max-fps", type=float, help="Process at most this many frames per second (0: as fast as possible).")
@click.option(
    "--downscale",
    type=click.Choice(["model", "area", "pyramid", "bilinear"]),
    help="How frames are shrunk (default model: the manifest's; a plain .tflite gets one bilinear stretch).",
)
@click.option("--frames", type=int, help="Stop after this many results (0: run until the source ends).")
@click.option("--realtime/--no-realtime", default=None, help="Play video files at their own frame rate.")
@click.option("--only-changes/--every-frame", default=None, help="Publish only when the result changes.")
@click.option("--stats-interval", type=float, help="Seconds between stats records (0: off).")
@click.option("--camera", help="Name carried in every record (default: the host name).")
@click.option("--tracking/--no-tracking", default=None, help="Detection: track objects (track_id; default on).")
@click.option("--events/--no-events", default=None, help="Detection: event records new/update/end (default on).")
@click.option("--http", metavar="[HOST:]PORT", help="Serve the live preview page and /metrics (e.g. 127.0.0.1:8080).")
@click.option("--http-fps", type=float, help="Frames per second of the preview stream (default 5).")
@click.option("--class-events", type=int, help="Classification: an event when a class holds N frames (0: off).")
@click.option("--motion/--no-motion", default=None, help="Skip inference while nothing moves (motion gating).")
@click.option("--motion-keyframe", type=float, help="With --motion: infer at least every this many seconds (10).")
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
@click.option("--streams", default=0, show_default=True, help="Pipeline streams (0: as edgekit run on a file).")
@click.option("--profile", is_flag=True, help="Where a frame's time goes, stage by stage, then the pipeline's waits.")
@click.option(
    "--source",
    "source_kind",
    type=click.Choice(["video", "camera", "folder"]),
    default="video",
    show_default=True,
    help="With --profile: the video, its frames as a live camera (--camera-fps), or as a folder of JPEGs.",
)
@click.option("--camera-fps", default=30.0, show_default=True, help="With --source camera: frames offered per second.")
@click.option(
    "--downscale",
    type=click.Choice(["model", "area", "pyramid", "bilinear"]),
    default="model",
    show_default=True,
    help="As edgekit run --downscale.",
)
def bench_command(
    model: str,
    device: str,
    threads: int,
    runs: int,
    video: str | None,
    frames: int,
    streams: int,
    profile: bool,
    source_kind: str,
    camera_fps: float,
    downscale: str,
) -> None:
    """Invoke latency (min/p50/p95) beside the full pipeline on a video (generated unless --video).

    With --profile: each stage of a frame (decode, colour, resize, set_tensor, invoke, outputs, postprocess,
    record, encode, publish) timed one frame at a time, then the pipeline as edgekit run runs that source.
    """
    from edgekit.device import bench

    chosen = cast("Downscale | None", None if downscale == "model" else downscale)
    if profile:
        found = bench.profile(
            model,
            source_kind,
            device,
            threads,
            video,
            frames,
            streams,
            camera_fps,
            chosen,
        )
        click.echo(found.table())
        return
    report = bench.bench(
        model, device=device, threads=threads, runs=runs, video=video, frames=frames, streams=streams, downscale=chosen
    )
    click.echo(report.table())


@cli.command("inspect")
@click.argument("model")
@click.option("--edgetpu", is_flag=True, help="Also predict, op by op, what the Edge TPU compiler will map.")
@click.option("--compile", "compile_", is_flag=True, help="With --edgetpu: run edgetpu_compiler and compare.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect_command(model: str, edgetpu: bool, compile_: bool, as_json: bool) -> None:
    """Inputs/outputs with quantization, op histogram and task of a .tflite or converted folder."""
    import json

    from edgekit.model.inspect import inspect_model

    result = inspect_model(model, edgetpu=edgetpu or compile_)
    checked = None
    if compile_ and not result.model.is_edgetpu_compiled:
        from edgekit.convert.edgetpu import check_preflight

        checked = check_preflight(result.path)
    if as_json:
        data = result.to_dict()
        if checked is not None:
            data["edgetpu_compiler"] = checked.to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(result.render() + (f"\n{checked.summary()}" if checked is not None else ""))


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False), help="Filesystem root.")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config (device, MQTT broker).")
@click.option("--user", help="Check device access for this account (the service's), not the current one.")
def doctor_command(as_json: bool, root: str, config_path: str | None, user: str | None) -> None:
    """What this device can do and what is wrong: runtime, cameras, Coral, broker, disk, memory, heat.

    Exits 1 when a check fails (warnings alone exit 0).
    """
    import json

    from edgekit.config import load_config
    from edgekit.ops import doctor

    config = load_config(config_path) if config_path else None
    account = doctor.Account.named(user) if user else None
    report = doctor.diagnose(root, config, account)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.render())
    raise SystemExit(doctor.main_exit_code(report))


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
@click.option(
    "--downscale",
    type=click.Choice(["area", "pyramid"]),
    default="area",
    show_default=True,
    help="How frames are shrunk, in calibration and on the device: area (INTER_AREA's exact box mean) or pyramid "
    "(2x2 halvings then bilinear: 6x faster on the device, not the same pixels).",
)
@click.option("--io", type=click.Choice(["uint8", "int8"]), default="uint8", show_default=True, help="I/O type.")
@click.option(
    "--labels", type=click.Path(dir_okay=False), help="Labels file (one per line, 'ID label' or labelmap.pbtxt)."
)
@click.option("--min-agreement", type=float, help="Exit 3 when int8-vs-float top-1 agreement is below this.")
@click.option(
    "--recipe",
    type=click.Choice(["edgekit", "textbook"]),
    default="edgekit",
    show_default=True,
    help="Quantization recipe (textbook = plain TFLiteConverter, for comparison).",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "classify", "detect"]),
    default="auto",
    show_default=True,
    help="auto: detect for a SavedModel ending in TFLite_Detection_PostProcess, else classify.",
)
@click.option("--force", is_flag=True, help="Replace --out even if it is not an edgekit model folder.")
@click.option("--edgetpu", is_flag=True, help="Also compile model_edgetpu.tflite with edgetpu_compiler (x86-64 Linux).")
@click.option("--require-full-tpu", is_flag=True, help="Exit 3 when ops before the postprocess would run on the CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no report (errors only).")
def convert_command(
    model: str,
    calib: str,
    out: str,
    num_calib: int,
    eval_path: str | None,
    as_json: bool,
    quiet: bool,
    edgetpu: bool,
    require_full_tpu: bool,
    task: str,
    **options: Any,
) -> None:
    """Convert MODEL to a full-int8 TFLite classifier or SSD detector calibrated on your images, with proof.

    MODEL is a .keras/.h5 file, a SavedModel folder, or a built-in architecture: mobilenet_v1, mobilenet_v2,
    mobilenet_v3_small, mobilenet_v3_large. An SSD SavedModel in the TF Object Detection API's TFLite export
    layout converts as a detector (--task detect; mAP of float and int8 with --eval).

    \b
    Exit codes: 0 ok, 2 bad input (nothing written), 3 below --min-agreement or --require-full-tpu (model
    written).
    """
    from edgekit.convert.edgetpu import EdgeTpuStage
    from edgekit.convert.pipeline import ConvertOptions, convert_classifier
    from edgekit.convert.report import to_json, to_text

    stage = EdgeTpuStage(compile=edgetpu, require_full=require_full_tpu)
    opts = ConvertOptions(
        model=model, calib=calib, out=out, num_calib=num_calib, eval=eval_path, extensions=(stage,), **options
    )
    if task == "auto":
        from edgekit.convert.detect.savedmodel import is_detector_saved_model

        task = "detect" if os.path.isdir(model) and is_detector_saved_model(model) else "classify"
    if task == "detect":
        from edgekit.convert.detect.pipeline import convert_detector_from_options, render_report

        detected = convert_detector_from_options(opts)
        if as_json:
            click.echo(json.dumps(detected.to_dict(), indent=2))
        elif not quiet:
            click.echo(render_report(detected))
        stage.enforce(detected.out_dir)
        return
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
    result.enforce()
    stage.enforce(result.out)


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


# --- living on a device: service ---------------------------------------------------------------------------


@cli.group("service")
def service_group() -> None:
    """Run edgekit as a systemd service (install, uninstall, status, logs).

    \b
    One camera:      sudo edgekit service install --config edgekit.toml
    More cameras:    sudo edgekit service install --config porch.toml --name porch   (edgekit@porch)
    """


_name_option = click.option(
    "--name",
    default="edgekit",
    show_default=True,
    help="Config name (/etc/edgekit/NAME.toml); other than edgekit: unit edgekit@NAME.",
)
_user_option = click.option("--user", "user_mode", is_flag=True, help="A user service (systemctl --user).")


@service_group.command("install")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Config to install.")
@_name_option
@_user_option
@click.option("--dry-run", is_flag=True, help="Print every file and command instead of doing anything.")
@click.option("--root", type=click.Path(file_okay=False), help="Write into this root directory; run no command.")
@click.option("--executable", help="The edgekit script for ExecStart (default: the one of this environment).")
def service_install(
    config_path: str | None, name: str, user_mode: bool, dry_run: bool, root: str | None, executable: str | None
) -> None:
    """Install, enable and start the service (after checking the config the way the service will)."""
    from pathlib import Path

    from edgekit.ops import service

    plan, done = service.install(
        Path(config_path) if config_path else None,
        name,
        user_mode,
        Path(root) if root else None,
        executable,
        dry_run,
    )
    if dry_run:
        click.echo(plan.describe(), nl=False)
        return
    for line in done:
        click.echo(line)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)


@service_group.command("uninstall")
@_name_option
@_user_option
@click.option("--purge", is_flag=True, help="Also remove the config file.")
@click.option("--dry-run", is_flag=True, help="Print every file and command instead of doing anything.")
@click.option("--root", type=click.Path(file_okay=False), help="Remove from this root directory; run no command.")
def service_uninstall(name: str, user_mode: bool, purge: bool, dry_run: bool, root: str | None) -> None:
    """Stop, disable and remove the service (the config stays unless --purge)."""
    from pathlib import Path

    from edgekit.ops import service

    plan, done = service.uninstall(name, user_mode, Path(root) if root else None, purge, dry_run)
    click.echo(plan.describe() if dry_run else "\n".join(done), nl=not dry_run)


@service_group.command("status")
@_name_option
@_user_option
@click.pass_context
def service_status(ctx: click.Context, name: str, user_mode: bool) -> None:
    """systemctl status (exit code passed on: 0 running, 3 stopped, 4 not installed)."""
    from edgekit.ops import service

    ctx.exit(service.run_tool(service.status_command(name, user_mode)))


@service_group.command("logs")
@_name_option
@_user_option
@click.option("-n", "--lines", default=50, show_default=True, help="How many recent lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.pass_context
def service_logs(ctx: click.Context, name: str, user_mode: bool, lines: int, follow: bool) -> None:
    """The service's journal (journalctl)."""
    from edgekit.ops import service

    ctx.exit(service.run_tool(service.logs_command(name, user_mode, lines, follow)))
