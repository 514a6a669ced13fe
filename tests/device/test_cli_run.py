"""`edgekit run` and `edgekit bench` from the command line: results, config handling, bad input, signals."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from tests.conftest import REPO


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_run_prints_results_and_a_final_stats_line(runner: CliRunner, classifier_dir: Path, video: Path) -> None:
    result = runner.invoke(
        cli, ["run", "--model", str(classifier_dir), "--source", str(video), "--frames", "5", "--top-k", "2"]
    )
    assert result.exit_code == 0, result.output
    records = _records(result.output)
    assert [r["type"] for r in records] == ["result"] * 5 + ["stats"]
    assert all(len(r["classes"]) == 2 for r in records[:5])
    assert records[-1]["frames"] == 5


def test_config_file_and_print_config(runner: CliRunner, tmp_path: Path, classifier_dir: Path, video: Path) -> None:
    config = tmp_path / "edgekit.toml"
    config.write_text(f'[run]\nmodel = "{classifier_dir}"\nsource = "{video}"\ntop_k = 4\nframes = 2\n')
    printed = runner.invoke(cli, ["run", "-c", str(config), "--top-k", "1", "--print-config"])
    assert printed.exit_code == 0
    assert "[run]" in printed.output and "top_k = 1" in printed.output and "frames = 2" in printed.output
    result = runner.invoke(cli, ["run", "-c", str(config), "--stats-interval", "0"])
    assert [len(r["classes"]) for r in _records(result.output)] == [4, 4]
    check = runner.invoke(cli, ["run", "-c", str(config), "--validate-config"])
    assert check.exit_code == 0 and "config OK" in check.output


def test_file_sink_and_only_changes(runner: CliRunner, tmp_path: Path, classifier_dir: Path, video: Path) -> None:
    out = tmp_path / "r.jsonl"
    args = ["run", "--model", str(classifier_dir), "--source", str(video), "--sink", f"file:{out}"]
    result = runner.invoke(cli, [*args, "--only-changes", "--top-k", "1", "--stats-interval", "0"])
    assert result.exit_code == 0 and result.output == ""
    records = _records(out.read_text())
    tops = [r["classes"][0]["id"] for r in records]
    assert 1 <= len(records) < 270
    assert all(a != b for a, b in itertools.pairwise(tops))


def _bad(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(cli, ["run", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


def test_bad_models(
    runner: CliRunner, tmp_path: Path, classifier_dir: Path, vector_model: Path, float_model: Path, video: Path
) -> None:
    src = ["--source", str(video)]
    assert "nope.tflite: no such model file" in _bad(runner, ["--model", str(tmp_path / "nope.tflite"), *src])
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(2048))
    assert "junk.tflite: not a TFLite model" in _bad(runner, ["--model", str(junk), *src])
    cut = tmp_path / "cut.tflite"
    cut.write_bytes((classifier_dir / "model.tflite").read_bytes()[:5000])
    assert "cut.tflite: not a loadable TFLite model" in _bad(runner, ["--model", str(cut), *src])
    assert "is not an image" in _bad(runner, ["--model", str(vector_model), *src])
    line = _bad(runner, ["--model", str(float_model), "--device", "edgetpu", *src])
    assert "input is float32, but --device edgetpu needs a uint8/int8 model" in line


def test_bad_source_labels_and_config(runner: CliRunner, tmp_path: Path, classifier_dir: Path, video: Path) -> None:
    model = ["--model", str(classifier_dir)]
    line = _bad(runner, [*model, "--source", str(tmp_path / "gone.mp4")])
    assert line == f"Error: {tmp_path / 'gone.mp4'}: no such camera, file or folder" + line.split("folder", 1)[1]
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    line = _bad(runner, [*model, "--source", str(video), "--labels", str(labels)])
    assert f"{labels}: 3 labels but model.tflite has 10 outputs" in line
    config = tmp_path / "bad.toml"
    config.write_text("[run]\nthreds = 2\n")
    assert "bad.toml: unknown key 'run.threds'" in _bad(runner, ["-c", str(config)])
    config.write_text('[run]\ntop_k = "three"\n')
    assert "bad.toml: key 'run.top_k' must be an integer" in _bad(runner, ["-c", str(config)])
    config.write_text("[run]\nthreshold = 1.5\n")
    assert "bad.toml: key 'run.threshold' must be between 0 and 1" in _bad(runner, ["-c", str(config)])
    assert "key 'run.sinks[0]'" in _bad(runner, [*model, "--source", str(video), "--sink", "kafka://x"])


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgekit", "run", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, predicate, timeout: float = 30.0) -> list[dict]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            records = [json.loads(line) for line in lines if line.endswith("}")]
            if predicate(records):
                return records
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting on {path}")


def test_sigterm_stops_cleanly_with_sinks_flushed(tmp_path: Path, classifier_dir: Path, video: Path) -> None:
    out = tmp_path / "r.jsonl"
    proc = _start(
        ["--model", str(classifier_dir), "--source", str(video), "--realtime", "--sink", f"file:{out}"], tmp_path
    )
    _wait_for(out, lambda rs: len(rs) >= 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert records[-1]["type"] == "stats" and records[-1]["frames"] == len(records) - 1


def test_sighup_reloads_the_config(tmp_path: Path, classifier_dir: Path, video: Path) -> None:
    out = tmp_path / "r.jsonl"
    config = tmp_path / "edgekit.toml"
    body = f'[run]\nmodel = "{classifier_dir}"\nsource = "{video}"\nrealtime = true\nsinks = ["file:{out}"]\n'
    config.write_text(body + "top_k = 1\n")
    proc = _start(["-c", str(config)], tmp_path)
    try:
        _wait_for(out, lambda rs: len(rs) >= 2)
        config.write_text(body + "top_k = 1\nthreds = 3\n")  # invalid: logged, the run goes on
        proc.send_signal(signal.SIGHUP)
        _wait_for(out, lambda rs: len(rs) >= 8)
        config.write_text(body + "top_k = 2\n")
        proc.send_signal(signal.SIGHUP)
        records = _wait_for(out, lambda rs: any(len(r.get("classes", [])) == 2 for r in rs))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "unknown key 'run.threds'" in err and "keeping the running configuration" in err
    assert len(records[0]["classes"]) == 1


def test_bench_prints_both_columns(runner: CliRunner, classifier_dir: Path) -> None:
    result = runner.invoke(cli, ["bench", str(classifier_dir), "--runs", "20", "--frames", "30", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "invoke()" in result.output and "pipeline" in result.output
    assert "inference p50 ms" in result.output and "latency p95 ms" in result.output
    assert "streams" not in result.output.splitlines()[0]  # one thread: one stream
    # Two threads: the pipeline runs a file as edgekit run does, two streams of one thread; every frame done.
    result = runner.invoke(cli, ["bench", str(classifier_dir), "--runs", "20", "--frames", "30", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "2 threads, 2 streams of 1" in result.output.splitlines()[0]
    assert result.output.splitlines()[2].split()[-1] == "30"  # the "frames" row, pipeline column


@pytest.mark.parametrize("source", ["video", "camera", "folder"])
def test_bench_profile_shows_where_a_frames_time_goes(
    runner: CliRunner, data_dir: Path, video: Path, source: str
) -> None:
    """A detector edgekit did not convert, the real video as a file, a 30 fps camera and a folder of JPEGs."""
    model = data_dir / "ssdlite_shapes_int8.tflite"
    args = ["bench", str(model), "--profile", "--video", str(video), "--frames", "40", "--source", source]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:13]}
    stages = ["decode", "colour", "resize", "set_tensor", "invoke", "outputs", "postprocess", "record", "encode"]
    assert list(rows) == [*stages, "publish", "sum"]
    p50 = {name: float(rows[name][1]) for name in [*stages, "publish"]}
    assert all(v >= 0 for v in p50.values()) and p50["invoke"] > 0
    assert abs(sum(p50.values()) - float(rows["sum"][1])) < 0.01
    assert lines[4].endswith("crop + resize (bilinear)")  # a plain .tflite's default
    assert lines[0].endswith(", 40 frames") or source == "camera"  # a camera's frames not taken in time are dropped
    streams = "1 stream" if source == "camera" else "2 streams"  # as edgekit run: a live source keeps one
    assert f"pipeline (as edgekit run, {streams})" in lines[13]
    dropped = int(lines[14].split()[-1])
    assert dropped == 0 or source == "camera"


def test_a_closed_stdout_pipe_ends_the_run_quietly(classifier_dir: Path, video: Path) -> None:
    # `edgekit run ... | head -n 2`: the reader leaves, the run ends with 0 and no "Exception ignored" noise.
    run = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "run", "--model", str(classifier_dir), "--source", str(video)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert run.stdout is not None
    first = run.stdout.readline()
    run.stdout.close()
    _, err = run.communicate(timeout=60)
    assert first.startswith(b'{"type":"result"')
    assert run.returncode == 0, err
    assert b"Exception ignored" not in err and b"Traceback" not in err
