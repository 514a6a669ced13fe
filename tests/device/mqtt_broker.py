"""A real mosquitto on a free loopback port, and a paho subscriber, for the MQTT sink's tests and benchmark."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process, restartable on the same port with the same persistence folder.

    Args:
        folder: where its config, log, persistence and certificates live.
        persistence: keep sessions, queued and retained messages on disk (saved every second and on SIGTERM).
        users: name -> password; when given, anonymous clients are refused.
        tls: (ca, cert, key) PEM paths for a TLS listener.
    """

    def __init__(
        self,
        folder: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            # mosquitto started as root drops to user "mosquitto", who could not write this folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"log_dest file {self.log}",
            "log_type all",
            "max_queued_messages 0",
        ]
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {folder}/",
                "autosave_interval 1",
            ]
        if users:
            passwd = folder / "passwd"
            passwd.write_text("")
            passwd.chmod(0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye, as on a power cut or OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def save_sessions(self, *subscribers: Subscriber) -> None:
        """Restart gracefully, which makes mosquitto write its persistence now, and wait for the subscribers.

        Its periodic autosave may not have run yet, and a SIGKILL before it would lose their sessions.
        """
        for sub in subscribers:
            sub.subscribed.clear()
        self.stop()
        self.start()
        for sub in subscribers:
            if not sub.subscribed.wait(10):
                raise RuntimeError("the subscriber did not come back after the broker restarted")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def connect_attempts(self) -> int:
        """How many MQTT CONNECTs the broker has answered so far (accepted or refused)."""
        return self.log_text().count("Sending CONNACK")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Any]:
    """A factory: `mosquitto(persistence=True, users={...}, tls=(ca, cert, key))` -> a started Broker."""
    brokers: list[Broker] = []

    def start(**options: Any) -> Broker:
        broker = Broker(tmp_path / f"broker{len(brokers)}", **options)
        brokers.append(broker)
        return broker.start()

    yield start
    for broker in brokers:
        broker.stop()


class Subscriber:
    """A paho client that records every message under a topic filter, with a persistent QoS-1 session."""

    def __init__(self, port: int, topic: str, *, client_id: str = "edgekit-test-subscriber", **tls: Any) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self.topic = topic

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(client: Any, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
            self.subscribed.set()

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with self.lock:
                self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")

    def payloads(self, suffix: str = "") -> list[Any]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def raw(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return bool(predicate())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on `topic`, read by a fresh clean-session client (None if none came in `timeout`)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"edgekit-test-peek-{time.monotonic_ns()}")

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        c.subscribe(topic, qos=1)

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if message.retain:
            got.append(bytes(message.payload))
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return got[-1] if got else None


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it, made with the openssl CLI.

    Returns:
        (ca.pem, server.pem, server.key)
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=edgekit test CA",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return ca, cert, key


def retained_becomes(port: int, topic: str, value: bytes, timeout: float = 5.0) -> bool:
    """Wait until the retained message on ``topic`` is ``value`` (a will or a new status takes a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if retained(port, topic, timeout=1) == value:
            return True
        time.sleep(0.05)
    return False
