"""`edgekit bench MODEL`: bare invoke latency beside the full pipeline on a video; ``--profile``: per stage."""

from __future__ import annotations

import io
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.device.model import DeviceModel, open_model
from edgekit.device.pipeline import Inferred, Pipeline, Settings, Stats, percentiles
from edgekit.device.sinks.base import Sink
from edgekit.device.sinks.stdout import StdoutSink
from edgekit.device.sources.base import Frame, Source
from edgekit.errors import InputError, SourceError
from edgekit.model.manifest import Downscale

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchReport:
    """What `bench` measured."""

    model: str
    device: str
    threads: int
    streams: int  # of the pipeline, each with threads // streams threads (as `edgekit run` on a file)
    runs: int
    invoke_ms: tuple[float, float, float]  # min, p50, p95
    video: str
    frames: int
    pipeline_fps: float
    pipeline_inference_ms: tuple[float, float]  # p50, p95
    latency_ms: tuple[float, float]  # capture-to-publish p50, p95

    def table(self) -> str:
        """Two columns: the bare interpreter, and the same model through `edgekit run`'s pipeline."""
        bare_fps = 1000.0 / self.invoke_ms[1] if self.invoke_ms[1] else 0.0
        rows = [
            ("", "invoke()", "pipeline"),
            ("frames", str(self.runs), str(self.frames)),
            ("fps", f"{bare_fps:.1f}", f"{self.pipeline_fps:.1f}"),
            ("inference min ms", f"{self.invoke_ms[0]:.2f}", ""),
            ("inference p50 ms", f"{self.invoke_ms[1]:.2f}", f"{self.pipeline_inference_ms[0]:.2f}"),
            ("inference p95 ms", f"{self.invoke_ms[2]:.2f}", f"{self.pipeline_inference_ms[1]:.2f}"),
            ("latency p50 ms", "", f"{self.latency_ms[0]:.2f}"),
            ("latency p95 ms", "", f"{self.latency_ms[1]:.2f}"),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        streams = f", {self.streams} streams of {max(1, self.threads // self.streams)}" if self.streams > 1 else ""
        lines = [f"{self.model} on {self.device}, {self.threads} threads{streams}; pipeline video: {self.video}"]
        lines += [
            "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r))
            for r in rows
        ]
        return "\n".join(lines)


def invoke_latency(model: DeviceModel, runs: int, warmup: int = 5) -> np.ndarray:
    """Milliseconds per ``invoke()`` over ``runs`` calls on a fixed input (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        model.invoke()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        model.invoke()
        times[i] = time.perf_counter() - t0
    return times * 1000.0


def make_video(path: Path, frames: int = 200, size: tuple[int, int] = (480, 640), fps: float = 30.0) -> Path:
    """Write a synthetic MJPEG video (a moving colour pattern) for pipeline timing when none is given."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise SourceError(f"{path}: OpenCV cannot write an MJPEG video here")
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(frames):
        frame = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, ((xx + yy) // 2 + 3 * i) % 256], axis=-1)
        writer.write(frame.astype(np.uint8))
    writer.release()
    return path


def bench(
    model: str,
    device: str = "cpu",
    threads: int = 0,
    runs: int = 100,
    video: str | None = None,
    frames: int = 200,
    streams: int = 0,
    downscale: Downscale | None = None,
) -> BenchReport:
    """Measure bare invoke latency, then the full pipeline (video file -> preprocess -> invoke -> JSON).

    Args:
        model: model folder or .tflite.
        device: device string.
        threads: CPU threads (0: all cores).
        runs: timed invocations.
        video: a video file for the pipeline run; None generates one.
        frames: length of the generated video.
        streams: the pipeline's parallel streams, as ``run.streams`` (0: what `edgekit run` picks for a file).
        downscale: instead of the model's own (as ``run.downscale``).

    Returns:
        The report (``table()`` prints it).
    """
    from edgekit.device import runtime
    from edgekit.device.sources.opencv import VideoFile

    loaded = open_model(model, device, threads, downscale=downscale)
    used_threads = threads or runtime.default_threads()
    invoke = invoke_latency(loaded, runs)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        path = Path(video) if video else make_video(Path(tmp) / "bench.avi", frames)
        run = RunArgs(model, device, threads, streams, downscale)
        pipeline, n, elapsed, _ = run_pipeline(run, loaded, str(path), lambda: VideoFile(str(path)))
    inference, latencies = pipeline.stats.window()
    done = pipeline.seq
    no_frames = (0.0, 0.0)
    return BenchReport(
        model=loaded.name,
        device=device,
        threads=used_threads,
        streams=n,
        runs=runs,
        invoke_ms=(float(invoke.min()), *(percentiles(invoke, None) or no_frames)),
        video=str(video or f"generated {frames} frames 640x480 MJPEG"),
        frames=done,
        pipeline_fps=done / elapsed if elapsed else 0.0,
        pipeline_inference_ms=percentiles(inference, None) or no_frames,
        latency_ms=percentiles(latencies, None) or no_frames,
    )


@dataclass(frozen=True)
class RunArgs:
    """The `edgekit run` choices a bench pipeline is opened with."""

    model: str
    device: str
    threads: int
    streams: int
    downscale: Downscale | None


def run_pipeline(
    run: RunArgs, loaded: DeviceModel, spec: str, open_source: Callable[[], Source], frames: int = 0
) -> tuple[Pipeline, int, float, str]:
    """The pipeline as `edgekit run` runs ``spec`` (its streams and threads per stream), over the source that
    ``open_source`` opens, to stdout-style JSON lines in memory.

    Returns:
        The finished pipeline (its stats keep every frame), its streams, the seconds it ran, the lines written.
    """
    from edgekit.config import Config, RunConfig
    from edgekit.device.daemon import plan_streams
    from edgekit.plan import build_plan

    config = Config(run=RunConfig(source=spec, device=run.device, threads=run.threads, streams=run.streams))
    n, per_stream = plan_streams(build_plan(config, "edgekit bench"))
    models = (
        [loaded]
        if n == 1
        else [open_model(run.model, run.device, per_stream, probe=False, downscale=run.downscale) for _ in range(n)]
    )
    out = io.StringIO()
    source = open_source()
    settings = Settings(camera="bench", top_k=3, stats_interval=0, frames=frames)
    pipeline = Pipeline(models[0], source, [StdoutSink(out)], settings, replicas=models[1:])
    pipeline.stats = Stats(window=1 << 20)  # keep every frame: stats_interval is 0, nothing resets it
    t0 = time.perf_counter()
    try:
        pipeline.run()
        elapsed = time.perf_counter() - t0
    finally:
        source.close()
    return pipeline, n, elapsed, out.getvalue()


def decoded_frames(path: str | Path, limit: int = 0) -> list[np.ndarray]:
    """The first ``limit`` frames of a video (0: all), decoded (BGR), as OpenCV reads them."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    images: list[np.ndarray] = []
    while not limit or len(images) < limit:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image)
    cap.release()
    return images


# --- bench --profile: where a frame's time goes -------------------------------------------------------------------

SOURCE_KINDS = ("video", "camera", "folder")
STAGES = ("decode", "colour", "resize", "set_tensor", "invoke", "outputs", "postprocess", "record", "encode", "publish")
_STAGE_NOTES = {
    "decode": "next frame from the source (camera: the wait for a new one)",
    "colour": "BGR -> RGB, on the resized image",
    "resize": "crop + resize ({downscale})",
    "set_tensor": "into the input tensor",
    "invoke": "",
    "outputs": "output tensors copied out",
    "postprocess": "scores/boxes -> classes/detections",
    "record": "the result record, taps, stats",
    "encode": "JSON",
    "publish": "the sink's write",
}


@dataclass(frozen=True)
class Profile:
    """What `bench --profile` measured: stage by stage one frame at a time, then the pipeline as `edgekit run`."""

    model: str
    source: str
    downscale: str
    threads: int
    frames: int
    stages: dict[str, tuple[float, float]]  # stage -> p50, p95 ms (one interpreter, every thread, in turn)
    streams: int  # of the pipeline run
    pipeline_fps: float
    waits: tuple[float, float]  # p50, p95 ms a frame's worker waited for the source (decode included)
    inference_ms: tuple[float, float]
    latency_ms: tuple[float, float]  # capture-to-publish
    dropped: int  # frames the source replaced before they were taken (a camera)

    def table(self) -> str:
        """The stages with their share of one frame's work, then the pipeline's figures."""
        total = sum(p50 for p50, _ in self.stages.values()) or 1.0
        rows = [("stage", "p50 ms", "p95 ms", "share", "")]
        for name in STAGES:
            p50, p95 = self.stages[name]
            note = _STAGE_NOTES[name].format(downscale=self.downscale)
            rows.append((name, f"{p50:.3f}", f"{p95:.3f}", f"{100 * p50 / total:.1f}%", note))
        rows.append(("sum", f"{total:.3f}", "", "", f"= {1000 / total:.1f} frames/s one frame at a time"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [f"{self.model} on {self.source}, {self.threads} threads, {self.frames} frames"]
        lines += [
            "  ".join([r[0].ljust(widths[0]), *(r[i].rjust(widths[i]) for i in (1, 2, 3)), r[4]]).rstrip() for r in rows
        ]
        streams = f"{self.streams} stream{'s' if self.streams > 1 else ''}"
        lines += [
            f"pipeline (as edgekit run, {streams}): {self.pipeline_fps:.1f} frames/s, "
            f"inference p50/p95 {self.inference_ms[0]:.2f}/{self.inference_ms[1]:.2f} ms",
            f"  waits for the source p50/p95 {self.waits[0]:.2f}/{self.waits[1]:.2f} ms, "
            f"capture-to-publish p50/p95 {self.latency_ms[0]:.2f}/{self.latency_ms[1]:.2f} ms, "
            f"dropped {self.dropped}",
        ]
        return "\n".join(lines)


class PacedFrames:
    """A live camera simulated from a video: its frames offered at ``fps`` whether or not anyone keeps up, through
    the newest-frame capture every live source uses (`LatestFrameCapture`): frames not taken in time are dropped."""

    name = "camera"
    ordered = False

    def __init__(self, images: list[np.ndarray], fps: float = 30.0) -> None:
        from edgekit.device.sources.capture import LatestFrameCapture

        self.name = f"camera ({len(images)} video frames offered at {fps:g}/s, newest frame only)"
        self._images, self._period = images, 1.0 / fps
        self._capture = LatestFrameCapture(self.name, self._open, lambda: None, "BGR", finite=True)

    def _open(self) -> Callable[[], np.ndarray | None]:
        start, count = time.monotonic(), itertools.count()

        def read() -> np.ndarray | None:
            i = next(count)
            if i >= len(self._images):
                return None
            wait = start + i * self._period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            return self._images[i]

        return read

    @property
    def dropped(self) -> int:
        return self._capture.dropped

    @property
    def reopens(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._capture)

    def interrupt(self) -> None:
        self._capture.interrupt()

    def unbuffered(self) -> Iterator[Frame] | None:
        return None

    def close(self) -> None:
        self._capture.close()


class _TimedOutputs:
    """The model as the pipeline's postprocessing sees it, with the time spent copying outputs added up."""

    def __init__(self, model: DeviceModel) -> None:
        self._model = model
        self.outputs = model.outputs
        self.label = model.label
        self.spent = 0.0

    def output(self, role: str) -> np.ndarray:
        t0 = time.perf_counter()
        value = self._model.output(role)
        self.spent += time.perf_counter() - t0
        return value


class _TimedSink:
    """Wraps the sink: the time its publish takes, and the time the JSON encoding of the same record takes."""

    def __init__(self, sink: Sink) -> None:
        from edgekit.device.sinks import jsonl

        self._sink, self._line = sink, jsonl.line
        self.name = sink.name
        self.encode = self.publish = 0.0

    def publish_result(self, record: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        self._line(record)
        t1 = time.perf_counter()
        self._sink.publish_result(record)
        self.encode, self.publish = t1 - t0, time.perf_counter() - t1

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        self._sink.publish_stats(record)

    def counters(self) -> Mapping[str, int | float]:
        return self._sink.counters()

    def close(self) -> None:
        self._sink.close()


def _open_source(kind: str, video: Path, images: list[np.ndarray], folder: Path, fps: float) -> Source:
    from edgekit.device.sources.folder import ImageFolder
    from edgekit.device.sources.opencv import VideoFile

    if kind == "video":
        return VideoFile(str(video))
    if kind == "folder":
        return ImageFolder(str(folder))
    return PacedFrames(images, fps)


def stage_times(model: DeviceModel, source: Source, limit: int) -> dict[str, np.ndarray]:
    """Milliseconds per stage for each frame, one frame at a time through the pipeline's own parts.

    Decoding runs in this thread for files (the way parallel streams read them); a camera's capture thread decodes,
    so its ``decode`` is the wait for a new frame.
    """
    import cv2

    sink = _TimedSink(StdoutSink(io.StringIO()))
    pipeline = Pipeline(model, source, [sink], Settings(camera="bench", stats_interval=0))
    scratch = np.empty((*model.input_size, 3), np.uint8)
    preparer = model.preparer
    frames = source.unbuffered() or iter(source)
    times: dict[str, list[float]] = {name: [] for name in STAGES}
    clock = time.perf_counter
    for _ in range(limit):
        t0 = clock()
        frame = next(frames, None)
        if frame is None:
            break
        t1 = clock()
        geometry = preparer.resize(frame.image, scratch)
        t2 = clock()
        if frame.color == "BGR":
            cv2.cvtColor(scratch, cv2.COLOR_BGR2RGB, dst=scratch)
        t3 = clock()
        model.load_prepared(scratch)
        t4 = clock()
        model.invoke()
        t5 = clock()
        timed = _TimedOutputs(model)
        items, key = pipeline._postprocess(timed, geometry)  # type: ignore[arg-type]
        t6 = clock()
        now = time.monotonic()
        pipeline._emit(Inferred(frame, geometry, items, key, now, now, now, now, now, (t5 - t4) * 1000))
        t7 = clock()
        spent = {
            "decode": t1 - t0,
            "resize": t2 - t1,
            "colour": t3 - t2,
            "set_tensor": t4 - t3,
            "invoke": t5 - t4,
            "outputs": timed.spent,
            "postprocess": t6 - t5 - timed.spent,
            "record": t7 - t6 - sink.encode - sink.publish,
            "encode": sink.encode,
            "publish": sink.publish,
        }
        for name, seconds in spent.items():
            times[name].append(seconds * 1000)
    return {name: np.asarray(values) for name, values in times.items()}


def profile(
    model: str,
    source: str = "video",
    device: str = "cpu",
    threads: int = 0,
    video: str | None = None,
    frames: int = 200,
    streams: int = 0,
    camera_fps: float = 30.0,
    downscale: Downscale | None = None,
) -> Profile:
    """Where a frame's time goes: each stage timed one frame at a time, then the pipeline as `edgekit run` runs it.

    Args:
        model: model folder or .tflite.
        source: ``video`` (the file), ``camera`` (its frames offered at ``camera_fps``, newest frame only, as a
            live camera) or ``folder`` (its frames as JPEG files).
        device: device string.
        threads: CPU threads (0: all cores).
        video: the video; None generates one of ``frames`` frames.
        frames: frames of the generated video, and at most this many are profiled.
        streams: the pipeline's parallel streams (0: what `edgekit run` picks for this source).
        camera_fps: the simulated camera's frame rate.
        downscale: instead of the model's own (as ``run.downscale``).

    Returns:
        The profile (``table()`` prints it).
    """
    import cv2

    from edgekit.device import runtime

    if source not in SOURCE_KINDS:
        raise InputError(f"--source {source!r}: use one of {', '.join(SOURCE_KINDS)}")
    loaded = open_model(model, device, threads, downscale=downscale)
    used_threads = threads or runtime.default_threads()
    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
        path = Path(video) if video else make_video(Path(tmp) / "bench.avi", frames)
        images = decoded_frames(path, frames)
        folder = Path(tmp) / "frames"
        if source == "folder":
            folder.mkdir()
            for i, image in enumerate(images):
                cv2.imwrite(str(folder / f"{i:06d}.jpg"), image)
        warm = _open_source(source, path, images, folder, camera_fps)
        stage_times(loaded, warm, 5)  # caches, allocator, the interpreter's first runs
        warm.close()
        opened = _open_source(source, path, images, folder, camera_fps)
        stages = stage_times(loaded, opened, frames)
        opened.close()
        counted = len(stages["invoke"])
        # The run plan picks the streams from the kind of source (a camera spec for the simulated one).
        spec = str(path) if source == "video" else str(folder) if source == "folder" else "/dev/video0"
        run = RunArgs(model, device, threads, streams, downscale)
        pipeline, n, elapsed, records = run_pipeline(
            run, loaded, spec, lambda: _open_source(source, path, images, folder, camera_fps), frames
        )
        opened = pipeline.source
    waits = [json.loads(line)["timing_ms"]["capture"] for line in records.splitlines() if '"result"' in line[:20]]
    inference, latencies = pipeline.stats.window()
    no_frames = (0.0, 0.0)
    return Profile(
        model=loaded.name,
        source=opened.name if source == "camera" else f"{source} {path.name}",
        downscale=loaded.preprocess.downscale,
        threads=used_threads,
        frames=counted,
        stages={name: percentiles(values, None) or no_frames for name, values in stages.items()},
        streams=n,
        pipeline_fps=pipeline.seq / elapsed if elapsed else 0.0,
        waits=percentiles(waits, None) or no_frames,
        inference_ms=percentiles(inference, None) or no_frames,
        latency_ms=percentiles(latencies, None) or no_frames,
        dropped=opened.dropped,
    )
