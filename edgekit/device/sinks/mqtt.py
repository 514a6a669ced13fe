"""MQTT sink: results and stats to a broker (paho-mqtt 2), queued while it is away, nothing lost across restarts.

Three threads meet here. The frame loop calls `publish_result`/`publish_stats`, which only serialise and
enqueue. A sender thread hands queued messages to paho, at most `max_inflight` unacknowledged at a time. Paho's
network thread (`loop_start`) connects, reconnects with capped exponential backoff and calls back on CONNACK,
PUBACK and disconnects. A message leaves the queue only when the broker has acknowledged it: paho re-sends the
unacknowledged ones after a reconnect (with the DUP flag), and the sender waits for those before sending newer
ones, so order survives a broker restart and delivery is at least once.

Topics: `<prefix>/<camera>/result`, `<prefix>/<camera>/events` (event records), `<prefix>/<camera>/stats`,
`<prefix>/status` (`online`/`offline`, retained, `offline` also the last will). A refused CONNACK (bad credentials,
not authorised) or an untrusted TLS certificate stops the client instead of retrying, and the next publish raises
`SinkError`.
"""

from __future__ import annotations

import json
import logging
import random
import re
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit.config import MqttConfig
from edgekit.device.sinks import jsonl
from edgekit.device.sinks.mqtt_queue import MemoryQueue, Message, MessageQueue, SpoolQueue
from edgekit.errors import MissingExtra, SinkError
from edgekit.plan import MQTT_PASSWORD_CREDENTIAL, BrokerAddress, MqttSpec, topic_level

if TYPE_CHECKING:
    import paho.mqtt.client as paho

logger = logging.getLogger(__name__)

_FLAP_SECONDS = 10.0  # a connection closed sooner than this after CONNACK counts as a flap
_FLAPS_TO_WARN = 3

# CONNACK refusals that retrying cannot fix: the broker rejected who we are, not how busy it is. Others
# ("Server unavailable", "Server busy", "Quota exceeded", ...) are retried with backoff.
_FATAL_CONNACK = {
    "Unsupported protocol version": 'set mqtt.protocol = "3.1.1" for a broker without MQTT 5',
    "Client identifier not valid": "set mqtt.client_id to a shorter plain ASCII name",
    "Bad user name or password": "check the user in the sink URL and the password",
    # mosquitto answers a wrong password with this too (MQTT 3.1.1 code 5).
    "Not authorized": "check the user in the sink URL, the password, and the broker's ACL for this client",
    "Banned": "the broker banned this client; ask its administrator",
    "Bad authentication method": "the broker wants another authentication method",
}


class _DebugOnly(logging.Filter):
    """Paho logs each failed reconnect attempt as an error; the sink reports outages once, in plain words."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _paho_logger() -> logging.Logger:
    paho_logger = logging.getLogger(f"{__name__}.paho")
    if not paho_logger.filters:
        paho_logger.addFilter(_DebugOnly())
    return paho_logger


def create(spec: MqttSpec) -> MqttSink:
    """Build an MQTT sink from its plan spec, connect, and wait briefly for the broker's answer.

    Args:
        spec: the sink's address, ``[mqtt]`` options, password and TLS context (`edgekit.plan.mqtt_spec`).

    Returns:
        A started sink. If the broker is unreachable it is still returned: records queue until it answers.

    Raises:
        SinkError: the broker refused us (credentials, ACL, TLS trust). MissingExtra: paho-mqtt is not installed.
    """
    sink = MqttSink(
        spec.address, spec.options, device_id=spec.device_id, camera=spec.camera, password=spec.password, tls=spec.tls
    )
    sink.start()
    return sink


class MqttSink:
    """Publishes records to an MQTT broker; see the module docstring for the threads and guarantees."""

    def __init__(
        self,
        address: BrokerAddress,
        mqtt: MqttConfig,
        *,
        device_id: str,
        camera: str = "",
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = str(address)
        self._tls = tls
        self.address = address
        self._cfg = mqtt
        self._device_id = device_id
        self._camera = topic_level(camera) if camera else ""
        self._password = password
        self._qos = mqtt.qos
        self._status_topic = f"{address.prefix}/status"
        self.client_id = mqtt.client_id or f"edgekit-{device_id}" + (f"-{self._camera}" if self._camera else "")
        # One lock, two conditions: close() waits on _cond for the queue to drain; the sender waits on _wake and
        # is woken only when it can send, not on every acknowledgement (a wake-up costs more than a publish).
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._wake = threading.Condition(lock)
        self._queue: MessageQueue = self._open_queue()
        # Sent to paho, not yet acknowledged: mid -> the queued message, or None for status/discovery messages.
        self._inflight: dict[int, Message | None] = {}
        # PUBACKs that overtook the sender's bookkeeping of their publish() call: mid -> failed?
        self._early_acks: dict[int, bool] = {}
        self._connected = False
        self._resumed = True  # False after a reconnect until paho's re-sent messages are acknowledged
        self._stopping = False
        self._failure: SinkError | None = None
        self._first_answer = threading.Event()
        self._cameras: dict[str, str] = {}  # camera topic level -> task, for Home Assistant discovery
        # (camera, zone, label) -> ids of the events of objects in that zone now: Home Assistant occupancy/count.
        self._occupancy: dict[tuple[str, str, str], set[str]] = {}
        self._down_since: float | None = None
        self._failed_attempts = 0
        self._connected_at = 0.0
        self._flaps = 0  # connections in a row that the broker closed soon after accepting them
        self._first_delay = mqtt.reconnect_min
        self._warned_full = False
        self._count = {"sent": 0, "dropped": 0, "rejected": 0, "reconnects": 0, "resent": 0, "connections": 0}
        restored = getattr(self._queue, "restored", 0)
        self._count["dropped"] += getattr(self._queue, "dropped_at_start", 0)
        if restored:
            logger.info("%s: %d queued records from the previous run will be sent first", self.name, restored)
        self._client: paho.Client | None = None
        self._sender = threading.Thread(target=self._send_loop, name="edgekit-mqtt-sender", daemon=True)

    # --- the Sink protocol ----------------------------------------------------------------------------------

    def publish_result(self, record: Mapping[str, Any]) -> None:
        """Queue a result record for `<prefix>/<camera>/result` (an event record: `<prefix>/<camera>/events`).

        Raises:
            SinkError: the broker refused this client for good (credentials, ACL, TLS trust).
        """
        camera = self._camera_of(record)
        if record.get("type") == "event":
            self._enqueue(f"{self.address.prefix}/{camera}/events", record, retain=False)
            if self._cfg.homeassistant:
                self._occupy(camera, record)
            return
        if self._cfg.homeassistant and camera not in self._cameras:
            self._discover(camera, str(record.get("task", "classify")))
        self._enqueue(f"{self.address.prefix}/{camera}/result", record, retain=False)

    def publish_snapshot(self, camera: str, label: str, jpeg: bytes) -> None:
        """Queue an event's snapshot (JPEG) for `<prefix>/<camera>/<label>/snapshot`, retained."""
        topic = f"{self.address.prefix}/{topic_level(camera) if camera else self._camera}/{topic_level(label)}/snapshot"
        self._enqueue_payload(topic, jpeg, retain=True)

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        """Queue a stats record for `<prefix>/<camera>/stats` (retained when `mqtt.retain`)."""
        self._enqueue(f"{self.address.prefix}/{self._camera_of(record)}/stats", record, retain=self._cfg.retain)

    def counters(self) -> Mapping[str, int | float]:
        """Delivery counters for the stats record.

        Returns:
            connected (0/1); queued (waiting or unacknowledged); inflight; sent (acknowledged by the broker);
            dropped (by the queue policy); rejected (a failure PUBACK, MQTT 5); reconnects; resent (in flight
            when a connection dropped, sent again).
        """
        with self._cond:
            inflight = sum(1 for m in self._inflight.values() if m is not None)
            return {
                "connected": int(self._connected),
                "queued": self._queue.pending + inflight,
                "inflight": inflight,
                "sent": self._count["sent"],
                "dropped": self._count["dropped"],
                "rejected": self._count["rejected"],
                "reconnects": self._count["reconnects"],
                "resent": self._count["resent"],
            }

    def close(self) -> None:
        """Deliver what is queued (up to `drain_timeout`), publish `offline`, disconnect.

        With `queue_dir`, whatever could not be delivered stays on disk for the next start.
        """
        client = self._client
        if client is None:
            self._queue.close()
            return
        deadline = time.monotonic() + self._cfg.drain_timeout
        with self._cond:
            while self._connected and (self._queue.pending or self._inflight) and self._failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._stopping = True
            self._changed()
        if self._sender.is_alive():
            self._sender.join()
        if self._connected:
            # A clean DISCONNECT discards the will, so say `offline` ourselves.
            mid = self._publish_control(self._status_topic, b"offline", retain=True)
            with self._cond:
                self._cond.wait_for(lambda: mid not in self._inflight or not self._connected, timeout=2.0)
        client.disconnect()
        client.loop_stop()
        self._client = None
        with self._cond:
            undelivered = self._queue.pending + sum(1 for m in self._inflight.values() if m is not None)
        if undelivered and isinstance(self._queue, SpoolQueue):
            logger.warning(
                "%s: %d records not delivered; kept in %s for the next start", self.name, undelivered, self._queue.path
            )
        elif undelivered:
            logger.warning(
                "%s: %d records not delivered (set mqtt.queue_dir to keep them across restarts)", self.name, undelivered
            )
        self._queue.close()

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- start-up -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start paho's network thread and the sender; wait up to `connect_timeout` for the broker's answer.

        Raises:
            SinkError: the broker refused the connection or its TLS certificate is not trusted.
        """
        try:
            self._start()
        except BaseException:
            self._stop_quietly()  # release the queue (and its lock file) and any thread already started
            raise

    def _start(self) -> None:
        try:
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError:
            raise MissingExtra("paho-mqtt (for the MQTT sink)", "device") from None
        cfg = self._cfg
        v5 = cfg.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.enable_logger(_paho_logger())
        # The sender bounds what is in flight; paho's own limit stays off so it never holds messages back in
        # its "queued" state, which its reconnect path re-sends less carefully.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        # Jitter: a fleet of Pis whose broker restarts should not all come back in the same second.
        first_delay = cfg.reconnect_min * random.uniform(1.0, 1.5)
        self._first_delay = first_delay
        # Paho annotates the delays as int but only compares, doubles and sleeps on them: fractions work.
        client.reconnect_delay_set(first_delay, cfg.reconnect_max)  # type: ignore[arg-type]
        client.will_set(self._status_topic, b"offline", qos=self._qos, retain=True)
        if self.address.username:
            client.username_pw_set(self.address.username, self._password)
        if self.address.tls:
            client.tls_set_context(self._tls or ssl.create_default_context())
            if cfg.tls_insecure:
                client.tls_insecure_set(True)
        if v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            self._properties: Any = Properties(PacketTypes.PUBLISH)
            self._properties.PayloadFormatIndicator = 1
            self._properties.ContentType = "application/json"
        else:
            self._properties = None
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        logger.info(
            "%s: connecting as client id %r%s, topics under %s/",
            self.name,
            self.client_id,
            f", user {self.address.username!r}" if self.address.username else "",
            self.address.prefix,
        )
        client.connect_async(self.address.host, self.address.port, keepalive=cfg.keepalive)
        client.loop_start()
        self._sender.start()
        answered = self._first_answer.wait(cfg.connect_timeout)
        if self._failure is not None:
            raise self._failure
        if not answered:
            logger.warning(
                "%s: no answer within %.0f s; records are queued until the broker answers",
                self.name,
                cfg.connect_timeout,
            )

    def _open_queue(self) -> MessageQueue:
        cfg = self._cfg
        if not cfg.queue_dir:
            return MemoryQueue(cfg.queue_size, cfg.queue_policy)
        name = topic_level(f"mqtt-{self.address.host}-{self.address.port}-{self.client_id}")
        return SpoolQueue(Path(cfg.queue_dir), name, cfg.queue_size, cfg.queue_policy)

    def _stop_quietly(self) -> None:
        with self._cond:
            self._stopping = True
            self._changed()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._sender.is_alive():
            self._sender.join()
        self._queue.close()

    # --- the frame loop's side --------------------------------------------------------------------------------

    def _camera_of(self, record: Mapping[str, Any]) -> str:
        camera = record.get("camera")
        return topic_level(str(camera)) if camera else (self._camera or "default")

    def _occupy(self, camera: str, event: Mapping[str, Any]) -> None:
        """Per zone and label, how many tracked objects are inside: retained `<prefix>/<camera>/<zone>/<label>`.

        Driven by event records (their `current_zones`), so a count changes only when an object's zone does;
        an `end` record has no current zone, so counts fall back to 0.
        """
        label, event_id = topic_level(str(event["label"])), str(event["id"])
        inside = set(event.get("current_zones") or ())
        for zone in {*inside, *(event.get("entered_zones") or ())}:
            key = (camera, topic_level(str(zone)), label)
            members = self._occupancy.get(key)
            created = members is None
            if members is None:
                members = self._occupancy[key] = set()
                if self._connected:
                    self._publish_zone_discovery(*key)
            before = len(members)
            if zone in inside:
                members.add(event_id)
            else:
                members.discard(event_id)
            if created or len(members) != before:
                topic = f"{self.address.prefix}/{camera}/{key[1]}/{label}"
                self._enqueue_payload(topic, b"%d" % len(members), retain=True)

    def _enqueue(self, topic: str, record: Mapping[str, Any], retain: bool) -> None:
        self._enqueue_payload(topic, jsonl.dumps(record), retain)

    def _enqueue_payload(self, topic: str, payload: bytes, retain: bool) -> None:
        if self._failure is not None:
            raise self._failure
        with self._cond:
            if self._stopping:
                raise SinkError(f"{self.name}: the sink is closed")
            dropped = self._queue.put(topic, payload, retain)
            if dropped:
                self._count["dropped"] += dropped
                if not self._warned_full:
                    self._warned_full = True
                    logger.warning(
                        "%s: queue full (%d records), dropping the %s",
                        self.name,
                        self._cfg.queue_size,
                        "oldest" if self._cfg.queue_policy == "drop_oldest" else "newest",
                    )
            # The frame loop stops here: calling paho from this thread would wake its network thread at once,
            # and the frame loop would then wait for the GIL while that thread works (measured: 2x the time).
            self._changed()

    # --- the sender thread ----------------------------------------------------------------------------------

    def _ready(self) -> bool:
        window_open = self._qos == 0 or len(self._inflight) < self._cfg.max_inflight
        return self._connected and self._resumed and window_open and self._queue.pending > 0

    def _changed(self) -> None:
        """State changed (lock held): wake close() if it waits, and the sender if it can now send."""
        self._cond.notify_all()
        if self._stopping or self._ready():
            self._wake.notify()

    def _send_loop(self) -> None:
        """Hand queued messages to paho, oldest first, while connected and the in-flight window has room."""
        while True:
            with self._cond:
                while not self._stopping and not self._ready():
                    self._wake.wait()
                if self._stopping:
                    return
                message = self._queue.take()
            if message is None:
                continue
            client = self._client
            assert client is not None
            try:
                info = client.publish(message.topic, message.payload, self._qos, message.retain, self._properties)
            except Exception:  # a bug, not the network: never let it stop the sender and stall the queue
                logger.exception("%s: cannot publish to %s; record dropped", self.name, message.topic)
                with self._cond:
                    self._queue.done(message)
                    self._count["dropped"] += 1
                continue
            self._track(info.mid, message)

    def _publish_control(self, topic: str, payload: bytes, retain: bool) -> int:
        """Publish a status or discovery message outside the queue; returns its mid."""
        client = self._client
        assert client is not None
        info = client.publish(topic, payload, self._qos, retain)
        self._track(info.mid, None)
        return info.mid

    def _track(self, mid: int, message: Message | None) -> None:
        with self._cond:
            if self._qos == 0:
                # QoS 0 has no acknowledgement: handed to the socket is as delivered as it gets.
                if message is not None:
                    self._queue.done(message)
                    self._count["sent"] += 1
                return
            failed = self._early_acks.pop(mid, None)
            if failed is None:
                self._inflight[mid] = message
            else:
                self._settle(message, failed)

    def _settle(self, message: Message | None, failed: bool) -> None:
        """The broker acknowledged a message (called with the lock held)."""
        if message is not None:
            self._queue.done(message)
            self._count["rejected" if failed else "sent"] += 1
        if not self._inflight:
            self._resumed = True
        self._changed()

    # --- paho's network thread ------------------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            name = reason_code.getName()
            hint = _FATAL_CONNACK.get(name)
            if hint is None:
                logger.warning("%s: the broker refused the connection (%s); retrying", self.name, name)
                self._first_answer.set()
                return
            if self.address.username:
                who = f"user {self.address.username!r}"
                if "password" in hint:
                    hint += f" (in $CREDENTIALS_DIRECTORY/{MQTT_PASSWORD_CREDENTIAL} or mqtt.password_file)"
            else:
                who = "anonymous"
                if name in ("Not authorized", "Bad user name or password"):
                    hint = f"the broker wants a user: {self.address.scheme}://USER@host and a password file"
            self._fail(SinkError(f"{self.name}: the broker refused the connection ({name}, {who}); {hint}"))
            return
        with self._cond:
            self._connected = True
            self._count["connections"] += 1
            reconnect = self._count["connections"] > 1
            if reconnect:
                self._count["reconnects"] += 1
            self._resumed = not self._inflight
            queued = self._queue.pending + len(self._inflight)
            self._changed()
        self._connected_at = time.monotonic()
        if reconnect:
            down = self._connected_at - self._down_since if self._down_since is not None else 0.0
            log = logger.debug if self._flaps >= _FLAPS_TO_WARN else logger.warning
            log("%s: reconnected after %.1f s; sending %d queued records", self.name, down, queued)
        else:
            logger.info("%s: connected", self.name)
        self._down_since = None
        self._failed_attempts = 0
        self._publish_control(self._status_topic, b"online", retain=True)
        if self._cfg.homeassistant:
            client.subscribe(f"{self._cfg.discovery_prefix.strip('/')}/status", qos=1)
            for camera, task in list(self._cameras.items()):
                self._publish_discovery(camera, task)
            for key in list(self._occupancy):
                self._publish_zone_discovery(*key)
        self._first_answer.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # Paho calls this from inside its `except OSError` without passing the exception; it is still the one
        # being handled, and it says whether the problem is the network (retry) or TLS trust (stop).
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLCertVerificationError):
            hint = (
                "connect by a host name the certificate lists"
                if "hostname" in str(error.verify_message).lower()
                else "set mqtt.ca_file to the CA that signed the broker's certificate"
            )
            self._fail(
                SinkError(f"{self.name}: TLS: the broker's certificate is not trusted ({error.verify_message}); {hint}")
            )
            return
        if isinstance(error, ssl.SSLError) and error.reason == "WRONG_VERSION_NUMBER":
            # The server answered in clear text: a plain MQTT (or HTTP) port, which retrying will not change.
            self._fail(
                SinkError(
                    f"{self.name}: TLS handshake failed ({error.reason}); is port {self.address.port} a TLS listener?"
                )
            )
            return
        self._failed_attempts += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
        if self._failed_attempts == 1:
            logger.warning(
                "%s: cannot reach the broker (%s); retrying with backoff (up to %g s), records queue",
                self.name,
                error,
                self._cfg.reconnect_max,
            )
        else:
            logger.debug("%s: attempt %d failed (%s)", self.name, self._failed_attempts, error)
        self._first_answer.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            was_connected = self._connected
            self._connected = False
            if was_connected:
                self._count["resent"] += sum(1 for m in self._inflight.values() if m is not None)
            self._changed()
        if not was_connected or self._stopping:
            return
        self._down_since = time.monotonic()
        if getattr(reason_code, "getName", lambda: "")() == "Session taken over":
            self._fail(
                SinkError(
                    f"{self.name}: another client connected with client id {self.client_id!r}; "
                    "give each edgekit process its own mqtt.client_id"
                )
            )
            return
        # Paho restarts its backoff at every accepted CONNACK, so a broker that closes each connection soon after
        # accepting it (another client with our id, a kicking ACL plugin) would see us back every reconnect_min.
        self._flaps = self._flaps + 1 if self._down_since - self._connected_at < _FLAP_SECONDS else 0
        delay = min(self._first_delay * 2**self._flaps, self._cfg.reconnect_max)
        client.reconnect_delay_set(delay, self._cfg.reconnect_max)
        if self._flaps == _FLAPS_TO_WARN:
            logger.warning(
                "%s: the broker keeps closing the connection soon after accepting it; is another client using "
                "client id %r? (give each edgekit process its own mqtt.client_id); backing off up to %g s",
                self.name, self.client_id, self._cfg.reconnect_max,
            )  # fmt: skip
        if self._flaps >= _FLAPS_TO_WARN:
            return
        why = "" if str(reason_code) == "Unspecified error" else f" ({reason_code})"
        logger.warning("%s: connection lost%s; queueing and reconnecting", self.name, why)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if self._qos == 0:
            return
        failed = bool(reason_code.is_failure)
        if failed:
            logger.warning("%s: the broker rejected a message (%s)", self.name, reason_code)
        with self._cond:
            if mid in self._inflight:
                self._settle(self._inflight.pop(mid), failed)
            else:
                self._early_acks[mid] = failed

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Home Assistant announces `online` on <discovery_prefix>/status when it starts: discovery goes again.
        if message.payload == b"online":
            for camera, task in list(self._cameras.items()):
                self._publish_discovery(camera, task)
            for key in list(self._occupancy):
                self._publish_zone_discovery(*key)

    def _fail(self, failure: SinkError) -> None:
        # Not logged as an error here: it is raised from create() or the next publish, and the CLI prints it.
        logger.debug("%s", failure.message)
        with self._cond:
            self._failure = failure
            self._changed()
        if self._client is not None:
            self._client.disconnect()  # ends paho's reconnect loop: retrying cannot fix this
        self._first_answer.set()

    # --- Home Assistant discovery ---------------------------------------------------------------------------

    def _discover(self, camera: str, task: str) -> None:
        self._cameras[camera] = task
        if self._connected:
            self._publish_discovery(camera, task)

    def _publish_discovery(self, camera: str, task: str) -> None:
        for topic, config in discovery_configs(
            self._cfg.discovery_prefix, self.address.prefix, self._device_id, camera, task
        ):
            self._publish_control(topic, json.dumps(config).encode("utf-8"), retain=True)

    def _publish_zone_discovery(self, camera: str, zone: str, label: str) -> None:
        for topic, config in zone_discovery_configs(
            self._cfg.discovery_prefix, self.address.prefix, self._device_id, camera, zone, label
        ):
            self._publish_control(topic, json.dumps(config).encode("utf-8"), retain=True)


def zone_discovery_configs(
    discovery_prefix: str, prefix: str, device_id: str, camera: str, zone: str, label: str
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery for one zone and label of a camera: occupancy (binary_sensor) and count (sensor).

    Both read the retained count at `<prefix>/<camera>/<zone>/<label>` that the sink keeps from event records.

    Returns:
        (config topic, config payload) pairs, to publish retained.
    """
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"edgekit_{device_id}")
    obj = re.sub(r"[^A-Za-z0-9_-]", "_", f"{camera}_{zone}_{label}")
    common = _discovery_common(prefix, device_id)
    state = f"{prefix}/{camera}/{zone}/{label}"
    occupancy = {
        "name": f"{camera} {zone} {label} occupancy",
        "device_class": "occupancy",
        "value_template": "{{ 'ON' if value | int > 0 else 'OFF' }}",
    }
    count = {"name": f"{camera} {zone} {label} count", "icon": "mdi:counter", "state_class": "measurement"}
    base = discovery_prefix.strip("/")
    return [
        (
            f"{base}/binary_sensor/{node}/{obj}_occupancy/config",
            {**occupancy, **common, "state_topic": state, "unique_id": f"{node}_{obj}_occupancy"},
        ),
        (
            f"{base}/sensor/{node}/{obj}_count/config",
            {**count, **common, "state_topic": state, "unique_id": f"{node}_{obj}_count"},
        ),
    ]


def _discovery_common(prefix: str, device_id: str) -> dict[str, Any]:
    """What every discovery config of this device says: availability, the device, the origin."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"edgekit_{device_id}")
    return {
        "availability_topic": f"{prefix}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [node],
            "name": f"edgekit {device_id}",
            "manufacturer": "edgekit",
            "model": "edgekit run",
            "sw_version": __version__,
        },
        "origin": {"name": "edgekit", "sw_version": __version__},
    }


def discovery_configs(
    discovery_prefix: str, prefix: str, device_id: str, camera: str, task: str
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery configs for one camera: top label, top score, and detection count.

    Args:
        discovery_prefix: Home Assistant's discovery prefix (`homeassistant`).
        prefix: the sink's topic prefix.
        device_id: this device's name; one Home Assistant device per edgekit device.
        camera: the camera's topic level.
        task: "classify" or "detect" (only detectors get a count sensor).

    Returns:
        (config topic, config payload) pairs, to publish retained.
    """
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"edgekit_{device_id}")
    obj = re.sub(r"[^A-Za-z0-9_-]", "_", camera)
    items = "detections" if task == "detect" else "classes"
    common = {"state_topic": f"{prefix}/{camera}/result", **_discovery_common(prefix, device_id)}
    sensors: list[tuple[str, dict[str, Any]]] = [
        (
            "label",
            {
                "name": f"{camera} label",
                "icon": "mdi:eye",
                "value_template": f"{{{{ value_json.{items}[0].label if value_json.{items} else 'none' }}}}",
            },
        ),
        (
            "score",
            {
                "name": f"{camera} score",
                "icon": "mdi:percent",
                "state_class": "measurement",
                "value_template": f"{{{{ value_json.{items}[0].score | round(3) if value_json.{items} else 0 }}}}",
            },
        ),
    ]
    if task == "detect":
        sensors.append(
            (
                "count",
                {
                    "name": f"{camera} detections",
                    "icon": "mdi:counter",
                    "state_class": "measurement",
                    "value_template": "{{ value_json.detections | length }}",
                },
            )
        )
    configs = []
    for kind, sensor in sensors:
        unique = f"{node}_{obj}_{kind}"
        payload = {**sensor, **common, "unique_id": unique, "object_id": unique}
        configs.append((f"{discovery_prefix.strip('/')}/sensor/{node}/{obj}_{kind}/config", payload))
    return configs
