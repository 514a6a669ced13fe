"""The live preview page, MJPEG stream, status JSON and Prometheus metrics of `edgekit run` (``--http``).

The frame loop pays almost nothing for it: `Preview.offer` (a `FrameTap`) keeps a reference to the newest frame
and its result record and bumps a few counters. Drawing and JPEG encoding happen on the server's threads, at
most ``http.fps`` times a second, once per frame however many people watch, and not at all when nobody does.
Metrics are read when Prometheus scrapes, not pushed from the loop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.device.pipeline import percentiles
from edgekit.errors import ConfigError, MissingExtra
from edgekit.plan import DeviceSpec, HttpSpec

if TYPE_CHECKING:
    from edgekit.device.pipeline import Pipeline
    from edgekit.device.sources.base import Frame
    from edgekit.model.preprocess import Geometry

logger = logging.getLogger(__name__)

# Inference latency histogram bounds (ms). Covers an Edge TPU (~2-10 ms) up to a big model on a Pi Zero.
LATENCY_BOUNDS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0)
_BOUNDARY = "edgekit-frame"
_KEPT_EVENTS = 50  # events (and snapshots) the preview remembers
_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Preview:
    """The `FrameTap` the pipeline offers each processed frame to, and the state the HTTP handlers read.

    Args:
        fps: most frames per second a viewer's stream gets.
        jpeg_quality: OpenCV's JPEG quality, 1..100.
    """

    def __init__(self, fps: float = 5.0, jpeg_quality: int = 80) -> None:
        self.fps = fps
        self.jpeg_quality = jpeg_quality
        self.started = time.monotonic()
        # Written only by the frame loop (one writer), read by the handlers: plain attributes, no lock. A
        # reader may see the count one frame ahead of the sum; Prometheus tolerates that.
        self._latest: tuple[int, Frame, Mapping[str, Any]] | None = None
        self.frames = 0
        self._buckets = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self._latency_sum_ms = 0.0
        self._times: deque[float] = deque(maxlen=256)
        self._inference: deque[float] = deque(maxlen=1024)
        # Written by the daemon between runs.
        self._pipeline: Pipeline | None = None
        self._device = DeviceSpec("cpu")
        self._dropped_before = 0
        self._reopens_before = 0
        # Shared by the handlers.
        self._lock = threading.Lock()
        self._encoded: tuple[int, bytes] | None = None
        self.encoded = 0
        self.viewers = 0
        self.closing = threading.Event()
        # Recent events (the newest record of each, by event id) and their snapshots: written by the loop only.
        self._events: dict[str, Mapping[str, Any]] = {}
        self._snapshots: dict[str, bytes] = {}

    # --- the frame loop's side (FrameTap) -------------------------------------------------------------------

    def offer(self, frame: Frame, result: Mapping[str, Any], geometry: Geometry) -> None:
        """Keep a reference to the newest frame and its result; O(1), no copy, no encoding."""
        ms = result["timing_ms"]["inference"]
        self.frames += 1
        self._latest = (self.frames, frame, result)
        self._buckets[bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
        self._latency_sum_ms += ms
        self._times.append(time.monotonic())
        self._inference.append(ms)

    def offer_event(self, record: Mapping[str, Any]) -> None:
        """Keep an event record (or an event's snapshot) for /api/events; O(1), the last `_KEPT_EVENTS` only."""
        kept: dict[str, Any] = self._snapshots if record["type"] == "snapshot" else self._events
        event_id = str(record["id"])
        kept.pop(event_id, None)  # re-inserted last: dicts keep insertion order
        kept[event_id] = record["jpeg"] if record["type"] == "snapshot" else record
        if len(kept) > _KEPT_EVENTS:
            kept.pop(next(iter(kept)))

    def events(self) -> list[dict[str, Any]]:
        """What /api/events returns: the recent events, newest first, each with its snapshot's URL (or null)."""
        snapshots = set(self._snapshots)
        return [
            {**e, "snapshot": f"api/events/{e['id']}/snapshot.jpg" if e["id"] in snapshots else None}
            for e in reversed(list(self._events.values()))  # list(): one C call, atomic against the loop
        ]

    def event_snapshot(self, event_id: str) -> bytes | None:
        return self._snapshots.get(event_id)

    # --- the daemon's side ----------------------------------------------------------------------------------

    def attach(self, pipeline: Pipeline, device: DeviceSpec) -> None:
        """Follow a new pipeline (at start and after each SIGHUP reload); counters keep counting across them."""
        old = self._pipeline
        if old is not None:
            self._dropped_before += _dropped(old)
            self._reopens_before += _reopens(old)
        self._pipeline, self._device = pipeline, device

    # --- the handlers' side ---------------------------------------------------------------------------------

    def jpeg(self) -> tuple[int, bytes] | None:
        """The newest frame with its result drawn, as JPEG, and its number; encoded once per frame."""
        latest = self._latest
        if latest is None:
            return None
        number, frame, record = latest
        with self._lock:
            if self._encoded is None or self._encoded[0] != number:
                self._encoded = (number, render_jpeg(frame.image, frame.color, record, self.jpeg_quality))
                self.encoded += 1
            return self._encoded

    def dropped(self) -> int:
        """Frames the sources lost, over every pipeline this preview followed."""
        return self._dropped_before + (_dropped(self._pipeline) if self._pipeline else 0)

    def reopens(self) -> int:
        """Times the sources were reopened after a stall or an error."""
        return self._reopens_before + (_reopens(self._pipeline) if self._pipeline else 0)

    def recent_fps(self, window_s: float = 5.0) -> float:
        """Frames per second over the last ``window_s`` seconds (0 when the loop stalled)."""
        times = tuple(self._times)  # one C call: atomic against the loop's appends
        now = time.monotonic()
        recent = [t for t in times if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def edgetpu_state(self) -> str:
        """``none`` (CPU model), ``edgetpu``, or ``cpu-fallback`` (the model's ``device_state``: on the CPU)."""
        if not self._device.is_edgetpu:
            return "none"
        model = self._pipeline.model if self._pipeline else None
        return "cpu-fallback" if model is not None and model.device_state.get("active") == "cpu" else "edgetpu"

    def sink_counters(self) -> dict[str, dict[str, int | float]]:
        """Each data sink's counters, read now."""
        pipeline = self._pipeline
        if pipeline is None:
            return {}
        out = {}
        for sink in pipeline.data_sinks:
            try:
                out[sink.name] = dict(sink.counters())
            except Exception:  # a sink mid-reconnect must not break the page
                logger.debug("counters of sink %s failed", sink.name, exc_info=True)
        return out

    def status(self) -> dict[str, Any]:
        """What /api/status returns: the newest result and the numbers the page shows."""
        pipeline = self._pipeline
        latest = self._latest
        p50, p95 = percentiles(tuple(self._inference)) or (None, None)
        model = pipeline.model if pipeline else None
        return {
            "camera": pipeline.settings.camera if pipeline else None,
            "source": pipeline.source.name if pipeline else None,
            "model": {
                "name": model.name,
                "task": model.task,
                "file": model.path.name,
                "input": [*model.input_size, 3],
                "input_type": model.input_dtype,
                "labels": len(model.labels),
            }
            if model
            else None,
            "device": str(self._device),
            "edgetpu": self.edgetpu_state(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "frames": self.frames,
            "fps": round(self.recent_fps(), 2),
            "inference_ms": {"p50": p50, "p95": p95},
            "dropped": self.dropped(),
            "reopens": self.reopens(),
            "sinks": self.sink_counters(),
            "viewers": self.viewers,
            "stream_fps": self.fps,
            "result": dict(latest[2]) if latest else None,
        }

    def latency_histogram(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (one per bound, then +Inf) and the sum, in milliseconds."""
        counts = list(self._buckets)
        total = 0
        cumulative = []
        for c in counts:
            total += c
            cumulative.append(total)
        return cumulative, self._latency_sum_ms


@functools.cache
def _page_html() -> bytes:
    """The preview page (HTML, CSS and JS in one file), shipped as package data beside this module."""
    return (resources.files("edgekit.device") / "web" / "preview.html").read_bytes()


def _dropped(pipeline: Pipeline) -> int:
    return pipeline.source.dropped


def _reopens(pipeline: Pipeline) -> int:
    return pipeline.source.reopens


# --- drawing --------------------------------------------------------------------------------------------------


def _color(class_id: int) -> tuple[int, int, int]:
    """A stable, bright BGR colour per class id."""
    hue = (class_id * 47) % 180
    import cv2

    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    """Text on a filled box whose top-left corner is (x, y), kept inside the image."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, round(scale * 1.5))
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    x = min(max(x, 0), max(image.shape[1] - w - 4, 0))
    y = min(max(y, 0), max(image.shape[0] - h - base - 4, 0))
    cv2.rectangle(image, (x, y), (x + w + 4, y + h + base + 4), color, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y + h + 2), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def draw(image: np.ndarray, record: Mapping[str, Any]) -> np.ndarray:
    """Draw a result record's detections (boxes) or top classes (text) onto a BGR image in place.

    Args:
        image: (H, W, 3) uint8 BGR, the frame the record is about.
        record: a result record (``detections`` with source-pixel boxes, or ``classes``).

    Returns:
        ``image``.
    """
    import cv2

    height, width = image.shape[:2]
    scale = max(0.4, min(height, width) / 700)
    thickness = max(1, round(min(height, width) / 300))
    for det in record.get("detections", ()):
        box, color = det["box"], _color(int(det["id"]))
        x0, y0, x1, y1 = (round(box[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness)
        text = f"{det['label']} {det['score']:.2f}"
        (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        _label(image, text, x0, y0 - th - 8 if y0 > th + 8 else y0, color, scale)
    y = 4
    for cls in record.get("classes", ()):
        text = f"{cls['label']} {cls['score']:.2f}"
        _label(image, text, 4, y, _color(int(cls["id"])), scale)
        y += cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] + 14
    return image


def render_jpeg(image: np.ndarray, color: str, record: Mapping[str, Any], quality: int = 80) -> bytes:
    """A copy of the frame with the result drawn on it, JPEG-encoded (the frame itself is not touched).

    Args:
        image: the frame, (H, W, 3) uint8.
        color: its channel order, ``RGB`` or ``BGR``.
        record: its result record.
        quality: JPEG quality 1..100.

    Returns:
        The JPEG bytes.
    """
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if color == "RGB" else image.copy()
    ok, data = cv2.imencode(".jpg", draw(bgr, record), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # OpenCV returns False only for an unusable image, which a source never yields
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


# --- metrics --------------------------------------------------------------------------------------------------


class _Collector:
    """Reads the preview's numbers when Prometheus scrapes (nothing is pushed from the frame loop)."""

    def __init__(self, preview: Preview) -> None:
        self.preview = preview

    def describe(self) -> list[Any]:
        return []  # no fixed set: sink families depend on the sinks; [] keeps registration from calling collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = self.preview
        status_pipeline = p._pipeline
        yield CounterMetricFamily("edgekit_frames", "Frames processed (inferred and published).", value=p.frames)
        yield CounterMetricFamily(
            "edgekit_source_dropped_frames",
            "Frames the source dropped (stale live frames, unreadable files).",
            value=p.dropped(),
        )
        yield CounterMetricFamily(
            "edgekit_source_reopens", "Times the source was reopened after a stall or error.", value=p.reopens()
        )
        cumulative, total_ms = p.latency_histogram()
        buckets = [(_bound(b / 1000), n) for b, n in zip(LATENCY_BOUNDS_MS, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        yield HistogramMetricFamily(
            "edgekit_inference_seconds",
            "Interpreter invoke time per frame.",
            buckets=buckets,
            sum_value=total_ms / 1000,
        )
        yield GaugeMetricFamily("edgekit_fps", "Frames per second over the last 5 s.", value=p.recent_fps())
        queue = GaugeMetricFamily("edgekit_sink_queue_depth", "Records waiting in a sink.", labels=["sink"])
        connected = GaugeMetricFamily("edgekit_sink_connected", "1 when the sink is connected.", labels=["sink"])
        reconnects = CounterMetricFamily("edgekit_sink_reconnects", "Sink reconnections.", labels=["sink"])
        dropped = CounterMetricFamily("edgekit_sink_dropped", "Records a sink dropped.", labels=["sink"])
        sent = CounterMetricFamily("edgekit_sink_records", "Records a sink wrote or had acknowledged.", labels=["sink"])
        for name, counters in p.sink_counters().items():
            queue.add_metric([name], float(counters.get("queued", 0)))
            if "connected" in counters:
                connected.add_metric([name], float(counters["connected"]))
            if "reconnects" in counters:
                reconnects.add_metric([name], float(counters["reconnects"]))
            if "dropped" in counters:
                dropped.add_metric([name], float(counters["dropped"]))
            written = counters.get("sent", counters.get("written"))
            if written is not None:
                sent.add_metric([name], float(written))
        yield from (queue, connected, reconnects, dropped, sent)
        state = p.edgetpu_state()
        tpu = GaugeMetricFamily(
            "edgekit_edgetpu_state", "1 for the current Edge TPU state (none: a CPU model).", labels=["state"]
        )
        for name in ("none", "edgetpu", "cpu-fallback"):
            tpu.add_metric([name], 1.0 if state == name else 0.0)
        if state not in ("none", "edgetpu", "cpu-fallback"):
            tpu.add_metric([state], 1.0)
        yield tpu
        info = GaugeMetricFamily(
            "edgekit_info", "What is running (always 1).", labels=["camera", "model", "task", "source", "device"]
        )
        if status_pipeline is not None:
            info.add_metric(
                [
                    status_pipeline.settings.camera,
                    status_pipeline.model.name,
                    status_pipeline.model.task,
                    status_pipeline.source.name,
                    str(p._device),
                ],
                1.0,
            )
        yield info
        yield GaugeMetricFamily("edgekit_preview_viewers", "Open /stream.mjpg connections.", value=p.viewers)
        yield CounterMetricFamily("edgekit_preview_encoded_frames", "Frames drawn and JPEG-encoded.", value=p.encoded)


def _bound(seconds: float) -> str:
    return repr(round(seconds, 6))


# --- the server -----------------------------------------------------------------------------------------------


class PreviewServer(ThreadingHTTPServer):
    """The HTTP server: one thread per connection (daemon threads, so a stuck viewer never blocks exit)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], preview: Preview, user: str, password: str | None) -> None:
        self.preview = preview
        self.credentials = f"{user}:{password}".encode() if password is not None else None
        from prometheus_client import CollectorRegistry, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(preview))
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open fds: what a Pi owner watches
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints these to stderr; a bug in a handler belongs in the log, and must not stop the camera.
        logger.error("preview: request from %s failed", client_address[0], exc_info=True)

    def close(self) -> None:
        """Stop serving: end open streams, stop the accept loop, close the socket."""
        self.preview.closing.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5.0)
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    server_version = "edgekit"
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections and stalled viewers give their thread back

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        routes = {
            "/": self._page,
            "/index.html": self._page,
            "/api/status": self._status,
            "/api/events": self._events,
            "/snapshot.jpg": self._snapshot,
            "/stream.mjpg": self._stream,
            "/metrics": self._metrics,
        }
        handler = routes.get(path)
        if handler is None and path.startswith("/api/events/") and path.endswith("/snapshot.jpg"):
            handler = functools.partial(self._event_snapshot, path[len("/api/events/") : -len("/snapshot.jpg")])
        if handler is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        try:
            handler()
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("%s went away", self.address_string())

    def _authorized(self) -> bool:
        expected = self.server.credentials
        if expected is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        try:
            given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
        except (binascii.Error, ValueError):
            given = b""
        if given and hmac.compare_digest(given, expected):
            return True
        body = b"authentication required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="edgekit", charset="UTF-8"')
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return False

    def _send(self, code: int, content_type: str, body: bytes, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        self._send(200, "text/html; charset=utf-8", _page_html())

    def _status(self) -> None:
        body = json.dumps(self.server.preview.status(), separators=(",", ":")).encode()
        self._send(200, "application/json", body)

    def _events(self) -> None:
        body = json.dumps(self.server.preview.events(), separators=(",", ":")).encode()
        self._send(200, "application/json", body)

    def _event_snapshot(self, event_id: str) -> None:
        jpeg = self.server.preview.event_snapshot(event_id)
        if jpeg is None:
            self._send(404, "text/plain; charset=utf-8", b"no such snapshot\n")
            return
        self._send(200, "image/jpeg", jpeg)

    def _metrics(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))

    def _snapshot(self) -> None:
        got = self.server.preview.jpeg()
        if got is None:
            self._send(503, "text/plain; charset=utf-8", b"no frame yet\n", {"Retry-After": "1"})
            return
        self._send(200, "image/jpeg", got[1])

    def _stream(self) -> None:
        preview = self.server.preview
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        period = 1.0 / preview.fps
        with self._viewer(preview):
            sent = -1
            due = time.monotonic()
            while not preview.closing.is_set():
                got = preview.jpeg()
                if got is not None and got[0] != sent:
                    sent, data = got
                    head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                    self.wfile.write(head.encode() + data + b"\r\n")
                    self.wfile.flush()
                # A fixed cadence, re-anchored when a slow client made us late (no burst to catch up).
                due = max(due + period, time.monotonic())
                if preview.closing.wait(due - time.monotonic()):
                    break

    @contextlib.contextmanager
    def _viewer(self, preview: Preview) -> Iterator[None]:
        with preview._lock:
            preview.viewers += 1
        try:
            yield
        finally:
            with preview._lock:
                preview.viewers -= 1


def start(spec: HttpSpec, where: str = "config") -> tuple[Preview, PreviewServer]:
    """Bind the preview server of the run plan and start serving on a background thread.

    Args:
        spec: the plan's ``[http]`` (address, limits, password: checked by `edgekit.plan.build_plan`).
        where: the config file name, for the one error only binding can find (the port is in use).

    Returns:
        The preview (hand it to the pipeline as a tap) and the running server (close it at the end).

    Raises:
        ConfigError: the port is in use. MissingExtra: prometheus-client is not installed.
    """
    host, port, password = spec.host, spec.port, spec.password
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MissingExtra("the preview server (--http)", "device", "pip install 'edgekit[device]'") from None
    if not is_loopback(host) and password is None:
        logger.warning(
            "preview on %s:%d without a password: anyone on the network can watch this camera; set "
            "http.password_file or the http_password credential",
            host,
            port,
        )
    preview = Preview(spec.fps, spec.jpeg_quality)
    try:
        server = PreviewServer((host, port), preview, spec.user, password)
    except OSError as exc:
        raise ConfigError(
            f"{where}: key 'http.listen': cannot listen on {spec.listen} ({exc.strerror}); pick another address or port"
        ) from None
    server.start()
    logger.info("preview on %s", server.url)
    return preview, server
