"""The MQTT sink's spec parsing, option checks, queues and Home Assistant configs (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.config import MqttConfig, load_config
from edgekit.device.sinks.mqtt import discovery_configs
from edgekit.device.sinks.mqtt_queue import DELETE_BATCH, MemoryQueue, SpoolQueue
from edgekit.errors import ConfigError, SinkError
from edgekit.plan import BrokerAddress, mqtt_spec, parse_broker, topic_level


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mqtt://broker.lan", BrokerAddress("mqtt", "broker.lan", 1883, "", "edgekit/pi3")),
        ("mqtts://broker.lan", BrokerAddress("mqtts", "broker.lan", 8883, "", "edgekit/pi3")),
        ("mqtt://cam@10.0.0.2:1884/site/garage/", BrokerAddress("mqtt", "10.0.0.2", 1884, "cam", "site/garage")),
        ("mqtt://[::1]:1999/x", BrokerAddress("mqtt", "::1", 1999, "", "x")),
        ("mqtt://us%40er@h/a%20b", BrokerAddress("mqtt", "h", 1883, "us@er", "a b")),
    ],
)
def test_parse_spec(spec: str, expected: BrokerAddress) -> None:
    assert parse_broker(spec, MqttConfig(), "pi3") == expected


def test_prefix_and_user_from_the_config_when_the_url_has_none() -> None:
    address = parse_broker("mqtt://h", MqttConfig(topic_prefix="/home/cams/", username="u"), "pi3")
    assert (address.prefix, address.username) == ("home/cams", "u")
    assert str(parse_broker("mqtts://[::1]", MqttConfig(), "d")) == "mqtts://[::1]:8883"


def test_a_password_in_the_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_broker("mqtt://cam:hunter2@broker/x", MqttConfig(), "pi3")
    assert "hunter2" not in str(err.value)
    assert str(err.value).startswith("sink mqtt://cam:***@broker: a password in the URL would show in `ps`")
    assert "$CREDENTIALS_DIRECTORY/mqtt_password" in str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mqtt://", "no broker host"),
        ("mqtt://h:99999/x", "the port is not a number from 1 to 65535"),
        ("mqtt://h/x?qos=0", "options go in the [mqtt] section"),
        ("mqtt://h/a/#", "the topic prefix must not contain the MQTT wildcards"),
        ("mqtt://h/a/+/b", "the topic prefix must not contain the MQTT wildcards"),
        ("http://h/x", "not an MQTT URL"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        parse_broker(spec, MqttConfig(), "pi3")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mqtt.qos": 3}, "command line: key 'mqtt.qos' must be 0, 1 or 2, got 3"),
        ({"mqtt.keepalive": 0}, "command line: key 'mqtt.keepalive' must be 5..65535 seconds, got 0"),
        ({"mqtt.queue_size": 0}, "command line: key 'mqtt.queue_size' must be 1 or more, got 0"),
        ({"mqtt.reconnect_min": 5.0, "mqtt.reconnect_max": 1.0}, "mqtt.reconnect_max (1.0) must be >= mqtt.recon"),
        ({"mqtt.key_file": "k.pem"}, "mqtt.key_file is set without mqtt.cert_file"),
        ({"mqtt.ca_file": "ca.pem"}, "mqtt.ca_file is set but the sink is mqtt://; use mqtts://"),
    ],
)
def test_bad_options_stop_before_connecting(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        mqtt_spec("mqtt://127.0.0.1:1/x", load_config(None, overrides))
    assert str(err.value).startswith(message)


def test_missing_tls_file_and_password_without_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"mqtt.ca_file: /nonexistent/ca.pem: no such file"):
        mqtt_spec("mqtts://h/x", load_config(None, {"mqtt.ca_file": "/nonexistent/ca.pem"}))
    (tmp_path / "mqtt_password").write_text("pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match=r"an MQTT password is set but no user: use mqtt://USER@host"):
        mqtt_spec("mqtt://127.0.0.1:1/x", load_config(None, {}))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match=r"nope: MQTT password file not found"):
        mqtt_spec("mqtt://u@127.0.0.1:1/x", load_config(None, {"mqtt.password_file": str(tmp_path / "nope")}))


def test_mqtt_section_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "edgekit.toml"
    path.write_text('[mqtt]\nqos = 0\nqueue_policy = "drop_newest"\nhomeassistant = true\n')
    cfg = load_config(path)
    assert (cfg.mqtt.qos, cfg.mqtt.queue_policy, cfg.mqtt.homeassistant) == (0, "drop_newest", True)
    path.write_text("[mqtt]\npassword = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown key 'mqtt.password'"):
        load_config(path)
    path.write_text('[mqtt]\nqueue_policy = "drop_random"\n')
    with pytest.raises(ConfigError, match=r"key 'mqtt.queue_policy' must be one of 'drop_oldest', 'drop_newest'"):
        load_config(path)


def test_topic_level() -> None:
    assert topic_level("front door/#1+") == "front_door_1_"
    assert topic_level("  ") == "default"


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [3, 4, 5]), ("drop_newest", [1, 2, 3])])
def test_memory_queue_policies(policy: str, kept: list[int]) -> None:
    queue = MemoryQueue(3, policy)  # type: ignore[arg-type]
    dropped = sum(queue.put("t", str(i).encode(), False) for i in range(1, 6))
    assert dropped == 2 and queue.pending == 3
    taken = [queue.take() for _ in range(4)]
    assert [int(m.payload) for m in taken if m] == kept and taken[-1] is None


def test_spool_keeps_unacknowledged_messages_across_a_restart(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path, "q", 100, "drop_oldest")
    for i in range(5):
        queue.put(f"t/{i}", str(i).encode(), i == 4)
    first, second = queue.take(), queue.take()
    assert first is not None and second is not None and queue.pending == 3
    queue.done(first)  # acknowledged; `second` was in flight when the process stopped
    queue.close()
    again = SpoolQueue(tmp_path, "q", 100, "drop_oldest")
    assert again.restored == 4
    messages = [again.take() for _ in range(4)]
    assert [(m.topic, m.payload, m.retain) for m in messages if m] == [
        ("t/1", b"1", False),
        ("t/2", b"2", False),
        ("t/3", b"3", False),
        ("t/4", b"4", True),
    ]
    assert again.take() is None
    for m in messages:
        assert m is not None
        again.done(m)
    again.put("t/5", b"5", False)  # keys keep growing after the table emptied
    m5 = again.take()
    assert m5 is not None and m5.key > messages[-1].key  # type: ignore[union-attr]
    again.close()


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", [b"2", b"3"]), ("drop_newest", [b"0", b"1"])])
def test_spool_policies_and_a_smaller_size_after_restart(tmp_path: Path, policy: str, kept: list[bytes]) -> None:
    queue = SpoolQueue(tmp_path, "q", 4, policy)  # type: ignore[arg-type]
    for i in range(4):
        assert queue.put("t", str(i).encode(), False) == 0
    queue.close()
    smaller = SpoolQueue(tmp_path, "q", 2, policy)  # type: ignore[arg-type]
    assert smaller.dropped_at_start == 2 and smaller.pending == 2
    assert [m.payload for m in (smaller.take(), smaller.take()) if m] == kept
    smaller.close()


def test_spool_is_locked_and_checked(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path, "q", 10, "drop_oldest")
    with pytest.raises(SinkError, match=r"q.sqlite3: in use by another edgekit process"):
        SpoolQueue(tmp_path, "q", 10, "drop_oldest")
    queue.close()
    (tmp_path / "bad.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SinkError, match=r"bad.sqlite3: not a usable queue file .*; move it away"):
        SpoolQueue(tmp_path, "bad", 10, "drop_oldest")


def test_home_assistant_configs() -> None:
    classify = discovery_configs("homeassistant", "edgekit/pi 3", "pi 3", "door", "classify")
    assert [t for t, _ in classify] == [
        "homeassistant/sensor/edgekit_pi_3/door_label/config",
        "homeassistant/sensor/edgekit_pi_3/door_score/config",
    ]
    label = classify[0][1]
    assert label["value_template"] == "{{ value_json.classes[0].label if value_json.classes else 'none' }}"
    assert label["state_topic"] == "edgekit/pi 3/door/result"
    assert label["payload_not_available"] == "offline"
    detect = discovery_configs("ha", "p", "d", "yard", "detect")
    assert [t.rsplit("/", 2)[1] for t, _ in detect] == ["yard_label", "yard_score", "yard_count"]
    assert "value_json.detections[0].score" in detect[1][1]["value_template"]


def test_a_bad_ca_file_fails_cleanly_and_releases_the_spool(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    overrides = {"mqtt.ca_file": str(bad), "mqtt.queue_dir": str(tmp_path / "spool")}
    for _ in range(2):  # the second attempt would say "in use by another edgekit process" if the lock leaked
        with pytest.raises(ConfigError, match=r"mqtt.ca_file: .*ca.pem: not a PEM CA certificate"):
            mqtt_spec("mqtts://127.0.0.1:1/x", load_config(None, overrides))


def test_spool_deletes_acknowledged_messages_in_batches(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path, "q", 1000, "drop_oldest")
    for i in range(40):
        queue.put("t", str(i).encode(), False)
        message = queue.take()
        assert message is not None and message.payload == str(i).encode()
        queue.done(message)
    rows = queue._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert rows == 40 - DELETE_BATCH  # one batch deleted, the rest waits for the next batch or close()
    queue.close()
    queue.close()  # idempotent
    again = SpoolQueue(tmp_path, "q", 1000, "drop_oldest")
    assert again.restored == 0 and again.take() is None
    again.close()


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_home_assistant_templates_render_real_records(task: str) -> None:
    # Home Assistant renders value_template with Jinja2, `value_json` being the parsed payload.
    import jinja2  # the dev extra

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    items = "detections" if task == "detect" else "classes"
    hit = {"id": 1, "label": "person", "score": 0.87654}
    full = {"type": "result", "task": task, items: [hit, {**hit, "label": "dog", "score": 0.5}]}
    empty = {"type": "result", "task": task, items: []}
    rendered = {
        topic.rsplit("/", 2)[1].split("_")[-1]: (
            env.from_string(config["value_template"]).render(value_json=full),
            env.from_string(config["value_template"]).render(value_json=empty),
        )
        for topic, config in discovery_configs("homeassistant", "p", "d", "cam", task)
    }
    assert rendered["label"] == ("person", "none")
    assert rendered["score"] == ("0.877", "0")
    if task == "detect":
        assert rendered["count"] == ("2", "0")
    else:
        assert "count" not in rendered


def test_zone_occupancy_templates_render_the_retained_counts() -> None:
    import jinja2  # the dev extra

    from edgekit.device.sinks.mqtt import zone_discovery_configs

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    (occ_topic, occupancy), (count_topic, count) = zone_discovery_configs("ha", "p", "pi 3", "yard", "drive", "car")
    assert occ_topic == "ha/binary_sensor/edgekit_pi_3/yard_drive_car_occupancy/config"
    assert count_topic == "ha/sensor/edgekit_pi_3/yard_drive_car_count/config"
    assert occupancy["state_topic"] == count["state_topic"] == "p/yard/drive/car"
    template = env.from_string(occupancy["value_template"])
    assert [template.render(value=v) for v in ("0", "1", "3")] == ["OFF", "ON", "ON"]
    assert "value_template" not in count  # the count is the payload itself
