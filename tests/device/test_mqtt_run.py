"""`edgekit run` with an MQTT sink, end to end: a real model, the real video, a real mosquitto."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from tests.conftest import REPO
from tests.device.mqtt_broker import Broker, Subscriber, retained_becomes


def test_run_publishes_results_and_stats_and_sigkill_leaves_offline(
    mosquitto: Any, tmp_path: Path, classifier_dir: Path, video: Path
) -> None:
    broker: Broker = mosquitto()
    sub = Subscriber(broker.port, "cams/#", client_id="run-watcher")
    config = tmp_path / "edgekit.toml"
    config.write_text('[run]\ncamera = "porch"\nstats_interval = 0.5\n\n[mqtt]\nreconnect_min = 0.1\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", "run", "-c", str(config), "--model", str(classifier_dir), "--source",
         str(video), "--realtime", "--sink", f"mqtt://127.0.0.1:{broker.port}/cams"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sub.wait_for(lambda: len(sub.payloads("porch/stats")) >= 1 and len(sub.payloads("/result")) >= 5, 30)
        assert retained_becomes(broker.port, "cams/status", b"online", timeout=10.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert retained_becomes(broker.port, "cams/status", b"offline", timeout=10.0), err  # the broker published the will
    sub.close()

    results = sub.payloads("cams/porch/result")
    seqs = [r["seq"] for r in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] <= 1  # in order from the first, none missing
    first = results[0]
    assert first["type"] == "result" and first["camera"] == "porch" and first["task"] == "classify"
    assert {"seq", "ts", "frame", "source", "model", "classes", "timing_ms"} <= set(first)
    assert {"id", "label", "score"} == set(first["classes"][0])
    stats = sub.payloads("cams/porch/stats")[0]
    counters = stats["sinks"][f"mqtt://127.0.0.1:{broker.port}"]
    assert counters["connected"] == 1 and counters["dropped"] == 0 and counters["sent"] >= 1


def test_run_with_a_wrong_password_exits_2_with_one_clear_line(
    mosquitto: Any, tmp_path: Path, classifier_dir: Path, video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker: Broker = mosquitto(users={"cam": "right"})
    (tmp_path / "mqtt_password").write_text("pw-Zq81-wrong\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    result = CliRunner().invoke(
        cli,
        ["run", "--model", str(classifier_dir), "--source", str(video), "--sink",
         f"mqtt://cam@127.0.0.1:{broker.port}/x"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"Error: mqtt://127.0.0.1:{broker.port}: the broker refused the connection (")
    assert "user 'cam'" in lines[0] and "pw-Zq81" not in result.output
    time.sleep(1.0)
    assert broker.connect_attempts() == 1  # refused once, never retried
