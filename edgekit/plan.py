"""The run plan: a loaded `Config` turned once into typed specs, every rule that joins keys or parses a string.

`edgekit run`, ``--validate-config``, ``service install`` and ``doctor`` all build the plan with `build_plan`,
so a config the validation accepts is one the run accepts. Per-field ranges live beside their fields in
`edgekit.config`; this module holds what a field alone cannot say (spec strings, rules across keys), and is
the only place that parses a device, source or sink string. Errors name the file and the key path once.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from edgekit.config import Config, MqttConfig, load_config, read_secret
from edgekit.errors import ConfigError, EdgekitError, InputError, SourceError

if TYPE_CHECKING:
    import ssl  # imported when an mqtts:// sink needs it: loading libssl costs a Pi about 5 MB

# The one list of picture suffixes (calibration folders and `edgekit run` folders alike); OpenCV reads them all.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MQTT_PASSWORD_CREDENTIAL = "mqtt_password"
HTTP_PASSWORD_CREDENTIAL = "http_password"
MQTT_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MQTT_USAGE = "mqtt://[user@]host[:port]/topic-prefix or mqtts://..."


# --- device ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed device string: ``cpu``, ``edgetpu``, ``edgetpu:usb[:N]``, ``edgetpu:pci[:N]``, ``usb:N``."""

    kind: Literal["cpu", "edgetpu"]
    bus: Literal["usb", "pci"] | None = None
    index: int | None = None

    @property
    def is_edgetpu(self) -> bool:
        return self.kind == "edgetpu"

    def __str__(self) -> str:
        if self.kind == "cpu":
            return "cpu"
        parts = ["edgetpu"]
        if self.bus:
            parts.append(self.bus)
            if self.index is not None:
                parts.append(str(self.index))
        return ":".join(parts)


_DEVICE_RE = re.compile(r"^(?:edgetpu(?::(usb|pci)(?::(\d+))?)?|(usb|pci)(?::(\d+))?)$")


def parse_device(device: str) -> DeviceSpec:
    """Parse a device string.

    Raises:
        InputError: the string does not follow the grammar.
    """
    text = device.strip().lower()
    if text in ("", "cpu"):
        return DeviceSpec("cpu")
    match = _DEVICE_RE.match(text)
    if not match:
        raise InputError(
            f"device {device!r} is not one of cpu, edgetpu, edgetpu:usb[:N], edgetpu:pci[:N] (N counts from 0)"
        )
    bus = match.group(1) or match.group(3)
    index = match.group(2) or match.group(4)
    return DeviceSpec("edgetpu", bus, int(index) if index is not None else None)  # type: ignore[arg-type]


# --- source ------------------------------------------------------------------------------------------------

SourceKind = Literal["picamera2", "v4l2", "stream", "video", "folder"]


@dataclass(frozen=True)
class SourceSpec:
    """Where frames come from.

    ``ordered``: every frame counts, in order (files and folders, unless paced with ``realtime``): throughput
    matters, so the pipeline prepares ahead and may run parallel streams. ``live``: a camera or network stream,
    about its newest frame (and not a path the service must be able to see).
    """

    kind: SourceKind
    target: str  # the spec as given (a path, a URL, "picamera2:1")
    index: int | None = None  # the camera number of picamera2 and V4L2 sources
    realtime: bool = False  # a video file paced at its own fps

    @property
    def live(self) -> bool:
        return self.kind in ("picamera2", "v4l2", "stream")

    @property
    def ordered(self) -> bool:
        return self.kind == "folder" or (self.kind == "video" and not self.realtime)


def _live_source(spec: str) -> SourceSpec | None:
    """A camera or stream spec, told from its text alone (no filesystem), or None for a path."""
    if match := re.fullmatch(r"picamera2(?::(\d+))?", spec):
        return SourceSpec("picamera2", spec, int(match.group(1) or 0))
    if match := re.fullmatch(r"(?:/dev/video)?(\d+)", spec):
        return SourceSpec("v4l2", spec, int(match.group(1)))
    if re.match(r"^(rtsps?|https?|rtmp|udp|tcp)://", spec, re.IGNORECASE):
        return SourceSpec("stream", spec)
    return None


def is_live_source(spec: str) -> bool:
    """Whether a source spec names a camera, a device node or a stream rather than a file or folder.

    Decided from the text (the service checks paths of a config written for another machine).
    """
    return _live_source(spec) is not None or spec.startswith("/dev/")


def parse_source(spec: str, realtime: bool = False) -> SourceSpec:
    """Which kind of source a spec names.

    Raises:
        SourceError: the spec is empty or names a file or folder that does not exist.
    """
    if not spec:
        raise SourceError("no source given; pass --source (a camera, stream, video file or folder)")
    live = _live_source(spec)
    if live is not None:
        return live
    path = Path(spec)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return SourceSpec("folder", spec)
    if path.is_file():
        return SourceSpec("video", spec, realtime=realtime)
    if path.exists():  # a device node or a pipe
        return SourceSpec("v4l2", spec) if spec.startswith("/dev/") else SourceSpec("video", spec, realtime=realtime)
    raise SourceError(
        f"{spec}: no such camera, file or folder (sources: picamera2[:N], /dev/videoN, rtsp://..., "
        "a video file or an image folder)"
    )


# --- sinks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StdoutSpec:
    """JSON lines on standard output (``stdout`` or ``-``)."""

    kind: Literal["stdout"] = "stdout"


@dataclass(frozen=True)
class FileSpec:
    """``file:PATH[?max_mb=10&keep=5]``: JSON lines appended to PATH, rotated at ``max_bytes`` (0: never)."""

    path: Path
    max_bytes: int = 10 * 1024 * 1024
    keep: int = 5
    kind: Literal["file"] = "file"


@dataclass(frozen=True)
class BrokerAddress:
    """Where an MQTT sink connects, parsed from its spec; holds no password."""

    scheme: str
    host: str
    port: int
    username: str
    prefix: str

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class MqttSpec:
    """``mqtt://[user@]host[:port]/topic-prefix`` (or ``mqtts://``) with the ``[mqtt]`` options it runs with."""

    address: BrokerAddress
    options: MqttConfig
    device_id: str
    camera: str = ""
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    kind: Literal["mqtt"] = "mqtt"


SinkSpec = StdoutSpec | FileSpec | MqttSpec


def topic_level(name: str) -> str:
    """A name made safe as one MQTT topic level: no separators, wildcards or spaces."""
    cleaned = re.sub(r"[/+#\s\0]+", "_", name.strip())
    return cleaned or "default"


def parse_sink(spec: str, config: Config) -> SinkSpec:
    """Parse one sink spec (``stdout``, ``file:PATH?...``, ``mqtt://...``) with the options it needs.

    Raises:
        ConfigError: an unknown kind, a malformed spec or a bad option (without the file name; `build_plan`
        adds it with the key path).
    """
    if spec in ("stdout", "-"):
        return StdoutSpec()
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme == "file":
        return _parse_file(spec)
    if scheme in MQTT_DEFAULT_PORTS:
        return mqtt_spec(spec, config)
    raise ConfigError(f"sink {spec!r}: unknown kind; use stdout, file:PATH, mqtt://HOST/TOPIC or mqtts://...")


def _parse_file(spec: str) -> FileSpec:
    path, _, query = spec.split(":", 1)[1].partition("?")
    if not path:
        raise ConfigError(f"sink {spec!r}: give a path, e.g. file:/var/lib/edgekit/results.jsonl")
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = set(options) - {"max_mb", "keep"}
    if unknown:
        raise ConfigError(f"sink {spec!r}: unknown option {sorted(unknown)[0]!r} (known: max_mb, keep)")
    try:
        max_mb = float(options.get("max_mb", "10"))
        keep = int(options.get("keep", "5"))
    except ValueError:
        raise ConfigError(f"sink {spec!r}: max_mb must be a number and keep an integer") from None
    if max_mb < 0 or keep < 0:
        raise ConfigError(f"sink {spec!r}: max_mb and keep cannot be negative")
    return FileSpec(Path(path), int(max_mb * 1024 * 1024), keep)


def parse_broker(spec: str, mqtt: MqttConfig, device_id: str) -> BrokerAddress:
    """Parse `mqtt://[user@]host[:port]/topic-prefix` (or `mqtts://`).

    Args:
        spec: the sink spec from the command line or `run.sinks`.
        mqtt: the `[mqtt]` section (username and topic prefix when the URL has none).
        device_id: the device name used in the default prefix `edgekit/<device_id>`.

    Raises:
        ConfigError: the spec is malformed or carries a password.
    """
    parts = urlsplit(spec)
    if parts.scheme not in MQTT_DEFAULT_PORTS:
        raise ConfigError(f"sink {spec!r}: not an MQTT URL ({MQTT_USAGE})")
    if parts.password is not None:
        # Never echo the spec here: it holds the password.
        raise ConfigError(
            f"sink {parts.scheme}://{parts.username}:***@{parts.hostname}: a password in the URL would show in "
            "`ps` and the journal; put it in $CREDENTIALS_DIRECTORY/mqtt_password (systemd LoadCredential=) "
            "or in the file named by mqtt.password_file"
        )
    if not parts.hostname:
        raise ConfigError(f"sink {spec!r}: no broker host ({MQTT_USAGE})")
    try:
        port = parts.port or MQTT_DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"sink {spec!r}: the port is not a number from 1 to 65535") from None
    if "#" in spec or "+" in parts.path:
        raise ConfigError(f"sink {spec!r}: the topic prefix must not contain the MQTT wildcards + or #")
    if parts.query:
        raise ConfigError(f"sink {spec!r}: options go in the [mqtt] section of the config, not in the URL")
    prefix = unquote(parts.path).strip("/") or mqtt.topic_prefix.strip("/") or f"edgekit/{device_id}"
    named = f"sink {spec!r}" if unquote(parts.path).strip("/") else "mqtt.topic_prefix"
    if any(c in prefix for c in "+#\0") or prefix.startswith("$"):
        raise ConfigError(f"{named}: topic prefix {prefix!r} must not contain + # or start with $")
    username = unquote(parts.username) if parts.username else mqtt.username
    return BrokerAddress(parts.scheme, parts.hostname, port, username, prefix)


def mqtt_spec(spec: str, config: Config) -> MqttSpec:
    """An MQTT sink's address, options, password and TLS context: everything checked before connecting."""
    mqtt = config.mqtt
    device_id = topic_level(mqtt.device_id or socket.gethostname())
    address = parse_broker(spec, mqtt, device_id)
    if mqtt.reconnect_max < mqtt.reconnect_min:
        raise ConfigError(
            f"mqtt.reconnect_max ({mqtt.reconnect_max}) must be >= mqtt.reconnect_min ({mqtt.reconnect_min})"
        )
    if mqtt.key_file and not mqtt.cert_file:
        raise ConfigError("mqtt.key_file is set without mqtt.cert_file")
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(mqtt, key)
        if not value:
            continue
        if not address.tls:
            raise ConfigError(f"mqtt.{key} is set but the sink is {address.scheme}://; use mqtts:// for TLS")
        if not Path(value).is_file():
            raise ConfigError(f"mqtt.{key}: {value}: no such file")
    password = read_secret(MQTT_PASSWORD_CREDENTIAL, mqtt.password_file or None, what="MQTT password")
    if password is not None and not address.username:
        raise ConfigError(f"an MQTT password is set but no user: use {address.scheme}://USER@host or mqtt.username")
    tls = _tls_context(mqtt) if address.tls else None
    return MqttSpec(address, mqtt, device_id, config.run.camera, password, tls)


def _tls_context(mqtt: MqttConfig) -> ssl.SSLContext:
    import ssl

    try:
        context = ssl.create_default_context(cafile=mqtt.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.ca_file: {mqtt.ca_file}: not a PEM CA certificate ({exc})") from None
    if mqtt.cert_file:
        try:
            context.load_cert_chain(mqtt.cert_file, mqtt.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.cert_file: {mqtt.cert_file}: cannot load the client certificate and key ({exc})"
            ) from None
    if mqtt.tls_insecure:
        context.check_hostname = False
    return context


# --- http --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpSpec:
    """The preview server: where it listens and what it serves (`edgekit.device.http`)."""

    listen: str  # as written, for messages
    host: str
    port: int
    fps: float = 5.0
    jpeg_quality: int = 80
    user: str = "edgekit"
    password: str | None = field(default=None, repr=False)  # the credential http_password or http.password_file


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` (loopback) -> (host, port).

    Raises:
        ConfigError: not an address with a port in 0..65535 (names the key; `build_plan` adds the file).
    """
    text = value.strip()
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"key 'http.listen' must be HOST:PORT or PORT (e.g. 127.0.0.1:8080), got {value!r}")
    return host, int(port_text)


# --- the plan ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """Everything `edgekit run` will do, validated: the config it came from and the parsed specs."""

    config: Config
    where: str  # the config file (or "command line"), first in every message about it
    device: DeviceSpec
    source: SourceSpec | None
    sinks: tuple[SinkSpec, ...]
    http: HttpSpec | None


def build_plan(config: Config, where: str = "config") -> RunPlan:
    """Check every rule `edgekit run` has about a config, and parse its spec strings once.

    Raises:
        ConfigError: naming the file and the key path. SourceError: the source names no camera, file or folder.
    """
    run = config.run
    device = _keyed(where, "run.device", parse_device, run.device)
    sinks = tuple(_keyed(where, f"run.sinks[{i}]", parse_sink, spec, config) for i, spec in enumerate(run.sinks))
    http = None
    if config.http.listen:
        host, port = _keyed(where, "", parse_listen, config.http.listen)
        h = config.http
        password = read_secret(HTTP_PASSWORD_CREDENTIAL, h.password_file or None, what="http password")
        http = HttpSpec(h.listen, host, port, h.fps, h.jpeg_quality, h.user, password)
    source = parse_source(run.source, run.realtime) if run.source else None
    if run.streams > 1 and device.is_edgetpu:
        raise ConfigError(
            f"{where}: key 'run.streams': parallel streams run on the CPU; an Edge TPU runs one model at a time, "
            "set streams to 1 (or 0)"
        )
    if run.streams > 1 and run.max_fps > 0:
        raise ConfigError(
            f"{where}: key 'run.streams': parallel streams are for throughput, run.max_fps paces the frames; "
            "set one of them only"
        )
    if config.motion.enabled and run.streams > 1:
        raise ConfigError(
            f"{where}: key 'run.streams': motion gating decides frame by frame, in order, from the tracker's state "
            "after the previous frame; parallel streams infer frames ahead of it, set streams to 1 (or 0)"
        )
    return RunPlan(config, where, device, source, sinks, http)


def load_plan(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunPlan:
    """`load_config` then `build_plan`, with the file named the same way in both."""
    return build_plan(load_config(path, overrides), str(path) if path else "command line")


def _keyed(where: str, key: str, parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except EdgekitError as exc:
        keyed = f"key '{key}': " if key else ""
        raise ConfigError(f"{where}: {keyed}{exc.message}") from None
