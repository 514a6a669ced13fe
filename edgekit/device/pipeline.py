"""The frame loop: source -> preprocess into the input tensor -> invoke -> postprocess -> sinks, plus stats.

Cold caches: everything after `invoke()` runs once the interpreter has pushed Python's code and data out of
the CPU caches, where each distinct call costs microseconds, not the nanoseconds a warm microbenchmark shows.
That is why the per-frame code keeps few, plain calls (the one note on it; `benchmarks/pipeline.py` measures it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgekit.device.model import DeviceModel
from edgekit.device.motion import Busy, MotionGate, MotionSettings
from edgekit.device.sinks.base import Sink
from edgekit.device.sources.base import Frame, Source
from edgekit.device.tasks.classify import Classifier
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
    motion: MotionSettings | None = None  # motion gating (`edgekit.device.motion`); None: every frame is inferred


class FrameTap(Protocol):
    """Something that watches processed frames (the preview server): offered every frame, after the sinks.

    ``offer`` runs in the frame loop, so it must be O(1): keep references, never copy, draw or encode there.
    The frame and the record are not modified after the offer, so a reference is enough.
    """

    def offer(self, frame: Frame, result: Mapping[str, Any], geometry: Geometry) -> None: ...

    def offer_event(self, record: Mapping[str, Any]) -> None:
        """An event or snapshot record (`edgekit.device.events`), after the sinks got it; O(1) as well."""
        ...


class EventStage(Protocol):
    """What turns results into event records (`edgekit.device.events.stage.DetectionEvents` for detectors,
    `edgekit.device.events.classify.ClassEvents` for classifiers).

    ``observe`` runs in the frame loop with each result record (which it may amend: filtered detections out,
    ``track_id`` in) and returns the event records to send; ``skipped`` is told of each frame motion gating
    skipped; ``finish`` ends what is open when the run ends.
    """

    @property
    def needs_frames(self) -> bool: ...

    def observe(self, record: dict[str, Any], frame: Frame, geometry: Geometry) -> list[dict[str, Any]]: ...

    def skipped(self, frame: Frame) -> list[dict[str, Any]]: ...

    def finish(self) -> list[dict[str, Any]]: ...

    def has_active_objects(self) -> bool: ...


@runtime_checkable
class SnapshotSink(Protocol):
    """A sink that also takes event snapshots (JPEG bytes): the MQTT sink. Others get no snapshot records."""

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None: ...


class ChangeFilter:
    """Wraps a data sink so it only gets results whose content changed (``--only-changes``).

    "Changed" means: another top class (classification), or another multiset of detected class ids
    (detection). Stats and records that are not results (events) always pass. Sinks that must see every frame
    (the systemd notifier) are not wrapped.
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
        if record.get("type") != "result":
            self.sink.publish_result(record)
            return
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


def percentiles(values: Iterable[float], ndigits: int | None = 2) -> tuple[float, float] | None:
    """The median and 95th percentile of ``values`` (rounded to ``ndigits``), or None when there are none.

    The one percentile helper: stats records, the preview's status and `edgekit bench` all use it.
    """
    data = values if isinstance(values, np.ndarray) else np.fromiter(values, dtype=np.float64)
    if data.size == 0:
        return None
    p50, p95 = (float(v) for v in np.percentile(data, [50, 95]))
    return (p50, p95) if ndigits is None else (round(p50, ndigits), round(p95, ndigits))


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    p50, p95 = percentiles(values) or (None, None)
    return {"p50": p50, "p95": p95}


_END = object()
_NO_IMAGE = np.empty((0, 0, 3), np.uint8)  # a result's frame once its image is no longer needed


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


@dataclass(slots=True)
class Inferred:
    """One frame after inference, on its way to the sinks: what a stream worker hands to the loop."""

    frame: Frame
    geometry: Geometry
    items: list[dict[str, Any]]
    key: str
    asked: float  # monotonic times: the frame was asked for,
    taken: float  # it was there,
    prepared: float  # it was in the input tensor,
    invoked: float  # invoke() returned,
    done: float  # postprocessing ended
    inference_ms: float


class ParallelStreams:
    """Runs several interpreters at once on consecutive frames; the loop gets the results back in frame order.

    The throughput mode (``run.streams``, automatic for files and folders on the CPU): an interpreter's threads
    wait for each other at every layer, so two interpreters with one thread each get more frames through two
    cores than one interpreter with two threads, and each worker also prepares its own frame, so decoding and
    resizing overlap with inference. Each frame's latency grows (one core instead of two per inference), which
    is why live cameras keep one interpreter with every core unless told otherwise.

    Each worker takes the next frame from the source (one at a time), prepares it into its own interpreter's
    input, invokes and postprocesses, and files the result under its sequence number. Sinks are only called
    from the loop's thread. At most ``2 * streams`` results wait for an earlier one, so memory stays flat.

    Args:
        source: the open source (read by the workers, one at a time).
        models: one loaded model per stream (the same .tflite).
        postprocess: turns a model's outputs into (items, key), as the single-stream loop does.
        stop: the pipeline's stop event.
        limit: take at most this many frames (0: no limit).
        keep_images: keep each frame's image with its result (for taps); without taps a result drops it once the
            image is in the input tensor, so waiting results hold no decoded frames (1.1 MB each at 720x528).
    """

    def __init__(
        self,
        source: Source,
        models: Sequence[DeviceModel],
        postprocess: Callable[[DeviceModel, Geometry], tuple[list[dict[str, Any]], str]],
        stop: threading.Event,
        limit: int = 0,
        keep_images: bool = True,
    ) -> None:
        # The workers take turns at the source, so each decodes the frame it takes: a read-ahead thread (a video
        # file's usual way) would add nothing but a hand-over per frame.
        self._frames = source.unbuffered() or iter(source)
        self._postprocess = postprocess
        self._pipeline_stop = stop
        self._limit = limit
        self._window = 2 * len(models)
        self._keep_images = keep_images
        self._closed = False
        self._take = threading.Lock()  # one worker at a time asks the source
        self._cond = threading.Condition()  # guards everything below
        self._taken = 0  # frames handed out so far (the next sequence number)
        self._given = 0  # results handed to the loop so far
        self._end: int | None = None  # the sequence number at which the source ended
        self._done: dict[int, Inferred] = {}
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._work, args=(m,), name=f"stream-{i}", daemon=True)
            for i, m in enumerate(models)
        ]
        for thread in self._threads:
            thread.start()

    def _stopped(self) -> bool:
        return self._closed or self._pipeline_stop.is_set() or self._error is not None

    def _work(self, model: DeviceModel) -> None:
        try:
            while True:
                with self._cond:
                    while self._taken - self._given >= self._window and not self._stopped():
                        self._cond.wait(0.2)
                    if self._stopped() or self._end is not None:
                        return
                with self._take:
                    asked = time.monotonic()
                    frame = None
                    if not (self._limit and self._taken >= self._limit) and self._end is None:
                        frame = next(self._frames, None)
                    with self._cond:
                        if frame is None:
                            if self._end is None:
                                self._end = self._taken
                            self._cond.notify_all()
                            return
                        seq = self._taken
                        self._taken += 1
                taken = time.monotonic()
                geometry = model.set_input(frame.image, frame.color)
                if not self._keep_images:
                    frame = frame._replace(image=_NO_IMAGE)
                prepared = time.monotonic()
                model.invoke()
                invoked = time.monotonic()
                items, key = self._postprocess(model, geometry)
                done = time.monotonic()
                result = Inferred(
                    frame, geometry, items, key, asked, taken, prepared, invoked, done, (invoked - prepared) * 1000
                )
                with self._cond:
                    self._done[seq] = result
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the loop, which raises it on the main thread
            with self._cond:
                self._error = self._error or exc
                self._cond.notify_all()

    def get(self) -> Inferred | None:
        """The next result in frame order, or None at the end of the source, the frame limit, or on stop."""
        with self._cond:
            while self._given not in self._done:
                if self._error is not None:
                    raise self._error
                if self._given == self._end or self._closed or self._pipeline_stop.is_set():
                    return None
                self._cond.wait(0.2)
            result = self._done.pop(self._given)
            self._given += 1
            self._cond.notify_all()
            return result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)


class Pipeline:
    """Runs frames from one source through one model to the sinks until the source ends or `stop` is called.

    Everything expensive (interpreter, buffers, sinks) exists before `run`; the loop does per-frame work only.
    Preprocessing writes straight into the input tensor; the source's capture thread decodes the next frame
    while this one is inferred. With ``replicas``, several interpreters work on consecutive frames at once
    (`ParallelStreams`) and the loop publishes their results in frame order.

    Args:
        model: the loaded model.
        source: the open source.
        sinks: data sinks (wrapped in `ChangeFilter` when ``settings.only_changes``).
        settings: loop settings.
        observers: sinks that see every result and stats record regardless of ``only_changes`` (the systemd
            notifier: it must see results flow to feed the watchdog).
        taps: offered every processed frame with its result (the preview server), see `FrameTap`.
        replicas: more loaded copies of ``model`` (own interpreters) for parallel streams; none: one stream.
        busy: with ``settings.motion``, what tells the gate an object is tracked; none: ``events`` (the tracker).
        events: the event stage (tracking, zones, events) fed with each result; its event records go to the
            data sinks after the result (not to observers).
    """

    def __init__(
        self,
        model: DeviceModel,
        source: Source,
        sinks: Sequence[Sink],
        settings: Settings,
        observers: Sequence[Sink] = (),
        taps: Sequence[FrameTap] = (),
        replicas: Sequence[DeviceModel] = (),
        *,
        busy: Busy | None = None,
        events: EventStage | None = None,
    ) -> None:
        self.model = model
        self.events = events
        self.replicas = list(replicas)
        self.source = source
        self.settings = settings
        self.data_sinks: list[Sink] = [ChangeFilter(s) if settings.only_changes else s for s in sinks]
        self._snapshot_sinks = [s for s in sinks if isinstance(s, SnapshotSink)]
        self.observers = list(observers)
        self._result_sinks = [*self.data_sinks, *self.observers]  # the order records go out in
        self.taps = list(taps)
        self.stats = Stats()
        self.seq = 0
        busy = busy if busy is not None else events
        self.gate = MotionGate(settings.motion, busy) if settings.motion is not None else None
        self._stop = threading.Event()
        self.stop_reason = ""
        self._postprocess: Callable[[DeviceModel, Geometry], tuple[list[dict[str, Any]], str]] = (
            self._classify if model.task == "classify" else self._detect
        )
        if model.task == "classify":
            scores = model.outputs["scores"]
            self._classifier = Classifier(
                model.num_classes,
                model.label,
                settings.top_k,
                settings.threshold,
                scores.scale,
                scores.zero_point,
                scores.dtype,
            )

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
        if interrupt:
            self.source.interrupt()

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
        self._next_stats = time.monotonic() + settings.stats_interval if settings.stats_interval > 0 else math.inf
        # Pacing, motion gating and parallel streams exclude each other (the plan refuses them together).
        parallel = self.replicas and settings.max_fps <= 0 and self.gate is None
        results = self._parallel() if parallel else self._sequential()
        reason = ""
        try:
            for result in results:
                if isinstance(result, Inferred):
                    self._emit(result)
                else:
                    self._skipped(result)
                if self._after_frame():
                    reason = "frames"
                    break
            if self.events is not None:
                for event in self.events.finish():  # the objects still in view: their events end with the run
                    self._send_event(event)
        except BrokenPipeError:
            logger.info("stdout was closed; stopping")
            return "closed"
        finally:
            results.close()  # stops the producer's threads (its own finally)
        return reason or ((self.stop_reason or "stop") if self._stop.is_set() else "end")

    def _sequential(self) -> Generator[Inferred | Frame, None, None]:
        """One interpreter: each frame is prepared (or taken prepared), invoked and postprocessed in turn.

        A frame the motion gate skips comes out as it is (a `Frame`), so stats stay on time on a still scene.
        """
        period = 1.0 / self.settings.max_fps if self.settings.max_fps > 0 else 0.0
        next_due = time.monotonic()
        # Ordered sources (files, folders) are prepared one frame ahead on a second thread; live ones and paced
        # runs are prepared in the loop, so each result is about the newest frame (see Prefetcher).
        prefetch = Prefetcher(self.source, self.model, self._stop) if self._use_prefetch() else None
        frames = iter(self.source) if prefetch is None else None
        model = self.model
        gate = self.gate
        try:
            while not self._stop.is_set():
                if period:
                    # Wait before taking a frame, so a live source hands over its newest one when we are ready.
                    wait = next_due - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    next_due = max(next_due + period, time.monotonic())
                t0 = time.monotonic()
                if prefetch is not None:
                    item = prefetch.get()
                    if item is None or self._stop.is_set():
                        return
                    frame, image, geometry, prepared_s = item
                    if gate is not None and not gate.wants(frame.image, frame.color, frame.monotonic):
                        yield frame
                        continue
                    t1 = time.monotonic()
                    model.load_prepared(image)
                    t2 = time.monotonic()
                    prepared = t2 + prepared_s  # the preprocessing time counts the other thread's share
                else:
                    assert frames is not None
                    taken = next(frames, None)
                    if taken is None or self._stop.is_set():
                        return
                    frame = taken
                    if gate is not None and not gate.wants(frame.image, frame.color, frame.monotonic):
                        yield frame
                        continue
                    t1 = time.monotonic()
                    geometry = model.set_input(frame.image, frame.color)
                    t2 = prepared = time.monotonic()
                model.invoke()
                t3 = time.monotonic()
                items, key = self._postprocess(model, geometry)
                t4 = time.monotonic()
                yield Inferred(frame, geometry, items, key, t0, t1, prepared, t3, t4, (t3 - t2) * 1000)
        finally:
            if prefetch is not None:
                prefetch.close()

    def _parallel(self) -> Generator[Inferred, None, None]:
        """Several interpreters at once (`ParallelStreams`); results in frame order."""
        streams = ParallelStreams(
            self.source,
            [self.model, *self.replicas],
            self._postprocess,
            self._stop,
            self.settings.frames,
            keep_images=bool(self.taps) or (self.events is not None and self.events.needs_frames),
        )
        try:
            while not self._stop.is_set():
                result = streams.get()
                if result is None:
                    return
                yield result
        finally:
            streams.close()

    def _after_frame(self) -> bool:
        """Stats when due; True when the ``frames`` count is reached."""
        if self.settings.frames and self.seq >= self.settings.frames:
            return True
        if time.monotonic() >= self._next_stats:
            self.publish_stats()
            self._next_stats = time.monotonic() + self.settings.stats_interval
        return False

    def _use_prefetch(self) -> bool:
        return self.source.ordered and self.settings.max_fps <= 0

    def _emit(self, result: Inferred) -> None:
        """Publish one inferred frame: the record to the sinks and observers, the frame to the taps, stats."""
        r = result
        self.seq += 1
        record = {
            "type": "result",
            "seq": self.seq,
            "ts": int(r.frame.timestamp * 1000 + 0.5) / 1000,  # round(x, 3) for x > 0, in a fifth of the time
            "frame": r.frame.index,
            "source": self.source.name,
            "camera": self.settings.camera,
            "model": self.model.name,
            "task": self.model.task,
            r.key: r.items,
            "timing_ms": {
                "capture": _ms(r.taken - r.asked),
                "preprocess": _ms(r.prepared - r.taken),
                "inference": _ms(r.inference_ms / 1000),
                "postprocess": _ms(r.done - r.invoked),
                "total": _ms(r.done - r.asked),
            },
        }
        events = self.events.observe(record, r.frame, r.geometry) if self.events is not None else ()
        self._send(record, result=True)
        for event in events:
            self._send_event(event)
        for tap in self.taps:
            tap.offer(r.frame, record, r.geometry)
        self.stats.add(r.inference_ms, (time.monotonic() - r.frame.monotonic) * 1000)

    def _skipped(self, frame: Frame) -> None:
        """A frame the motion gate skipped: no record, but it still counts towards a class event's hold."""
        if self.events is not None:
            for event in self.events.skipped(frame):
                self._send_event(event)

    def _classify(self, model: DeviceModel, geometry: Geometry) -> tuple[list[dict[str, Any]], str]:
        return self._classifier.items(model.output("scores")), "classes"

    def _detect(self, m: DeviceModel, geometry: Geometry) -> tuple[list[dict[str, Any]], str]:
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

    def _send(self, record: Mapping[str, Any], result: bool) -> None:
        """A record to every sink and observer, in order; a sink that fails is logged, not raised.

        BrokenPipeError (stdout's reader went away) and SinkError (a sink that cannot go on) still end the run.
        """
        for sink in self._result_sinks:
            try:
                if result:  # two calls, not one through a chosen bound method: this runs per frame and sink
                    sink.publish_result(record)
                else:
                    sink.publish_stats(record)
            except (BrokenPipeError, SinkError):
                raise
            except Exception as exc:  # one misbehaving sink must not take the camera down with it
                logger.error("sink %s failed on a %s record: %s", sink.name, record.get("type"), exc, exc_info=exc)

    def _send_event(self, record: Mapping[str, Any]) -> None:
        """An event record to every data sink (observers such as the watchdog notifier count results only);
        a snapshot record to the sinks that take snapshots."""
        if record["type"] == "snapshot":
            for snapshot_sink in self._snapshot_sinks:
                try:
                    snapshot_sink.publish_snapshot(record["camera"], record["label"], record["jpeg"])
                except SinkError:
                    raise
                except Exception as exc:
                    logger.error("sink failed on a snapshot: %s", exc, exc_info=exc)
        else:
            for sink in self.data_sinks:
                try:
                    sink.publish_result(record)
                except (BrokenPipeError, SinkError):
                    raise
                except Exception as exc:
                    logger.error("sink %s failed on an event record: %s", sink.name, exc, exc_info=exc)
        for tap in self.taps:
            tap.offer_event(record)

    def publish_stats(self) -> None:
        """Send a stats record to every sink and observer now."""
        counters = {s.name: s.counters() for s in self.data_sinks}
        record = self.stats.report(self.settings.camera, self.source.dropped, counters)
        if self.model.device_state:
            record["device"] = dict(self.model.device_state)
        if self.gate is not None:
            record["motion_skipped"] = self.gate.skipped  # frames not inferred since the start, beside "frames"
        self._send(record, result=False)


def _ms(seconds: float) -> float:
    """A duration (>= 0) in milliseconds to 0.01: what round(x, 2) gives, without its slow exact decimal rounding
    (per frame, with cold caches: see the module docstring)."""
    return int(seconds * 100_000 + 0.5) / 100


def _dequantized(model: DeviceModel, role: str) -> np.ndarray:
    from edgekit.device.tasks import dequantize

    out = model.outputs[role]
    return dequantize(model.output(role), out.scale, out.zero_point)
