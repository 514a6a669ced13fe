"""`edgekit bench MODEL`: bare invoke latency beside the full pipeline on a video, on this device."""

from __future__ import annotations

import io
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.device.model import DeviceModel, open_model
from edgekit.device.pipeline import Pipeline, Settings, Stats, percentiles
from edgekit.device.sinks.stdout import StdoutSink
from edgekit.errors import SourceError

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

    Returns:
        The report (``table()`` prints it).
    """
    from edgekit.config import Config, RunConfig
    from edgekit.device import runtime
    from edgekit.device.daemon import plan_streams
    from edgekit.device.sources.opencv import VideoFile
    from edgekit.plan import build_plan

    loaded = open_model(model, device, threads)
    used_threads = threads or runtime.default_threads()
    invoke = invoke_latency(loaded, runs)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        path = Path(video) if video else make_video(Path(tmp) / "bench.avi", frames)
        config = Config(run=RunConfig(source=str(path), device=device, threads=threads, streams=streams))
        n, per_stream = plan_streams(build_plan(config, "edgekit bench"))
        models = [loaded] if n == 1 else [open_model(model, device, per_stream, probe=False) for _ in range(n)]
        source = VideoFile(str(path))
        settings = Settings(camera="bench", top_k=3, stats_interval=0)
        pipeline = Pipeline(models[0], source, [StdoutSink(io.StringIO())], settings, replicas=models[1:])
        pipeline.stats = Stats(window=1 << 20)  # keep every frame: stats_interval is 0, nothing resets it
        t0 = time.perf_counter()
        pipeline.run()
        elapsed = time.perf_counter() - t0
        source.close()
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
