"""Every rule `edgekit run` can refuse a config for, refused first by `--validate-config`: same message, exit 2.

The run plan (`edgekit.plan`) holds the rules; this table is the proof that the check and the run agree. A rule
added to the run and not to the plan shows up here as a run that fails where the check said "config OK".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import dump_toml

DETECTOR = Path(__file__).resolve().parents[1] / "data" / "ssdlite_shapes_int8.tflite"


def _rules(tmp: str) -> list[tuple[str, dict[str, dict[str, Any]], str]]:
    """(rule, config changes, the message's distinctive part). ``{tmp}`` is a per-test folder."""
    bad_pem = f"{tmp}/bad.pem"
    return [
        # the file itself: keys and types
        ("unknown key", {"run": {"threds": 2}}, "unknown key 'run.threds'"),
        ("wrong type", {"run": {"threads": "two"}}, "key 'run.threads' must be an integer, got str 'two'"),
        ("not a choice", {"run": {"task": "segment"}}, "key 'run.task' must be one of 'auto', 'classify', 'detect'"),
        # [run] ranges
        ("threads", {"run": {"threads": -1}}, "key 'run.threads' must be 0 (all cores) or more, got -1"),
        ("streams", {"run": {"streams": -1}}, "key 'run.streams' must be 0 (automatic) or more, got -1"),
        ("top_k", {"run": {"top_k": 0}}, "key 'run.top_k' must be 1 or more, got 0"),
        ("threshold", {"run": {"threshold": 1.5}}, "key 'run.threshold' must be between 0 and 1, got 1.5"),
        ("max_fps", {"run": {"max_fps": -1.0}}, "key 'run.max_fps' must be 0 (unlimited) or more, got -1.0"),
        ("frames", {"run": {"frames": -1}}, "key 'run.frames' must be 0 (no limit) or more, got -1"),
        ("stats_interval", {"run": {"stats_interval": -1.0}}, "key 'run.stats_interval' must be 0 (off) or more"),
        ("no sinks", {"run": {"sinks": []}}, "key 'run.sinks' must be a list with at least one sink, got []"),
        # [run] across keys, and the strings
        ("device", {"run": {"device": "gpu"}}, "key 'run.device': device 'gpu' is not one of cpu, edgetpu"),
        ("streams on a TPU", {"run": {"device": "edgetpu", "streams": 2}}, "parallel streams run on the CPU"),
        ("streams and pacing", {"run": {"streams": 2, "max_fps": 5.0}}, "run.max_fps paces the frames"),
        ("no model", {"run": {"model": ""}}, "no model; pass --model DIR_OR_TFLITE or set 'run.model'"),
        ("missing model", {"run": {"model": f"{tmp}/nope"}}, f"{tmp}/nope"),
        ("no source", {"run": {"source": ""}}, "no source; pass --source or set 'run.source'"),
        ("missing source", {"run": {"source": f"{tmp}/nope.mp4"}}, "nope.mp4: no such camera, file or folder"),
        ("unknown class", {"run": {"classes": ["unicorn"]}}, "key 'run.classes': 'unicorn' is not a label"),
        ("missing labels", {"run": {"labels": f"{tmp}/nope.txt"}}, "nope.txt"),
        # sinks
        ("sink kind", {"run": {"sinks": ["kafka://x"]}}, "key 'run.sinks[0]': sink 'kafka://x': unknown kind"),
        ("file sink path", {"run": {"sinks": ["file:"]}}, "sink 'file:': give a path"),
        ("file sink option", {"run": {"sinks": [f"file:{tmp}/r?size=3"]}}, "unknown option 'size'"),
        ("file sink number", {"run": {"sinks": [f"file:{tmp}/r?max_mb=x"]}}, "max_mb must be a number"),
        ("file sink negative", {"run": {"sinks": [f"file:{tmp}/r?keep=-1"]}}, "max_mb and keep cannot be negative"),
        ("MQTT password in URL", {"run": {"sinks": ["mqtt://u:hunter2@127.0.0.1:1/x"]}}, "a password in the URL"),
        ("MQTT host", {"run": {"sinks": ["mqtt:///x"]}}, "no broker host"),
        ("MQTT port", {"run": {"sinks": ["mqtt://h:99999/x"]}}, "the port is not a number from 1 to 65535"),
        ("MQTT wildcard", {"run": {"sinks": ["mqtt://h/a/+/b"]}}, "must not contain the MQTT wildcards"),
        ("MQTT query", {"run": {"sinks": ["mqtt://h/x?qos=0"]}}, "options go in the [mqtt] section"),
        ("MQTT prefix", {"run": {"sinks": ["mqtt://h"]}, "mqtt": {"topic_prefix": "$SYS"}}, "must not contain + #"),
        # [mqtt] options
        ("mqtt.qos", {"mqtt": {"qos": 3}}, "key 'mqtt.qos' must be 0, 1 or 2, got 3"),
        ("mqtt.keepalive", {"mqtt": {"keepalive": -5}}, "key 'mqtt.keepalive' must be 5..65535 seconds, got -5"),
        ("mqtt.connect_timeout", {"mqtt": {"connect_timeout": 0.0}}, "key 'mqtt.connect_timeout' must be above 0"),
        ("mqtt.reconnect_min", {"mqtt": {"reconnect_min": 0.0}}, "key 'mqtt.reconnect_min' must be above 0"),
        (
            "mqtt.reconnect_max",
            {"run": {"sinks": ["mqtt://h/x"]}, "mqtt": {"reconnect_min": 5.0, "reconnect_max": 1.0}},
            "mqtt.reconnect_max (1.0) must be >= mqtt.reconnect_min (5.0)",
        ),
        ("mqtt.queue_size", {"mqtt": {"queue_size": -1}}, "key 'mqtt.queue_size' must be 1 or more, got -1"),
        ("mqtt.max_inflight", {"mqtt": {"max_inflight": 0}}, "key 'mqtt.max_inflight' must be 1..65535, got 0"),
        ("mqtt.drain_timeout", {"mqtt": {"drain_timeout": -1.0}}, "key 'mqtt.drain_timeout' must be 0 or more"),
        ("mqtt.discovery_prefix", {"mqtt": {"discovery_prefix": "ha/#"}}, "must be a topic without + or #"),
        ("mqtt.queue_policy", {"mqtt": {"queue_policy": "random"}}, "key 'mqtt.queue_policy' must be one of"),
        (
            "mqtt.key_file alone",
            {"run": {"sinks": ["mqtts://h/x"]}, "mqtt": {"key_file": bad_pem}},
            "mqtt.key_file is set without mqtt.cert_file",
        ),
        (
            "TLS file without mqtts",
            {"run": {"sinks": ["mqtt://h/x"]}, "mqtt": {"ca_file": bad_pem}},
            "mqtt.ca_file is set but the sink is mqtt://; use mqtts://",
        ),
        (
            "missing TLS file",
            {"run": {"sinks": ["mqtts://h/x"]}, "mqtt": {"ca_file": f"{tmp}/nope.pem"}},
            "nope.pem: no such file",
        ),
        (
            "not a CA certificate",
            {"run": {"sinks": ["mqtts://h/x"]}, "mqtt": {"ca_file": bad_pem}},
            "bad.pem: not a PEM CA certificate",
        ),
        (
            "missing password file",
            {"run": {"sinks": ["mqtt://u@h/x"]}, "mqtt": {"password_file": f"{tmp}/nope"}},
            "nope: MQTT password file not found",
        ),
        (
            "password without user",
            {"run": {"sinks": ["mqtt://h/x"]}, "mqtt": {"password_file": f"{tmp}/pw"}},
            "an MQTT password is set but no user",
        ),
        ("class_events", {"run": {"class_events": -1}}, "key 'run.class_events' must be 0 (off) or more frames"),
        ("class_event_step", {"run": {"class_event_step": 0.0}}, "key 'run.class_event_step' must be above 0"),
        (
            "class events on a detector",
            {"run": {"class_events": 3, "model": str(DETECTOR)}},
            "key 'run.class_events': ssdlite_shapes_int8.tflite is a detector; class events are for classifiers",
        ),
        # [motion]
        ("motion.threshold", {"motion": {"threshold": 0.0}}, "key 'motion.threshold' must be above 0 and below 255"),
        ("motion.min_area", {"motion": {"min_area": 1.0}}, "key 'motion.min_area' must be at least 0 and below 1"),
        ("motion.keyframe", {"motion": {"keyframe": 0.0}}, "key 'motion.keyframe' must be above 0 seconds, got 0.0"),
        ("motion.width", {"motion": {"width": 8}}, "key 'motion.width' must be 16..640 pixels, got 8"),
        ("motion.enabled", {"motion": {"enabled": "yes"}}, "key 'motion.enabled' must be true or false"),
        ("motion and streams", {"run": {"streams": 2}, "motion": {"enabled": True}}, "motion gating decides frame"),
        # [http]
        ("http.listen", {"http": {"listen": "localhost"}}, "key 'http.listen' must be HOST:PORT or PORT"),
        ("http.fps", {"http": {"fps": 0.0}}, "key 'http.fps' must be above 0 and at most 60, got 0.0"),
        ("http.jpeg_quality", {"http": {"jpeg_quality": 101}}, "key 'http.jpeg_quality' must be 1..100, got 101"),
        ("http.user", {"http": {"user": "a:b"}}, "key 'http.user' must be a non-empty name without ':'"),
        (
            "http password file",
            {"http": {"listen": "127.0.0.1:0", "password_file": f"{tmp}/nope"}},
            "nope: http password file not found",
        ),
    ]


RULES = [rule for rule, _, _ in _rules("TMP")]


def _merge(base: dict[str, dict[str, Any]], changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {section: {**base.get(section, {}), **changes.get(section, {})} for section in {*base, *changes}}


def _error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("rule", RULES)
def test_validate_config_refuses_what_the_run_refuses(
    rule: str, classifier_dir: Path, video: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    (tmp_path / "pw").write_text("secret\n")
    changes, fragment = next((c, f) for r, c, f in _rules(str(tmp_path)) if r == rule)
    base = {"run": {"model": str(classifier_dir), "source": str(video), "frames": 2, "sinks": ["stdout"]}}
    config = tmp_path / "edgekit.toml"
    config.write_text(dump_toml(_merge(base, changes)))
    runner = CliRunner()
    checked = _error(runner.invoke(cli, ["run", "-c", str(config), "--validate-config"]))
    ran = _error(runner.invoke(cli, ["run", "-c", str(config)]))
    assert checked == ran
    assert fragment in checked
    if "hunter2" in config.read_text():
        assert "hunter2" not in checked


def test_the_base_config_of_the_table_runs(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    """Without a rule broken, the same config validates and runs (so each row fails for its own rule)."""
    base = {"run": {"model": str(classifier_dir), "source": str(video), "frames": 2, "sinks": ["stdout"]}}
    config = tmp_path / "edgekit.toml"
    config.write_text(dump_toml(base))
    runner = CliRunner()
    checked = runner.invoke(cli, ["run", "-c", str(config), "--validate-config"])
    assert checked.exit_code == 0 and "config OK" in checked.output
    assert runner.invoke(cli, ["run", "-c", str(config)]).exit_code == 0
