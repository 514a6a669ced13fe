"""``edgekit sweep``: build a width x resolution grid (laptop), time it (device), report the pick for a budget."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click

from edgekit.model.sweep import ARCHS


def _progress(quiet: bool) -> Any:
    """The CLI's rich bars when available; otherwise one stderr line per step (a Pi may lack rich)."""
    if quiet:
        return None
    from edgekit.cli import _progress_bars

    bars = _progress_bars()
    if bars is not None:
        return bars

    @contextlib.contextmanager
    def lines(label: str, total: int) -> Iterator[Any]:
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            click.echo(f"{label}: {done[0]}/{total}", err=True)

        yield tick

    return lines


@click.group("sweep")
def sweep() -> None:
    """Which MobileNet fits this device? Build a grid, time it here, pick the best under a latency budget."""


@sweep.command("build")
@click.option("--out", default="edgekit-sweep", show_default=True, help="Bundle folder (written atomically).")
@click.option(
    "--arch", multiple=True, type=click.Choice(ARCHS), help="Architecture (repeatable; default mobilenet_v2)."
)
@click.option("--alpha", multiple=True, type=float, help="Width multiplier (repeatable; default 0.35 0.5 0.75 1.0).")
@click.option("--size", multiple=True, type=int, help="Input resolution (repeatable; default 96 128 160).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights and calibration images.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def build_command(
    out: str, arch: tuple[str, ...], alpha: tuple[float, ...], size: tuple[int, ...], seed: int, quiet: bool
) -> None:
    """Convert every arch x width x size to full int8 with seeded random weights (timing needs no training)."""
    from edgekit.convert import sweep as build

    grid = build.Grid(arch or build.DEFAULT_ARCHS, alpha or build.DEFAULT_ALPHAS, size or build.DEFAULT_SIZES, seed)
    folder, data = build.build_bundle(grid, out, _progress(quiet))
    for v in data["variants"]:
        tpu = "compiled" if v["edgetpu_model"] else v["preflight_summary"]
        click.echo(
            f"{v['name']}: {v['params'] / 1e6:.2f}M params, {v['macs'] / 1e6:.0f}M MACs, "
            f"{v['size_bytes'] / 1e6:.2f} MB; {tpu}"
        )
    click.echo(f"wrote {folder} ({len(data['variants'])} variants; {data['weights']})")


@sweep.command("run")
@click.argument("bundle")
@click.option("--out", default="sweep-results.json", show_default=True, help="Results JSON (written atomically).")
@click.option("--threads", "max_threads", default=0, show_default=True, help="Time CPU threads 1..N (0: all cores).")
@click.option("--edgetpu", metavar="DEVICE", help="Also time on this Edge TPU (edgetpu, edgetpu:usb:0, ...).")
@click.option("--warmup", default=5, show_default=True, help="Untimed invocations first.")
@click.option("--min-runs", default=10, show_default=True, help="Timed invocations at least.")
@click.option("--max-runs", default=300, show_default=True, help="Timed invocations at most.")
@click.option("--max-seconds", default=3.0, show_default=True, help="Stop timing one target after this long.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run_command(bundle: str, out: str, quiet: bool, **options: Any) -> None:
    """Time every variant of BUNDLE with the real interpreter here (CPU threads 1..N, and --edgetpu)."""
    from edgekit.device import sweep as timing

    timing.check_results_path(out)
    results = timing.run_bundle(bundle, timing.RunOptions(**options), _progress(quiet))
    path = timing.write_results(results, out)
    click.echo(f"wrote {path} ({len(results['variants'])} variants)")


@sweep.command("report")
@click.argument("results")
@click.option("--budget", help="Latency budget, e.g. 50ms, 50 or 0.05s.")
@click.option(
    "--accuracy", type=click.Path(dir_okay=False), help="Your top-1 table (CSV name,top1) instead of the papers'."
)
@click.option("--out", default="sweep-report", show_default=True, help="Folder for sweep-report.md and .svg.")
def report_command(results: str, budget: str | None, accuracy: str | None, out: str) -> None:
    """Table, picture (latency vs top-1, Pareto front, budget) and the pick; prints the pick."""
    from edgekit.model import sweep as report

    budget_ms = report.parse_budget(budget) if budget is not None else None
    table = report.read_accuracy_csv(accuracy) if accuracy else None
    data = report.read_results(results)
    built = report.build_report(data, budget_ms, table)
    md, svg = report.write_report(built, data, out)
    for fit in built.fits:
        click.echo(
            f"MACs -> latency on {fit.target}: R^2 {fit.r2:.3f}, "
            f"median relative error {100 * fit.median_rel_error:.1f}%"
        )
    click.echo(f"wrote {md} and {svg}")
    click.echo(built.pick_line())
