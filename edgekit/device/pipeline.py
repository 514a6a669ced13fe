"""The frame loop: source -> preprocess into the input tensor -> invoke -> postprocess -> sinks, plus stats."""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgekit.device.model import DeviceModel
from edgekit.device.sinks.base import Sink
from edgekit.device.sources.base import Frame, Source
from edgekit.device.tasks.classify import Class, get_classes
from edgekit.device.tasks.detect import Detection, get_detections
from edgekit.errors import SinkError
from edgekit.model.preprocess import Geometry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Per-run choices the loop needs (from ``RunConfig``, resolved once)."""

    camera: str
    top_k: int = 3
    threshold: float = 0.0
    class_ids: frozenset[int] | None = None
    max_fps: float = 0.0
    frames: int = 0
    only_changes: bool = False
    stats_interval: float = 10.0


class FrameTap(Protocol):
    """Something that watches processed frames (the preview server): offered every frame, after the sinks.

    ``offer`` runs in the frame loop, so it must be O(1): keep references, never copy, draw or encode there.
    The frame and the record are not modified after the offer, so a reference is enough.
    """

    def offer(self, frame: Frame, result: Mapping[str, Any], geometry: Geometry) -> None: ...


class ChangeFilter:
    """Wraps a data sink so it only gets results whose content changed (``--only-changes``).

    "Changed" means: another top class (classification), or another multiset of detected class ids
    (detection). Stats always pass. Sinks that must see every frame (the systemd notifier) are not wrapped.
    """

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.name = sink.name
        self._last: Any = object()
        self.suppressed = 0

    @staticmethod
    def key(record: Mapping[str, Any]) -> Any:
        if "classes" in record:
            classes = record["classes"]
            return classes[0]["id"] if classes else None
        return tuple(sorted(d["id"] for d in record["detections"]))

    def publish_result(self, record: Mapping[str, Any]) -> None:
        key = self.key(record)
        if key == self._last:
            self.suppressed += 1
            return
        self._last = key
        self.sink.publish_result(record)

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        self.sink.publish_stats(record)

    def counters(self) -> Mapping[str, int | float]:
        return {**self.sink.counters(), "suppressed": self.suppressed}

    def close(self) -> None:
        self.sink.close()


class Stats:
    """Rolling numbers for the stats record: a window of per-frame times since the last report."""

    def __init__(self, window: int = 4096) -> None:
        self.started = time.monotonic()
        self.frames = 0
        self._inference: deque[float] = deque(maxlen=window)
        self._latency: deque[float] = deque(maxlen=window)
        self._window_frames = 0
        self._window_start = self.started

    def add(self, inference_ms: float, latency_ms: float) -> None:
        self.frames += 1
        self._window_frames += 1
        self._inference.append(inference_ms)
        self._latency.append(latency_ms)

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """Inference and capture-to-publish milliseconds of the frames in the current window."""
        return np.fromiter(self._inference, np.float64), np.fromiter(self._latency, np.float64)

    def report(self, camera: str, dropped: int, sinks: Mapping[str, Mapping[str, int | float]]) -> dict[str, Any]:
        """The stats record for the window that ends now, and start a new window."""
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-9)
        record = {
            "type": "stats",
            "ts": round(time.time(), 3),
            "camera": camera,
            "uptime_s": round(now - self.started, 1),
            "frames": self.frames,
            "fps": round(self._window_frames / elapsed, 2),
            "inference_ms": _percentiles(self._inference),
            "latency_ms": _percentiles(self._latency),
            "dropped": dropped,
            "sinks": {name: dict(c) for name, c in sinks.items()},
        }
        self._inference.clear()
        self._latency.clear()
        self._window_frames = 0
        self._window_start = now
        return record


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    data = np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(data, [50, 95])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


_END = object()


class Prefetcher:
    """Takes frames from an ordered source and preprocesses them on a second thread, one frame ahead.

    For files and folders, throughput is the goal: cropping and resizing frame n+1 (0.1-0.4 ms for a 720p frame)
    overlaps with inference on frame n, so the loop only copies the prepared image into the
    input tensor. Live sources do not use it: a prepared frame waiting here would be one inference older than
    the newest frame the camera has, so they are prepared in the loop instead (freshness over throughput).

    Three buffers rotate: the loop reads one, one waits in the queue, the thread writes the third; the thread
    can only reuse a buffer after the loop has taken the next one, i.e. finished copying the old one.
    """

    def __init__(self, source: Source, model: DeviceModel, stop: threading.Event) -> None:
        h, w = model.input_size
        self._buffers = [np.empty((h, w, 3), np.uint8) for _ in range(3)]
        self._source, self._model, self._pipeline_stop = source, model, stop
        self._closed = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
        self._thread.start()

    def _stopped(self) -> bool:
        return self._pipeline_stop.is_set() or self._closed.is_set()

    def _put(self, item: Any) -> bool:
        while not self._stopped():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            frames = iter(self._source)
            for i in itertools.count():
                frame = next(frames, None)
                if frame is None or self._stopped():
                    self._put(_END)
                    return
                t0 = time.monotonic()
                buffer = self._buffers[i % 3]
                geometry = self._model.prepare(frame.image, frame.color, buffer)
                if not self._put((frame, buffer, geometry, time.monotonic() - t0)):
                    return
        except BaseException as exc:  # handed to the loop, which raises it on the main thread
            self._put(exc)

    def get(self) -> tuple[Frame, np.ndarray, Geometry, float] | None:
        """The next prepared frame, or None at the end of the source or on stop."""
        while not self._stopped():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                return None
            if isinstance(item, BaseException):
                raise item
            return item
        return None

    def close(self) -> None:
        self._closed.set()
        # Empty the queue so that a thread blocked handing over its next frame sees the flag at once.
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()
        self._thread.join(timeout=5.0)


class Pipeline:
    """Runs frames from one source through one model to the sinks until the source ends or `stop` is called.

    Everything expensive (interpreter, buffers, sinks) exists before `run`; the loop does per-frame work only.
    Preprocessing writes straight into the input tensor; the source's capture thread decodes the next frame
    while this one is inferred.

    Args:
        model: the loaded model.
        source: the open source.
        sinks: data sinks (wrapped in `ChangeFilter` when ``settings.only_changes``).
        settings: loop settings.
        observers: sinks that see every result and stats record regardless of ``only_changes`` (the systemd
            notifier: it must see results flow to feed the watchdog).
        taps: offered every processed frame with its result (the preview server), see `FrameTap`.
    """

    def __init__(
        self,
        model: DeviceModel,
        source: Source,
        sinks: Sequence[Sink],
        settings: Settings,
        observers: Sequence[Sink] = (),
        taps: Sequence[FrameTap] = (),
    ) -> None:
        self.model = model
        self.source = source
        self.settings = settings
        self.data_sinks: list[Sink] = [ChangeFilter(s) if settings.only_changes else s for s in sinks]
        self.observers = list(observers)
        self.taps = list(taps)
        self.stats = Stats()
        self.seq = 0
        self._stop = threading.Event()
        self.stop_reason = ""
        self._postprocess: Callable[[Any], tuple[list[dict[str, Any]], str]] = (
            self._classify if model.task == "classify" else self._detect
        )
        scores = model.outputs["scores"]
        self._scores_q = (scores.scale, scores.zero_point)

    # --- control (safe to call from a signal handler) ------------------------------------------------------

    def stop(self, reason: str = "stop", interrupt: bool = True) -> None:
        """Ask the loop to finish after the current frame.

        Args:
            reason: what `run` returns.
            interrupt: also wake a source waiting for a frame (which ends it); a reload passes False so the
                source stays usable, and takes effect at the next frame.
        """
        self.stop_reason = reason
        self._stop.set()
        wake = getattr(self.source, "interrupt", None) if interrupt else None
        if wake is not None:
            wake()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self) -> str:
        """Process frames until the source ends, ``frames`` are done, or `stop`.

        Returns:
            Why it ended: ``end`` (source finished), ``frames`` (the count was reached), or the reason given to
            `stop` (``stop``, ``reload``, ``closed`` when stdout's reader went away).
        """
        settings = self.settings
        period = 1.0 / settings.max_fps if settings.max_fps > 0 else 0.0
        next_due = time.monotonic()
        next_stats = time.monotonic() + settings.stats_interval if settings.stats_interval > 0 else float("inf")
        # Ordered sources (files, folders) are prepared one frame ahead on a second thread; live ones and paced
        # runs are prepared in the loop, so each result is about the newest frame (see Prefetcher).
        prefetch = Prefetcher(self.source, self.model, self._stop) if self._use_prefetch() else None
        frames = iter(self.source) if prefetch is None else None
        reason = "end"
        try:
            while not self._stop.is_set():
                if period:
                    # Wait before taking a frame, so a live source hands over its newest one when we are ready.
                    wait = next_due - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        break
                    next_due = max(next_due + period, time.monotonic())
                t0 = time.monotonic()
                if prefetch is not None:
                    item = prefetch.get()
                    if item is None or self._stop.is_set():
                        break
                    frame, image, geometry, prepared_s = item
                    t1 = time.monotonic()
                    self.model.load_prepared(image)
                    self._process(frame, geometry, t0, t1, time.monotonic() + prepared_s)
                else:
                    assert frames is not None
                    taken = next(frames, None)
                    if taken is None or self._stop.is_set():
                        break
                    t1 = time.monotonic()
                    geometry = self.model.set_input(taken.image, taken.color)
                    self._process(taken, geometry, t0, t1, time.monotonic())
                if settings.frames and self.seq >= settings.frames:
                    reason = "frames"
                    break
                if time.monotonic() >= next_stats:
                    self.publish_stats()
                    next_stats = time.monotonic() + settings.stats_interval
        except BrokenPipeError:
            logger.info("stdout was closed; stopping")
            return "closed"
        finally:
            if prefetch is not None:
                prefetch.close()
        if self._stop.is_set():
            reason = self.stop_reason or "stop"
        return reason

    def _use_prefetch(self) -> bool:
        return bool(getattr(self.source, "ordered", False)) and self.settings.max_fps <= 0

    def _process(self, frame: Frame, geometry: Geometry, t0: float, t1: float, t2: float) -> None:
        """Invoke, postprocess and publish one frame whose input is in place.

        ``t0``: the loop asked for the frame; ``t1``: it had it; ``t2 - t1``: preprocessing time (for a prefetched
        frame, the time spent on the other thread plus the copy into the tensor).
        """
        model = self.model
        t2_now = time.monotonic()
        model.invoke()
        t3 = time.monotonic()
        items, key = self._postprocess(geometry)
        t4 = time.monotonic()
        self.seq += 1
        record = {
            "type": "result",
            "seq": self.seq,
            "ts": round(frame.timestamp, 3),
            "frame": frame.index,
            "source": self.source.name,
            "camera": self.settings.camera,
            "model": model.name,
            "task": model.task,
            key: items,
            "timing_ms": {
                "capture": round((t1 - t0) * 1000, 2),
                "preprocess": round((t2 - t1) * 1000, 2),
                "inference": round((t3 - t2_now) * 1000, 2),
                "postprocess": round((t4 - t3) * 1000, 2),
                "total": round((t4 - t0) * 1000, 2),
            },
        }
        self._publish_result(record)
        for tap in self.taps:
            tap.offer(frame, record, geometry)
        self.stats.add((t3 - t2_now) * 1000, (time.monotonic() - frame.monotonic) * 1000)

    def _classify(self, geometry: Any) -> tuple[list[dict[str, Any]], str]:
        classes: tuple[Class, ...] = get_classes(
            self.model.output("scores"), self.settings.top_k, self.settings.threshold, *self._scores_q
        )
        label = self.model.label
        return [{"id": c.id, "label": label(c.id), "score": round(c.score, 4)} for c in classes], "classes"

    def _detect(self, geometry: Any) -> tuple[list[dict[str, Any]], str]:
        m = self.model
        detections: tuple[Detection, ...] = get_detections(
            _dequantized(m, "boxes"),
            _dequantized(m, "classes"),
            _dequantized(m, "scores"),
            _dequantized(m, "count"),
            geometry,
            self.settings.threshold,
            self.settings.class_ids,
            self.settings.top_k,
        )
        return [
            {
                "id": d.id,
                "label": m.label(d.id),
                "score": round(d.score, 4),
                "box": {k: round(getattr(d.bbox, k), 1) for k in ("xmin", "ymin", "xmax", "ymax")},
                "box_norm": {k: round(getattr(d.bbox_norm, k), 4) for k in ("xmin", "ymin", "xmax", "ymax")},
            }
            for d in detections
        ], "detections"

    def _publish_result(self, record: Mapping[str, Any]) -> None:
        for sink in self.data_sinks:
            _guarded(sink, sink.publish_result, record)
        for observer in self.observers:
            _guarded(observer, observer.publish_result, record)

    def publish_stats(self) -> None:
        """Send a stats record to every sink and observer now."""
        counters = {s.name: s.counters() for s in self.data_sinks}
        record = self.stats.report(self.settings.camera, int(getattr(self.source, "dropped", 0)), counters)
        if self.model.device_state:
            record["device"] = dict(self.model.device_state)
        for sink in [*self.data_sinks, *self.observers]:
            _guarded(sink, sink.publish_stats, record)


def _dequantized(model: DeviceModel, role: str) -> np.ndarray:
    from edgekit.device.tasks import dequantize

    out = model.outputs[role]
    return dequantize(model.output(role), out.scale, out.zero_point)


def _guarded(sink: Any, publish: Callable[[Mapping[str, Any]], None], record: Mapping[str, Any]) -> None:
    try:
        publish(record)
    except BrokenPipeError:
        raise
    except SinkError:
        raise
    except Exception as exc:  # one misbehaving sink must not take the camera down with it
        logger.error("sink %s failed on a %s record: %s", sink.name, record.get("type"), exc, exc_info=True)
