"""The MQTT sink against a real mosquitto: order and schema, broker restarts, auth, TLS, last will, the spool."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekit.config import Config, load_config
from edgekit.device.sinks import mqtt
from edgekit.device.sinks.base import Sink
from edgekit.device.sinks.mqtt import MqttSink
from edgekit.errors import SinkError
from edgekit.plan import mqtt_spec
from tests.device.mqtt_broker import Broker, Subscriber, make_certificates, retained, retained_becomes


def create(url: str, config: Config) -> MqttSink:
    """An MQTT sink as `edgekit run` opens one: the run plan's spec, then the sink."""
    return mqtt.create(mqtt_spec(url, config))


REPO = Path(__file__).resolve().parents[2]
# Paho does not close the socket of a failed TLS handshake; the garbage collector does, with a ResourceWarning.
PAHO_TLS_LEAK = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
)
FAST = {"mqtt.reconnect_min": 0.05, "mqtt.reconnect_max": 0.3, "mqtt.connect_timeout": 3.0}


def config(**mqtt: Any) -> Config:
    return load_config(None, {**FAST, **{f"mqtt.{k}": v for k, v in mqtt.items()}})


def result(seq: int, camera: str = "door") -> dict[str, Any]:
    """A classification result record in the documented schema."""
    return {
        "type": "result",
        "seq": seq,
        "ts": 1_700_000_000.0 + seq / 30,
        "frame": seq,
        "source": "video.avi",
        "camera": camera,
        "model": "mobilenet_v2",
        "task": "classify",
        "classes": [
            {"id": 409, "label": "analog clock", "score": 0.81},
            {"id": 892, "label": "wall clock", "score": 0.07},
        ],
        "timing_ms": {"capture": 1.0, "preprocess": 0.5, "inference": 12.0, "postprocess": 0.1, "total": 13.6},
    }


def settled(sink: MqttSink, timeout: float = 10.0) -> dict[str, int | float]:
    """The sink's counters once nothing is queued or in flight."""
    deadline = time.monotonic() + timeout
    while sink.counters()["queued"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return dict(sink.counters())


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks a test creates are closed even when it fails."""
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.close()


@pytest.fixture
def subscribers() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(*args: Any, **kwargs: Any) -> Subscriber:
        made.append(Subscriber(*args, **kwargs))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


def test_every_result_arrives_in_order_with_the_schema(mosquitto: Any, sinks: list[MqttSink], subscribers: Any) -> None:
    broker = mosquitto()
    sub = subscribers(broker.port, "site/pi3/#")
    sink = create(f"mqtt://127.0.0.1:{broker.port}/site/pi3", config())
    sinks.append(sink)
    assert isinstance(sink, Sink)
    records = [result(i) for i in range(300)]
    for record in records:
        sink.publish_result(record)
    stats = {
        "type": "stats",
        "ts": 1.0,
        "camera": "door",
        "uptime_s": 10.0,
        "frames": 300,
        "fps": 30.0,
        "inference_ms": {"p50": 12.0, "p95": 14.0},
        "latency_ms": {"p50": 14.0, "p95": 16.0},
        "dropped": 0,
        "sinks": {sink.name: dict(sink.counters())},
    }
    sink.publish_stats(stats)
    assert sub.wait_for(lambda: len(sub.payloads("/stats")) == 1)
    assert sub.payloads("/door/result") == records  # same JSON, same order, nothing else on the topic
    assert sub.payloads("site/pi3/door/stats") == [stats]
    assert sub.raw("site/pi3/status")[0] == (b"online", False)
    counters = settled(sink)
    assert counters == {
        "connected": 1,
        "queued": 0,
        "inflight": 0,
        "sent": 301,
        "dropped": 0,
        "rejected": 0,
        "reconnects": 0,
        "resent": 0,
    }
    assert retained(broker.port, "site/pi3/status") == b"online"
    assert retained(broker.port, "site/pi3/door/stats") is not None  # mqtt.retain covers stats
    sinks.remove(sink)
    sink.close()
    assert retained(broker.port, "site/pi3/status") == b"offline"  # a clean stop says so; the will does not fire


def test_mqtt5_marks_payloads_as_json(mosquitto: Any, sinks: list[MqttSink]) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    broker = mosquitto()
    got: list[Any] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="v5-watcher", protocol=paho.MQTTv5)
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: got.append(m)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe("v5/+/result", qos=1)
    client.loop_start()
    assert subscribed.wait(10)
    sink = create(f"mqtt://127.0.0.1:{broker.port}/v5", config(protocol="5"))
    sinks.append(sink)
    sink.publish_result(result(0))
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    client.disconnect()
    client.loop_stop()
    assert got and json.loads(got[0].payload) == result(0)
    assert got[0].properties.ContentType == "application/json"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_broker_restarted_mid_run_loses_nothing(
    mosquitto: Any, sinks: list[MqttSink], subscribers: Any, how: str
) -> None:
    broker: Broker = mosquitto(persistence=True)
    # A persistent QoS-1 session: the broker keeps what arrives while this subscriber reconnects.
    sub = subscribers(broker.port, "r/+/result", client_id="restart-watcher")
    broker.save_sessions(sub)
    sink = create(f"mqtt://127.0.0.1:{broker.port}/r", config())
    sinks.append(sink)
    total, restarts = 1500, (400, 900)
    # What SIGKILL may lose: records the broker had acknowledged but not yet passed on to the subscriber, i.e.
    # after the last one the subscriber had got when the broker died (QoS 1 keeps the order).
    at_risk: set[int] = set()
    for seq in range(total):
        sink.publish_result(result(seq))
        if seq in restarts:
            if how == "SIGKILL":
                delivered = max((p["seq"] for p in sub.payloads("/result")), default=-1)
                at_risk.update(range(delivered + 1, seq + 1))
                broker.kill()  # with messages in flight, either way
            else:
                broker.stop()
            time.sleep(0.3)  # records keep coming while the broker is down: they queue
            broker.start()  # same port, same persistence
        time.sleep(0.0005)
    sub.wait_for(lambda: {p["seq"] for p in sub.payloads("/result")} >= set(range(total)), timeout=20)
    counters = settled(sink)
    missing = sorted(set(range(total)) - {p["seq"] for p in sub.payloads("/result")})
    # The sink's side: the broker acknowledged every record, nothing dropped, both outages noticed.
    assert counters["sent"] == total and counters["dropped"] == 0 and counters["queued"] == 0, counters
    assert 1 <= counters["reconnects"] <= len(restarts)  # two outages close together can merge into one
    if how == "SIGTERM":
        assert not missing, f"missing {missing[:20]} (of {len(missing)}); sink counters {counters}"
    else:
        # mosquitto acknowledges a QoS-1 message before it has forwarded or saved it, so SIGKILL can lose some
        # that the broker had already accepted (how many depends on how far the subscriber lagged); nothing
        # the subscriber could have had before the kill, and nothing after it, may be missing.
        assert set(missing) <= at_risk, f"missing {missing[:20]} (of {len(missing)}); sink counters {counters}"


@pytest.mark.parametrize(("policy", "kept"), [("drop_oldest", range(15, 25)), ("drop_newest", range(10))])
def test_bounded_queue_while_the_broker_is_down(
    tmp_path: Path, sinks: list[MqttSink], subscribers: Any, policy: str, kept: range, caplog: Any
) -> None:
    broker = Broker(tmp_path / "late", persistence=True)
    # A persistent session made beforehand receives whatever the sink sends as soon as the broker is back.
    broker.start()
    subscribers(broker.port, "q/+/result", client_id="queue-watcher").close()
    broker.stop()
    with caplog.at_level(logging.WARNING):
        sink = create(f"mqtt://127.0.0.1:{broker.port}/q", config(queue_size=10, queue_policy=policy))
    sinks.append(sink)
    assert "cannot reach the broker" in caplog.text
    for seq in range(25):
        sink.publish_result(result(seq))
    assert sink.counters()["dropped"] == 15 and sink.counters()["queued"] == 10
    assert sink.counters()["connected"] == 0
    broker.start()
    try:
        assert settled(sink)["sent"] == 10
        sub = subscribers(broker.port, "q/+/result", client_id="queue-watcher")
        assert sub.wait_for(lambda: len(sub.payloads()) == 10)
        assert [p["seq"] for p in sub.payloads()] == list(kept)
    finally:
        sinks.remove(sink)
        sink.close()
        broker.stop()


def test_bad_password_is_a_clear_error_without_retries(
    mosquitto: Any, tmp_path: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker: Broker = mosquitto(users={"cam": "s3cret-right"})
    wrong = tmp_path / "mqtt_password"
    wrong.write_text("s3cret-wrong\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with caplog.at_level(logging.DEBUG), pytest.raises(SinkError) as err:
        create(f"mqtt://cam@127.0.0.1:{broker.port}/a", config(password_file=str(wrong)))
    message = str(err.value)
    assert message.startswith(f"mqtt://127.0.0.1:{broker.port}: the broker refused the connection")
    # mosquitto says "Not authorized" (3.1.1 code 5) for a wrong password; other brokers say "Bad user name..."
    assert "Not authorized, user 'cam'" in message or "Bad user name or password, user 'cam'" in message
    assert (
        message.endswith("the password (in $CREDENTIALS_DIRECTORY/mqtt_password or mqtt.password_file)")
        or "ACL" in message
    )
    time.sleep(1.5)  # FAST reconnects every 0.05-0.3 s: a retry storm would show in the broker's log by now
    assert broker.connect_attempts() == 1
    assert "s3cret" not in caplog.text and "s3cret" not in message

    # The same user with the right password from systemd's credentials directory connects.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret-right\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    sink = create(f"mqtt://cam@127.0.0.1:{broker.port}/a", config())
    try:
        assert sink.counters()["connected"] == 1
    finally:
        sink.close()


def test_anonymous_client_is_refused_as_not_authorised(mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    broker: Broker = mosquitto(users={"cam": "pw"})
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(
        SinkError,
        match=r"refused the connection \(Not authorized, anonymous\); the broker wants a user: mqtt://USER@host",
    ):
        create(f"mqtt://127.0.0.1:{broker.port}/a", config())


@PAHO_TLS_LEAK
def test_tls_with_the_ca_connects_and_without_it_fails_clearly(
    mosquitto: Any, tmp_path: Path, sinks: list[MqttSink], subscribers: Any
) -> None:
    ca, cert, key = make_certificates(tmp_path / "pki")
    broker: Broker = mosquitto(tls=(ca, cert, key))
    with pytest.raises(SinkError) as err:
        create(f"mqtts://127.0.0.1:{broker.port}/tls", config())
    message = str(err.value)
    assert message.startswith(f"mqtts://127.0.0.1:{broker.port}: TLS: the broker's certificate is not trusted (")
    assert message.endswith("; set mqtt.ca_file to the CA that signed the broker's certificate")
    assert broker.connect_attempts() == 0  # never got as far as MQTT

    sink = create(f"mqtts://localhost:{broker.port}/tls", config(ca_file=str(ca)))
    sinks.append(sink)
    sink.publish_result(result(7))
    assert settled(sink)["sent"] == 1 and sink.counters()["connected"] == 1


@PAHO_TLS_LEAK
def test_tls_to_a_plain_text_server_says_so(tmp_path: Path) -> None:
    ca, _, _ = make_certificates(tmp_path / "pki")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_in_clear_text() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_in_clear_text, daemon=True)
    thread.start()
    try:
        with pytest.raises(SinkError, match=rf"TLS handshake failed \(WRONG_VERSION_NUMBER\); is port {port} a TLS"):
            create(f"mqtts://127.0.0.1:{port}/x", config(ca_file=str(ca)))
    finally:
        thread.join(5)
        server.close()


PUBLISHER = """
import sys, time
from edgekit.config import load_config
from edgekit.device.sinks.mqtt import create
from edgekit.plan import mqtt_spec
port, queue_dir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
overrides = {"mqtt.connect_timeout": 1.0, "mqtt.reconnect_min": 0.05, "mqtt.reconnect_max": 0.3,
             "run.camera": "porch"}
if queue_dir:
    overrides["mqtt.queue_dir"] = queue_dir
sink = create(mqtt_spec(f"mqtt://127.0.0.1:{port}/w", load_config(None, overrides)))
for seq in range(count):
    sink.publish_result({"type": "result", "seq": seq, "camera": "porch"})
while sink.counters()["queued"] > (count if queue_dir else 0):
    time.sleep(0.01)
print("ready", sink.counters()["connected"], flush=True)
time.sleep(60)
"""


def publisher(port: int, queue_dir: str = "", count: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(port), queue_dir, str(count)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line.startswith("ready"):
        proc.kill()
        proc.wait(10)
        pytest.fail(f"the publisher subprocess did not start: {line!r}")
    return proc


def test_sigkill_leaves_offline_retained_by_the_last_will(mosquitto: Any) -> None:
    broker: Broker = mosquitto()
    proc = publisher(broker.port)
    try:
        assert retained_becomes(broker.port, "w/status", b"online")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert retained_becomes(broker.port, "w/status", b"offline")


def test_spool_survives_a_killed_process(tmp_path: Path, sinks: list[MqttSink], subscribers: Any) -> None:
    broker = Broker(tmp_path / "later")  # down while the first process runs
    spool = tmp_path / "spool"
    proc = publisher(broker.port, str(spool), count=50)  # queues 50 records on disk, never connects
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    broker.start()
    try:
        sub = subscribers(broker.port, "w/+/result")
        cfg = load_config(None, {**FAST, "mqtt.queue_dir": str(spool), "run.camera": "porch"})
        sink = create(f"mqtt://127.0.0.1:{broker.port}/w", cfg)
        sinks.append(sink)
        assert sub.wait_for(lambda: len(sub.payloads()) >= 50)
        assert [p["seq"] for p in sub.payloads()] == list(range(50))
        assert settled(sink)["sent"] == 50
    finally:
        for sink in sinks:
            sink.close()
        sinks.clear()
        broker.stop()


def test_home_assistant_discovery_is_retained(mosquitto: Any, sinks: list[MqttSink]) -> None:
    broker = mosquitto()
    cfg = load_config(None, {**FAST, "mqtt.homeassistant": True, "mqtt.device_id": "pi3"})
    sink = create(f"mqtt://127.0.0.1:{broker.port}", cfg)
    sinks.append(sink)
    sink.publish_result({**result(0, camera="yard"), "task": "detect", "detections": []})
    settled(sink)
    base = "homeassistant/sensor/edgekit_pi3"
    label = retained(broker.port, f"{base}/yard_label/config")
    assert label is not None
    config_ = json.loads(label)
    assert config_["state_topic"] == "edgekit/pi3/yard/result"  # default prefix edgekit/<device_id>
    assert config_["availability_topic"] == "edgekit/pi3/status"
    assert config_["unique_id"] == "edgekit_pi3_yard_label"
    assert config_["device"]["identifiers"] == ["edgekit_pi3"]
    count = retained(broker.port, f"{base}/yard_count/config")
    assert count is not None and json.loads(count)["value_template"] == "{{ value_json.detections | length }}"
    assert retained(broker.port, f"{base}/yard_score/config") is not None


def test_two_clients_with_one_client_id_back_off_instead_of_fighting(mosquitto: Any, caplog: Any) -> None:
    broker: Broker = mosquitto()
    cfg = load_config(None, {"mqtt.client_id": "cam-1", "mqtt.reconnect_min": 0.05, "mqtt.reconnect_max": 2.0})
    with caplog.at_level(logging.WARNING):
        first = create(f"mqtt://127.0.0.1:{broker.port}/a", cfg)
        second = create(f"mqtt://127.0.0.1:{broker.port}/b", cfg)  # the broker drops `first` for it, and so on
        time.sleep(3.0)
        first.close()
        second.close()
    assert "is another client using client id 'cam-1'?" in caplog.text
    # Without backoff each would reconnect every 0.05-0.075 s: about 80 connections in 3 s.
    assert broker.connect_attempts() < 25


def test_qos0_results_arrive(mosquitto: Any, sinks: list[MqttSink], subscribers: Any) -> None:
    broker = mosquitto()
    sub = subscribers(broker.port, "z/+/result")
    sink = create(f"mqtt://127.0.0.1:{broker.port}/z", config(qos=0))
    sinks.append(sink)
    for seq in range(50):
        sink.publish_result(result(seq))
    assert sub.wait_for(lambda: len(sub.payloads()) == 50)
    assert [p["seq"] for p in sub.payloads()] == list(range(50))
    assert settled(sink)["sent"] == 50


def test_a_refusal_after_a_reconnect_stops_the_run(
    mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker: Broker = mosquitto(users={"cam": "old-password"})
    (tmp_path / "mqtt_password").write_text("old-password\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    sink = create(f"mqtt://cam@127.0.0.1:{broker.port}/p", config())
    try:
        sink.publish_result(result(0))
        assert settled(sink)["sent"] == 1
        # The broker's administrator changes the password and restarts it: the sink's reconnect is refused.
        subprocess.run(["mosquitto_passwd", "-b", str(broker.folder / "passwd"), "cam", "new"], check=True)
        broker.stop()
        broker.start()
        with pytest.raises(SinkError, match=r"the broker refused the connection \(Not authorized, user 'cam'\)"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                sink.publish_result(result(1))
                time.sleep(0.05)
        attempts = broker.connect_attempts()
        time.sleep(1.0)
        assert broker.connect_attempts() == attempts  # no retrying after the refusal
    finally:
        sink.close()
