"""Sinks: the registry, JSON lines on stdout, files rotated by size."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from edgekit.config import Config
from edgekit.device import sinks
from edgekit.device.sinks.file import FileSink
from edgekit.device.sinks.stdout import StdoutSink
from edgekit.errors import ConfigError, SinkError
from edgekit.plan import FileSpec, MqttSpec, parse_sink

RECORD = {"type": "result", "seq": 1, "classes": [{"id": 3, "label": "café", "score": 0.5}]}


def test_registry_schemes() -> None:
    assert parse_sink("stdout", Config()).kind == "stdout"
    assert parse_sink("-", Config()).kind == "stdout"
    assert parse_sink("file:/tmp/x.jsonl", Config()) == FileSpec(Path("/tmp/x.jsonl"), 10 * 1024 * 1024, 5)
    mqtts = parse_sink("mqtts://broker:8883/edgekit", Config())
    assert isinstance(mqtts, MqttSpec) and mqtts.address.scheme == "mqtts" and mqtts.tls is not None
    with pytest.raises(ConfigError, match="unknown kind"):
        parse_sink("kafka://x", Config())


def test_stdout_is_one_json_line_per_record() -> None:
    out = io.StringIO()
    sink = StdoutSink(out)
    sink.publish_result(RECORD)
    sink.publish_stats({"type": "stats", "frames": 1})
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [RECORD, {"type": "stats", "frames": 1}]
    assert sink.counters() == {"written": 2}


def test_lines_are_the_compact_json_of_the_standard_library() -> None:
    import numpy as np

    from edgekit.device.sinks import jsonl

    record = {**RECORD, "ts": 1795929263.169, "timing_ms": {"total": 2.31}, "box": {"xmin": 0.0, "ymax": 0.5}}
    assert jsonl.line(record) == (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    assert jsonl.dumps(record) == jsonl.line(record)[:-1]
    assert json.loads(jsonl.dumps({"tiny": 1e-05, "huge": 1e300})) == {"tiny": 1e-05, "huge": 1e300}
    # Where the standard encoder would raise: numpy scalars are numbers, a NaN score is null.
    assert json.loads(jsonl.dumps({"score": np.float32(0.5), "id": np.int64(3), "nan": float("nan")})) == {
        "score": 0.5,
        "id": 3,
        "nan": None,
    }


def test_stdout_writes_bytes_under_a_text_stream_in_order() -> None:
    raw = io.BytesIO()
    text = io.TextIOWrapper(raw, encoding="utf-8")
    text.write("printed before the run\n")  # e.g. a banner still in the text layer's buffer
    sink = StdoutSink(text)
    sink.publish_result(RECORD)
    lines = raw.getvalue().decode("utf-8").splitlines()
    assert lines[0] == "printed before the run" and json.loads(lines[1]) == RECORD


def test_file_sink_appends_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.jsonl"
    sink = sinks.create(parse_sink(f"file:{path}?max_mb=0.001&keep=2", Config()))
    for i in range(100):
        sink.publish_result({**RECORD, "seq": i})
    sink.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["results.jsonl", "results.jsonl.1", "results.jsonl.2"]
    newest = [json.loads(line)["seq"] for line in path.read_text(encoding="utf-8").splitlines()]
    older = [json.loads(line)["seq"] for line in (path.parent / "results.jsonl.1").read_text().splitlines()]
    assert newest[-1] == 99 and older[-1] + 1 == newest[0]  # nothing lost at the seam
    assert all(p.stat().st_size <= 1100 for p in path.parent.iterdir())
    assert sink.counters()["rotations"] > 2


def test_file_sink_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"old": true}\n')
    sink = FileSink(path)
    sink.publish_result(RECORD)
    sink.close()
    assert len(path.read_text().splitlines()) == 2


def test_file_sink_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option 'size'"):
        parse_sink(f"file:{tmp_path}/x?size=3", Config())
    with pytest.raises(SinkError, match="cannot open for writing"):
        sinks.create(parse_sink("file:/proc/edgekit/x.jsonl", Config()))
