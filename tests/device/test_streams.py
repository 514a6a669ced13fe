"""Parallel streams: several interpreters on consecutive frames, results in frame order, as one stream gives."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import Config, RunConfig, load_config
from edgekit.device import sources
from edgekit.device.daemon import plan_streams
from edgekit.device.model import DeviceModel, open_model
from edgekit.device.pipeline import Pipeline, Settings
from edgekit.device.sources.base import Frame
from edgekit.device.sources.opencv import VideoFile
from edgekit.errors import ConfigError
from edgekit.plan import build_plan, parse_source
from tests.device.test_pipeline import Frames, ListSink


def _models(folder: Path, n: int) -> list[DeviceModel]:
    return [open_model(folder, threads=1, probe=False) for _ in range(n)]


def _run(models: list[DeviceModel], source: Any, settings: Settings, sinks: list[Any]) -> str:
    try:
        return Pipeline(models[0], source, sinks, settings, replicas=models[1:]).run()
    finally:
        source.close()


def _content(records: list[Mapping[str, Any]]) -> list[tuple[int, int, Any]]:
    key = "classes" if "classes" in records[0] else "detections"
    return [(r["seq"], r["frame"], r[key]) for r in records]


@pytest.mark.parametrize("streams", [2, 3])
def test_parallel_streams_give_what_one_stream_gives_in_frame_order(
    classifier_dir: Path, video: Path, streams: int
) -> None:
    one, many = ListSink(), ListSink()
    settings = Settings(camera="c", top_k=3, stats_interval=0)
    assert _run(_models(classifier_dir, 1), sources.create(parse_source(str(video))), settings, [one]) == "end"
    assert _run(_models(classifier_dir, streams), sources.create(parse_source(str(video))), settings, [many]) == "end"
    assert len(many.results) == 270
    assert [r["seq"] for r in many.results] == list(range(1, 271))
    assert [r["frame"] for r in many.results] == list(range(270))
    assert _content(many.results) == _content(one.results)
    assert len({r["classes"][0]["id"] for r in many.results}) > 1  # the answers follow the video


def test_detections_and_the_frame_limit_with_streams(ssd_model: Path, video: Path) -> None:
    one, many = ListSink(), ListSink()
    settings = Settings(camera="c", threshold=0.3, top_k=0, frames=20, stats_interval=0)
    assert _run(_models(ssd_model, 1), sources.create(parse_source(str(video))), settings, [one]) == "frames"
    assert _run(_models(ssd_model, 2), sources.create(parse_source(str(video))), settings, [many]) == "frames"
    assert len(many.results) == 20 and any(r["detections"] for r in many.results)
    assert _content(many.results) == _content(one.results)


class Slow:
    """Makes a model's invoke take longer, as a big model would (sleeping, like invoke, frees the GIL), and notes
    when each ran and on which thread."""

    def __init__(self, model: DeviceModel, seconds: float, log: list[tuple[str, float, float]]) -> None:
        self._invoke, self._seconds, self._log = model.invoke, seconds, log
        model.invoke = self._slow  # type: ignore[method-assign]

    def _slow(self) -> None:
        start = time.monotonic()
        self._invoke()
        time.sleep(self._seconds)
        self._log.append((threading.current_thread().name, start, time.monotonic()))


def test_the_interpreters_really_run_at_once_and_results_keep_frame_order(
    classifier_dir: Path, photos: list[Path]
) -> None:
    # One stream 3x slower than the other: results finish out of order, and must still be published in order.
    models = _models(classifier_dir, 2)
    log: list[tuple[str, float, float]] = []
    Slow(models[0], 0.03, log)
    Slow(models[1], 0.01, log)
    images = [cv2.imread(str(p)) for p in photos[:4]] * 5
    sink = ListSink()
    start = time.monotonic()
    _run(models, Frames(images), Settings(camera="c", top_k=1, stats_interval=0), [sink])
    elapsed = time.monotonic() - start
    assert {name for name, _, _ in log} == {"stream-0", "stream-1"}
    spans = sorted(log, key=lambda item: item[1])
    overlapping = sum(a[0] != b[0] and b[1] < a[2] for a, b in itertools.pairwise(spans))
    assert overlapping >= 8, f"only {overlapping} of {len(spans)} invocations overlapped another stream's"
    assert elapsed < 0.75 * 20 * 0.02, f"{elapsed:.2f} s for 20 frames of 10-30 ms on two streams"
    assert [r["frame"] for r in sink.results] == list(range(20))
    tops = [r["classes"][0]["id"] for r in sink.results]
    assert len(set(tops[:4])) > 1 and tops == tops[:4] * 5  # each result belongs to its own frame


class CountingFrames(Frames):
    """Frames that count how many were taken from it."""

    def __init__(self, images: list[np.ndarray]) -> None:
        super().__init__(images)
        self.taken = 0

    def __iter__(self) -> Iterator[Frame]:
        for frame in super().__iter__():
            self.taken += 1
            yield frame


class SlowSink(ListSink):
    """Publishes slowly, and notes how far ahead of it the source had been read at each result."""

    def __init__(self, source: CountingFrames) -> None:
        super().__init__()
        self.source, self.ahead = source, []

    def publish_result(self, record: Mapping[str, Any]) -> None:
        time.sleep(0.01)
        super().publish_result(record)
        self.ahead.append(self.source.taken - len(self.results))


def test_a_slow_sink_holds_the_workers_back(classifier_dir: Path, photos: list[Path]) -> None:
    source = CountingFrames([cv2.imread(str(photos[0]))] * 40)
    sink = SlowSink(source)
    _run(_models(classifier_dir, 2), source, Settings(camera="c", stats_interval=0), [sink])
    assert len(sink.results) == 40
    # At most 2 * streams results wait for the loop, plus one frame per worker in hand.
    assert max(sink.ahead) <= 2 * 2 + 2, sink.ahead


def test_an_error_in_a_worker_reaches_the_loop(classifier_dir: Path, photos: list[Path]) -> None:
    models = _models(classifier_dir, 2)
    calls = [0]
    invoke = models[1].invoke

    def failing() -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("the interpreter broke")
        invoke()

    models[1].invoke = failing  # type: ignore[method-assign]
    sink = ListSink()
    with pytest.raises(RuntimeError, match="the interpreter broke"):
        _run(models, Frames([cv2.imread(str(photos[0]))] * 30), Settings(camera="c", stats_interval=0), [sink])
    assert len(sink.results) < 30
    assert not [t for t in threading.enumerate() if t.name.startswith("stream-")]  # the workers were joined


def test_stop_from_elsewhere_ends_parallel_streams(classifier_dir: Path, video: Path) -> None:
    models = _models(classifier_dir, 2)
    sink = ListSink()
    source = sources.create(parse_source(str(video)))
    pipeline = Pipeline(models[0], source, [sink], Settings(camera="c", stats_interval=0), replicas=models[1:])
    original = sink.publish_result

    def stop_at_ten(record: Mapping[str, Any]) -> None:
        original(record)
        if len(sink.results) == 10:
            pipeline.stop()

    sink.publish_result = stop_at_ten  # type: ignore[method-assign]
    assert pipeline.run() == "stop"
    source.close()
    assert len(sink.results) == 10
    assert [r["frame"] for r in sink.results] == list(range(10))


def test_video_file_reads_inline_or_ahead_but_not_both(video: Path) -> None:
    inline = VideoFile(str(video))
    frames = list(inline.unbuffered())
    assert [f.index for f in frames] == list(range(270))
    assert not [t for t in threading.enumerate() if t.name.startswith("read-")]  # no read-ahead thread
    inline.close()
    ahead = VideoFile(str(video))
    next(iter(ahead))
    with pytest.raises(RuntimeError, match="read one way only"):
        next(ahead.unbuffered())
    ahead.close()


def _config(**run: Any) -> Config:
    return Config(run=RunConfig(**run))


def test_automatic_streams_for_files_on_the_cpu(video: Path, photos: list[Path], tmp_path: Path) -> None:
    file = str(video)
    assert plan_streams(build_plan(_config(source=file, threads=2))) == (2, 1)
    assert plan_streams(build_plan(_config(source=file, threads=4))) == (2, 2)
    assert plan_streams(build_plan(_config(source=str(photos[0].parent), threads=2))) == (2, 1)  # a folder
    # One stream where the newest frame matters, where pacing makes throughput moot, or with one core.
    assert plan_streams(build_plan(_config(source=file, threads=2, realtime=True))) == (1, 2)
    assert plan_streams(build_plan(_config(source=file, threads=2, max_fps=5))) == (1, 2)
    assert plan_streams(build_plan(_config(source=file, threads=1))) == (1, 1)
    assert plan_streams(build_plan(_config(source=file, threads=2, device="edgetpu"))) == (1, 2)
    assert plan_streams(build_plan(_config(source="rtsp://camera/stream", threads=2))) == (1, 2)
    # Explicit: as asked, the threads shared.
    assert plan_streams(build_plan(_config(source=file, threads=4, streams=1))) == (1, 4)
    assert plan_streams(build_plan(_config(source="rtsp://camera/stream", threads=4, streams=2))) == (2, 2)


def test_streams_that_cannot_work_are_config_errors(video: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'run.streams': parallel streams run on the CPU"):
        build_plan(_config(source=str(video), device="edgetpu", streams=2), "edgekit.toml")
    with pytest.raises(ConfigError, match=r"key 'run.streams': .*run.max_fps"):
        build_plan(_config(source=str(video), max_fps=5, streams=2), "edgekit.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nstreams = -1\n")
    with pytest.raises(ConfigError, match=r"key 'run.streams' must be 0 \(automatic\) or more"):
        build_plan(load_config(bad), str(bad))


def test_edgekit_run_with_two_streams_prints_what_one_stream_prints(classifier_dir: Path, video: Path) -> None:
    runner = CliRunner()
    outputs = {}
    for streams in ("1", "2"):
        args = ["-v", "run", "--model", str(classifier_dir), "--source", str(video), "--threads", "2"]
        result = runner.invoke(cli, [*args, "--streams", streams, "--stats-interval", "0"])
        assert result.exit_code == 0, result.output
        outputs[streams] = [line for line in result.stdout.splitlines() if line.startswith('{"type":"result"')]
    assert len(outputs["2"]) == 270

    def strip(line: str) -> str:
        return line.split(',"ts":')[0] + line.split(',"frame":')[1].split(',"timing_ms":')[0]

    assert [strip(line) for line in outputs["2"]] == [strip(line) for line in outputs["1"]]
