"""`edgekit run`: config -> objects (all validated before anything starts), signals, reload, clean shutdown.

Exit codes (documented in the README):

    0   the source ended (end of a video file or image folder), --frames were done, or SIGTERM/SIGINT
        asked us to stop; sinks were flushed and closed
    1   an unexpected internal error (a bug: please report it with the -vv output)
    2   bad input: the config, model, labels, source or a sink is wrong or failed for good (one-line message)

SIGHUP re-reads the config file: when the new one is valid, the model, source and sinks are rebuilt from it;
when it is not, the error is logged and the running configuration stays.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.config import Config, MotionConfig, RunConfig
from edgekit.device import notify
from edgekit.device.model import DeviceModel, open_model
from edgekit.device.motion import MotionSettings
from edgekit.device.pipeline import EventStage, Pipeline, Settings
from edgekit.device.sinks.base import Sink
from edgekit.device.sources.base import Source
from edgekit.errors import ConfigError, EdgekitError
from edgekit.plan import RunPlan, load_plan

logger = logging.getLogger(__name__)


def plan_streams(plan: RunPlan) -> tuple[int, int]:
    """How many interpreters work at once (`edgekit.device.pipeline.ParallelStreams`), and threads for each.

    ``run.streams`` 0 (automatic) gives two for a file or folder on the CPU with two or more threads, where
    throughput is the goal, and one otherwise: a live camera wants each frame's result soonest, an Edge TPU runs
    one model at a time, and a paced run (``max_fps``) needs no more. ``run.threads`` is shared among them.
    """
    from edgekit.device import runtime

    run = plan.config.run
    total = run.threads or runtime.default_threads()
    if run.streams:
        streams = run.streams
    elif (
        total >= 2
        and run.max_fps <= 0
        and not plan.config.motion.enabled  # the gate sees frames in order (see `edgekit.plan.build_plan`)
        and not plan.device.is_edgetpu
        and plan.source is not None
        and plan.source.ordered
    ):
        streams = 2
    else:
        streams = 1
    return streams, max(1, total // streams)


def camera_name(run: RunConfig) -> str:
    """The name records carry: ``run.camera``, or the host name."""
    return run.camera or socket.gethostname()


def class_filter(model: DeviceModel, wanted: list[str], where: str = "config") -> frozenset[int] | None:
    """Resolve ``run.classes`` (labels or ids) to class ids.

    Raises:
        ConfigError: a label the model does not have.
    """
    if not wanted:
        return None
    by_label = {label.lower(): i for i, label in model.labels.items()}
    ids = set()
    for item in wanted:
        if item.strip().isdigit():
            ids.add(int(item))
        elif item.strip().lower() in by_label:
            ids.add(by_label[item.strip().lower()])
        else:
            raise ConfigError(f"{where}: key 'run.classes': {item!r} is not a label of {model.path.name}")
    return frozenset(ids)


@dataclass
class Parts:
    """Everything a run holds open."""

    plan: RunPlan
    model: DeviceModel
    settings: Settings
    replicas: list[DeviceModel] = field(default_factory=list)  # more interpreters of the model (streams)
    source: Source | None = None
    sinks: list[Sink] = field(default_factory=list)
    observers: list[Sink] = field(default_factory=list)
    events: EventStage | None = None  # tracking, zones and events of a detection run

    @property
    def config(self) -> Config:
        return self.plan.config

    def close(self) -> None:
        """Close sinks first (flushing what they hold), then the source; keep going when one fails."""
        for sink in [*self.sinks, *self.observers]:
            try:
                sink.close()
            except Exception as exc:
                logger.error("closing sink %s failed: %s", sink.name, exc)
        self.sinks, self.observers = [], []
        if self.source is not None:
            try:
                self.source.close()
            except Exception as exc:
                logger.error("closing source %s failed: %s", self.source.name, exc)
            self.source = None


def prepare(plan: RunPlan, probe: bool = True) -> Parts:
    """Load the model of a checked plan: everything that can fail before a camera or broker is touched.

    Args:
        plan: the run plan (`edgekit.plan.build_plan` checked every config rule).
        probe: load the model in a forked child first (see `edgekit.device.runtime`).

    Returns:
        Parts with the model and settings (no source or sinks yet).
    """
    run, where = plan.config.run, plan.where
    if not run.model:
        raise ConfigError(f"{where}: no model; pass --model DIR_OR_TFLITE or set 'run.model'")
    streams, threads = plan_streams(plan)
    downscale = None if run.downscale == "model" else run.downscale
    model = open_model(
        run.model,
        plan.device,
        threads,
        run.task,
        run.labels,
        downscale,
        probe=probe,
        fallback_cpu=run.fallback == "cpu",
    )
    replicas = [
        open_model(run.model, plan.device, threads, run.task, run.labels, downscale, probe=False)
        for _ in range(streams - 1)
    ]
    settings = Settings(
        camera=camera_name(run),
        top_k=run.top_k,
        threshold=run.threshold,
        class_ids=class_filter(model, run.classes, where),
        max_fps=run.max_fps,
        frames=run.frames,
        only_changes=run.only_changes,
        stats_interval=run.stats_interval,
        motion=motion_settings(plan.config.motion),
    )
    if run.class_events and model.task != "classify":
        raise ConfigError(
            f"{where}: key 'run.class_events': {model.path.name} is a detector; class events are for classifiers"
        )
    return Parts(plan, model, settings, replicas, events=event_stage(plan, model))


def event_stage(plan: RunPlan, model: DeviceModel) -> EventStage | None:
    """The event stage: tracking and events of a detection run (None with ``tracking.enabled`` off), or a
    classifier's class events (None unless ``run.class_events``).

    Raises:
        ConfigError: a bad zone or mask polygon, or a label the model does not have (naming the key path).
    """
    if model.task != "detect":
        run = plan.config.run
        if not run.class_events:
            return None
        from edgekit.device.events.classify import ClassEvents

        return ClassEvents(camera_name(run), run.class_events, run.class_event_step)
    from edgekit.device.events.spec import build_spec
    from edgekit.device.events.stage import DetectionEvents

    spec = build_spec(plan.config, list(model.labels.values()), model.path.name, plan.where)
    return DetectionEvents(spec) if spec is not None else None


def motion_settings(motion: MotionConfig) -> MotionSettings | None:
    """The gate's settings from ``[motion]``, or None when gating is off."""
    if not motion.enabled:
        return None
    return MotionSettings(
        threshold=motion.threshold, min_area=motion.min_area, keyframe=motion.keyframe, width=motion.width
    )


def open_io(parts: Parts) -> Parts:
    """Open the source and the sinks of prepared parts (closing what was opened when one fails)."""
    from edgekit.device import sinks, sources

    plan = parts.plan
    if plan.source is None:
        raise ConfigError(f"{plan.where}: no source; pass --source or set 'run.source'")
    try:
        parts.source = sources.create(plan.source, size=parts.model.input_size)
        for spec in plan.sinks:
            parts.sinks.append(sinks.create(spec))
    except BaseException:
        parts.close()
        raise
    return parts


@contextlib.contextmanager
def _signals(handlers: Mapping[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """Install signal handlers for the duration of the run (main thread only; elsewhere, e.g. tests, none)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def call(handler: Callable[[], None]) -> Callable[[int, Any], None]:
        return lambda _signum, _frame: handler()

    previous = {}
    for signum, handler in handlers.items():
        previous[signum] = signal.signal(signum, call(handler))
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def serve(
    config_path: str | Path | None,
    overrides: Mapping[str, Any] | None = None,
    on_start: Callable[[Pipeline], None] | None = None,
) -> str:
    """Run until the source ends, the frame count is reached, or a signal stops us.

    Args:
        config_path: the TOML file (None: defaults and overrides only).
        overrides: command-line values (dotted keys), applied over the file.
        on_start: called with each new pipeline before it runs (tests use it to stop or reload).

    Returns:
        Why the run ended (``end``, ``frames``, ``stop``, ``closed``).

    Raises:
        EdgekitError: bad config, model, source or sink (before the loop starts, or a sink/source failure).
    """
    plan = load_plan(config_path, overrides)
    parts = open_io(prepare(plan))
    pipeline: Pipeline | None = None
    # Outlives reloads (a reload is no STOPPING=1); a no-op unless systemd gave us $NOTIFY_SOCKET.
    notifier = notify.create(max_fps=plan.config.run.max_fps)
    motion = parts.settings.motion
    if motion is not None and notifier.watchdog_s and motion.keyframe > notifier.watchdog_s / 2:
        logger.warning(
            "motion.keyframe=%g s: a still scene gives a result that seldom, but the watchdog expects a ping every "
            "%.0f s; lower motion.keyframe",
            motion.keyframe,
            notifier.watchdog_s / 2,
        )
    preview, server = None, None
    if plan.http is not None:
        from edgekit.device import http

        try:
            preview, server = http.start(plan.http, plan.where)
        except BaseException:
            parts.close()
            raise

    def stop() -> None:
        if pipeline is not None:
            pipeline.stop("stop")

    def reload() -> None:
        if pipeline is not None:
            # No interrupt: the source stays usable if the new config turns out invalid.
            pipeline.stop("reload", interrupt=False)

    try:
        with _signals({signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}):
            while True:
                assert parts.source is not None
                observers = [*parts.observers, notifier]
                taps = [preview] if preview is not None else []
                pipeline = Pipeline(
                    parts.model,
                    parts.source,
                    parts.sinks,
                    parts.settings,
                    observers,
                    taps,
                    parts.replicas,
                    events=parts.events,
                )
                if preview is not None:
                    preview.attach(pipeline, parts.plan.device)
                logger.info(
                    "running %s (%s, %s%s) on %s -> %s",
                    parts.model.name,
                    parts.model.task,
                    parts.config.run.device,
                    f", {len(parts.replicas) + 1} streams" if parts.replicas else "",
                    parts.source.name,
                    ", ".join(s.name for s in parts.sinks),
                )
                if on_start is not None:
                    on_start(pipeline)
                watcher = None
                if parts.model.device_state.get("active") == "cpu":
                    from edgekit.device.edgetpu import TpuWatcher

                    watcher = TpuWatcher(reload).start()  # an Edge TPU that appears triggers a reload onto it
                reason = pipeline.run()
                if watcher is not None:
                    watcher.stop()
                if parts.settings.stats_interval > 0 and reason != "closed" and pipeline.seq:
                    pipeline.publish_stats()  # the last window, so a short run still reports its numbers
                if reason != "reload":
                    return reason
                notifier.reloading()
                parts = _reload(parts, config_path, overrides)
    finally:
        if server is not None:
            server.close()
        parts.close()
        notifier.close()


def _reload(parts: Parts, config_path: str | Path | None, overrides: Mapping[str, Any] | None) -> Parts:
    """Build parts from the config file as it is now; keep the running ones when it is invalid."""
    logger.warning("SIGHUP: reloading %s", parts.plan.where)
    try:
        new = prepare(load_plan(config_path, overrides), probe=False)
    except EdgekitError as exc:
        logger.error("reload failed, keeping the running configuration: %s", exc.message)
        return parts
    parts.close()
    return open_io(new)


def validate(config_path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunPlan:
    """``--validate-config``: the plan `serve` runs, and its model loaded, without opening source or sinks.

    Returns:
        The checked plan.
    """
    plan = load_plan(config_path, overrides)
    prepare(plan)
    if plan.source is None:
        raise ConfigError(f"{plan.where}: no source; pass --source or set 'run.source'")
    return plan
