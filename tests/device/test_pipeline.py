"""The frame loop with real models and the real video: record schema, box mapping, --only-changes, stats."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgekit.device import sources
from edgekit.device.model import open_model
from edgekit.device.pipeline import ChangeFilter, Pipeline, Settings
from edgekit.device.sinks.stdout import StdoutSink
from edgekit.device.sources.base import Frame, SourceBase
from edgekit.errors import InputError, ModelError, SinkError
from edgekit.plan import parse_source


class ListSink:
    """Keeps what it is given."""

    def __init__(self, name: str = "list") -> None:
        self.name = name
        self.results: list[Mapping[str, Any]] = []
        self.stats: list[Mapping[str, Any]] = []
        self.closed = False

    def publish_result(self, record: Mapping[str, Any]) -> None:
        self.results.append(record)

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        self.stats.append(record)

    def counters(self) -> Mapping[str, int | float]:
        return {"results": len(self.results)}

    def close(self) -> None:
        self.closed = True


class Frames(SourceBase):
    """An in-memory source."""

    name = "memory"

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def __iter__(self) -> Iterator[Frame]:
        for i, image in enumerate(self.images):
            yield Frame(image, i, time.time(), time.monotonic(), "BGR")

    def close(self) -> None:
        pass


def test_classify_the_real_video_every_frame(classifier_dir: Path, video: Path) -> None:
    model = open_model(classifier_dir, threads=1)
    source = sources.create(parse_source(str(video)))
    sink = ListSink()
    out = io.StringIO()
    pipeline = Pipeline(model, source, [sink, StdoutSink(out)], Settings(camera="porch", top_k=3, stats_interval=0))
    assert pipeline.run() == "end"
    source.close()
    assert len(sink.results) == 270
    first = sink.results[0]
    assert set(first) == {"type", "seq", "ts", "frame", "source", "camera", "model", "task", "classes", "timing_ms"}
    assert first["type"] == "result" and first["task"] == "classify" and first["camera"] == "porch"
    assert first["model"] == "cls" and first["source"] == str(video)
    assert [r["seq"] for r in sink.results] == list(range(1, 271))
    assert [r["frame"] for r in sink.results] == list(range(270))
    assert set(first["timing_ms"]) == {"capture", "preprocess", "inference", "postprocess", "total"}
    for record in sink.results:
        scores = [c["score"] for c in record["classes"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert all(c["label"] == f"class_{c['id']}" for c in record["classes"])
    assert len({r["classes"][0]["id"] for r in sink.results}) > 1  # the answers follow the video
    assert [json.loads(line) for line in out.getvalue().splitlines()] == sink.results


def test_results_match_the_interpreter_fed_by_hand(classifier_dir: Path, photos: list[Path]) -> None:
    # Writing straight into the input tensor must give what set_tensor() with the prepared image gives.
    from edgekit.model.preprocess import prepare

    model = open_model(classifier_dir, threads=1)
    sink = ListSink()
    images = [cv2.imread(str(p)) for p in photos[:5]]
    Pipeline(model, Frames(images), [sink], Settings(camera="c", top_k=10, stats_interval=0)).run()
    interpreter = model.interpreter
    for image, record in zip(images, sink.results, strict=True):
        tensor, _ = prepare(image, model.input_size, model.preprocess, "BGR")
        interpreter.set_tensor(model.input_index, tensor[None])
        interpreter.invoke()
        raw = interpreter.get_tensor(model.outputs["scores"].index)[0]
        assert record["classes"][0]["id"] == int(np.argmax(raw))


def test_int8_input_model_gives_the_same_answers(
    classifier_dir: Path, int8_classifier_dir: Path, photos: list[Path]
) -> None:
    images = [cv2.imread(str(p)) for p in photos[:6]]
    answers = []
    for folder in (classifier_dir, int8_classifier_dir):
        model = open_model(folder, threads=1)
        sink = ListSink()
        Pipeline(model, Frames(images), [sink], Settings(camera="c", top_k=1, stats_interval=0)).run()
        answers.append([r["classes"][0]["id"] for r in sink.results])
    assert open_model(int8_classifier_dir).input_dtype == "int8"
    agree = sum(a == b for a, b in zip(*answers, strict=True))
    assert agree >= 5, answers


def test_detect_boxes_are_in_source_pixels(ssd_model: Path, video: Path) -> None:
    model = open_model(ssd_model, threads=1)
    assert model.task == "detect"
    source = sources.create(parse_source(str(video)))
    sink = ListSink()
    settings = Settings(camera="c", threshold=0.3, top_k=0, frames=20, stats_interval=0)
    assert Pipeline(model, source, [sink], settings).run() == "frames"
    source.close()
    detections = [d for r in sink.results for d in r["detections"]]
    assert len(sink.results) == 20 and detections
    for d in detections:
        box, norm = d["box"], d["box_norm"]
        assert 0 <= box["xmin"] < box["xmax"] <= 720 and 0 <= box["ymin"] < box["ymax"] <= 528
        assert norm["xmin"] == pytest.approx(box["xmin"] / 720, abs=1e-3)
        assert norm["ymax"] == pytest.approx(box["ymax"] / 528, abs=1e-3)
        assert d["score"] >= 0.3 and d["label"] == str(d["id"])


def test_detect_class_filter(ssd_model: Path, photos: list[Path]) -> None:
    model = open_model(ssd_model, threads=1)
    images = [cv2.imread(str(p)) for p in photos]
    every, only = ListSink(), ListSink()
    Pipeline(model, Frames(images), [every], Settings(camera="c", threshold=0.0, stats_interval=0)).run()
    ids = {d["id"] for r in every.results for d in r["detections"]}
    keep = min(ids)
    settings = Settings(camera="c", threshold=0.0, class_ids=frozenset({keep}), stats_interval=0)
    Pipeline(model, Frames(images), [only], settings).run()
    assert len(ids) > 1
    assert {d["id"] for r in only.results for d in r["detections"]} == {keep}


def test_only_changes_filters_data_sinks_but_not_observers(classifier_dir: Path, photos: list[Path]) -> None:
    model = open_model(classifier_dir, threads=1)
    a, b = cv2.imread(str(photos[0])), cv2.imread(str(photos[3]))
    images = [a, a, a, b, b, a]
    data, observer = ListSink("data"), ListSink("notify")
    settings = Settings(camera="c", top_k=1, only_changes=True, stats_interval=0)
    pipeline = Pipeline(model, Frames(images), [data], settings, observers=[observer])
    pipeline.run()
    pipeline.publish_stats()
    tops = [r["classes"][0]["id"] for r in observer.results]
    assert len(observer.results) == 6
    assert tops[0] == tops[1] == tops[2] and tops[3] != tops[0], "the two photos must differ for this test"
    assert [r["frame"] for r in data.results] == [0, 3, 5]
    assert data.stats and observer.stats  # stats always pass
    assert data.stats[0]["sinks"]["data"] == {"results": 3, "suppressed": 3}


def test_change_key() -> None:
    assert ChangeFilter.key({"classes": [{"id": 4}, {"id": 1}]}) == 4
    assert ChangeFilter.key({"classes": []}) is None
    assert ChangeFilter.key({"detections": [{"id": 2}, {"id": 1}, {"id": 2}]}) == (1, 2, 2)


def test_stats_records(classifier_dir: Path, video: Path) -> None:
    model = open_model(classifier_dir, threads=1)
    source = sources.create(parse_source(str(video)))
    sink = ListSink()
    pipeline = Pipeline(model, source, [sink], Settings(camera="c", stats_interval=0.05, frames=120))
    pipeline.run()
    source.close()
    assert sink.stats
    stats = sink.stats[-1]
    assert set(stats) == {
        "type",
        "ts",
        "camera",
        "uptime_s",
        "frames",
        "fps",
        "inference_ms",
        "latency_ms",
        "dropped",
        "sinks",
    }
    assert stats["type"] == "stats" and stats["fps"] > 0 and stats["dropped"] == 0
    assert 0 < stats["inference_ms"]["p50"] <= stats["inference_ms"]["p95"]
    assert stats["latency_ms"]["p50"] >= stats["inference_ms"]["p50"]
    assert stats["sinks"]["list"]["results"] == stats["frames"]


class FailingSink(ListSink):
    """Raises ``error`` on every record."""

    def __init__(self, error: Exception) -> None:
        super().__init__("failing")
        self.error = error

    def publish_result(self, record: Mapping[str, Any]) -> None:
        raise self.error

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        raise self.error


def test_a_failing_sink_is_logged_and_the_others_still_get_everything(
    classifier_dir: Path, photos: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    model = open_model(classifier_dir, threads=1)
    images = [cv2.imread(str(p)) for p in photos[:5]]
    before, after = ListSink("before"), ListSink("after")
    settings = Settings(camera="c", stats_interval=1e-9)  # a stats record after every frame
    pipeline = Pipeline(model, Frames(images), [before, FailingSink(ValueError("bad value"))], settings, [after])
    assert pipeline.run() == "end"
    assert [r["frame"] for r in before.results] == [r["frame"] for r in after.results] == [0, 1, 2, 3, 4]
    assert len(before.stats) == len(after.stats) == 5
    failures = [r.getMessage() for r in caplog.records if r.name == "edgekit.device.pipeline"]
    assert failures.count("sink failing failed on a result record: bad value") == 5
    assert failures.count("sink failing failed on a stats record: bad value") == 5


def test_a_sink_error_ends_the_run(classifier_dir: Path, photos: list[Path]) -> None:
    model = open_model(classifier_dir, threads=1)
    pipeline = Pipeline(
        model, Frames([cv2.imread(str(photos[0]))] * 3), [FailingSink(SinkError("disk full"))], Settings(camera="c")
    )
    with pytest.raises(SinkError, match="disk full"):
        pipeline.run()


def test_max_fps_paces_the_loop(classifier_dir: Path, photos: list[Path]) -> None:
    model = open_model(classifier_dir, threads=1)
    images = [cv2.imread(str(photos[0]))] * 6
    t0 = time.monotonic()
    Pipeline(model, Frames(images), [ListSink()], Settings(camera="c", max_fps=20, stats_interval=0)).run()
    assert time.monotonic() - t0 >= 0.25  # 6 frames at 20 fps: five 50 ms gaps


def test_stop_from_elsewhere_ends_the_loop(classifier_dir: Path, video: Path) -> None:
    model = open_model(classifier_dir, threads=1)
    source = sources.create(parse_source(str(video), realtime=True))
    sink = ListSink()
    pipeline = Pipeline(model, source, [sink], Settings(camera="c", stats_interval=0))
    import threading

    threading.Timer(0.5, pipeline.stop).start()
    assert pipeline.run() == "stop"
    source.close()
    assert 3 < len(sink.results) < 60


def test_labels_must_match_the_output_size(classifier_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    with pytest.raises(InputError, match=r"2 labels but model\.tflite has 10 outputs"):
        open_model(classifier_dir, labels=str(labels))
    labels.write_text("".join(f"{i}  thing{i}\n" for i in range(10)))
    assert open_model(classifier_dir, labels=str(labels)).label(7) == "thing7"


def test_task_mismatch_and_non_image_input(classifier_dir: Path, vector_model: Path) -> None:
    with pytest.raises(ModelError, match="task 'detect' was asked for, but the model's outputs are a classify"):
        open_model(classifier_dir, task="detect")
    with pytest.raises(ModelError, match=r"input shape \[1, 10\] is not an image"):
        open_model(vector_model)
