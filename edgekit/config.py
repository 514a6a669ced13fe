"""Typed, strict TOML configuration: every key is declared in a dataclass, unknown keys are errors."""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from edgekit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


# --- the schema --------------------------------------------------------------------------------------------
# Each section is a frozen dataclass; a field's type is the type the TOML value must have, and a range or format
# rule is declared beside its field with `ruled` (checked by `parse_section`, so loading the file is the check).
# Rules that join several keys or parse a spec string live in `edgekit.plan`.


def ruled(default: Any, ok: Callable[[Any], bool], expected: str) -> Any:
    """A field whose value must satisfy ``ok``; a value that does not is refused with "must be {expected}"."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"rule": (ok, expected)})
    return field(default=default, metadata={"rule": (ok, expected)})


def _topic(value: str) -> bool:
    return not any(c in value for c in "+#\0") and bool(value.strip("/"))


@dataclass(frozen=True)
class RunConfig:
    """What `edgekit run` runs: the model, where frames come from, where results go."""

    model: str = ""
    source: str = ""
    sinks: list[str] = ruled(["stdout"], bool, "a list with at least one sink")  # noqa: RUF009 - a field()
    task: Literal["auto", "classify", "detect"] = "auto"
    device: str = "cpu"
    # "cpu": when the Edge TPU cannot be opened, run the manifest's plain int8 model on the CPU instead.
    fallback: Literal["none", "cpu"] = "none"
    # CPU threads in all (0: every core), shared among the streams.
    threads: int = ruled(0, lambda v: v >= 0, "0 (all cores) or more")
    # Interpreters working on consecutive frames at once (0: two for files and folders on the CPU, else one).
    streams: int = ruled(0, lambda v: v >= 0, "0 (automatic) or more")
    top_k: int = ruled(3, lambda v: v >= 1, "1 or more")
    threshold: float = ruled(0.0, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")
    labels: str = ""
    max_fps: float = ruled(0.0, lambda v: v >= 0, "0 (unlimited) or more")
    frames: int = ruled(0, lambda v: v >= 0, "0 (no limit) or more")
    realtime: bool = False
    only_changes: bool = False
    # How frames are shrunk: "model" keeps the manifest's (a plain .tflite: one bilinear stretch, as the loops its
    # users start from; see edgekit.device.model.PLAIN_PREPROCESS), or area / pyramid / bilinear.
    downscale: Literal["model", "area", "pyramid", "bilinear"] = "model"
    stats_interval: float = ruled(10.0, lambda v: v >= 0, "0 (off) or more seconds")
    camera: str = ""
    # Detection only: keep these classes (labels or ids); empty keeps every class.
    classes: list[str] = field(default_factory=list)
    # Classification only: event records when a top class holds this many frames in a row (0: no events).
    class_events: int = ruled(0, lambda v: v >= 0, "0 (off) or more frames")
    # ... and an update when its score moves by more than this.
    class_event_step: float = ruled(0.1, lambda v: 0 < v <= 1, "above 0 and at most 1")


@dataclass(frozen=True)
class MqttConfig:
    """Options of the MQTT sink (`mqtt://[user@]host[:port]/topic-prefix`, `mqtts://...`); see README, "MQTT".

    Empty strings mean "the default": client_id `edgekit-<device_id>[-<camera>]`, device_id the hostname,
    topic_prefix `edgekit/<device_id>` (the sink URL's path wins over it), the password from
    `$CREDENTIALS_DIRECTORY/mqtt_password` (never from the URL or the command line).
    """

    client_id: str = ""
    device_id: str = ""
    topic_prefix: str = ""
    username: str = ""
    password_file: str = ""
    qos: int = ruled(1, lambda v: v in (0, 1, 2), "0, 1 or 2")
    retain: bool = True  # the status (online/offline) and stats topics; results are never retained
    keepalive: int = ruled(60, lambda v: 5 <= v <= 65535, "5..65535 seconds")
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # How long start-up waits for the broker's first answer.
    connect_timeout: float = ruled(5.0, lambda v: v > 0, "above 0")
    # First reconnect delay, doubled on each failure up to reconnect_max.
    reconnect_min: float = ruled(1.0, lambda v: v > 0, "above 0")
    reconnect_max: float = 60.0
    queue_size: int = ruled(10000, lambda v: v >= 1, "1 or more")  # records held while the broker is unreachable
    queue_policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    queue_dir: str = ""  # an on-disk queue that survives a process restart
    # QoS>0 messages sent but not yet acknowledged by the broker.
    max_inflight: int = ruled(20, lambda v: 1 <= v <= 65535, "1..65535")
    # How long close() waits for queued records to go out.
    drain_timeout: float = ruled(5.0, lambda v: v >= 0, "0 or more")
    ca_file: str = ""  # mqtts: CA certificate(s) to trust; empty means the system's store
    cert_file: str = ""  # mqtts: client certificate, for brokers that require one
    key_file: str = ""
    tls_insecure: bool = False  # mqtts: skip the hostname check (a test broker only)
    homeassistant: bool = False  # publish Home Assistant MQTT discovery configs
    discovery_prefix: str = ruled("homeassistant", _topic, "a topic without + or #")


@dataclass(frozen=True)
class HttpConfig:
    """The live preview page and Prometheus metrics of `edgekit run` (off unless ``listen`` is set)."""

    # HOST:PORT or PORT (loopback); empty: no server. Use 0.0.0.0:PORT to let other machines in.
    listen: str = ""
    # Frames per second of /stream.mjpg (encoded only while someone watches).
    fps: float = ruled(5.0, lambda v: 0 < v <= 60, "above 0 and at most 60")
    jpeg_quality: int = ruled(80, lambda v: 1 <= v <= 100, "1..100")
    # Basic auth: the password comes from the systemd credential "http_password" or this file.
    user: str = ruled("edgekit", lambda v: bool(v) and ":" not in v, "a non-empty name without ':'")
    password_file: str = ""


@dataclass(frozen=True)
class MotionConfig:
    """Motion gating of `edgekit run` (`edgekit.device.motion`): skip inference while nothing moves (off by default)."""

    enabled: bool = False
    # Grey levels (of 255) a pixel of the shrunk, blurred frame must change by to count.
    threshold: float = ruled(25.0, lambda v: 0 < v < 255, "above 0 and below 255")
    # Fraction of the frame's pixels that must change for motion.
    min_area: float = ruled(0.002, lambda v: 0 <= v < 1, "at least 0 and below 1")
    # Seconds after which a frame is inferred even on a still scene (stationary objects, the systemd watchdog).
    keyframe: float = ruled(10.0, lambda v: v > 0, "above 0 seconds")
    # Width in pixels the frame is shrunk to for the comparison.
    width: int = ruled(128, lambda v: 16 <= v <= 640, "16..640 pixels")


@dataclass(frozen=True)
class TrackingConfig:
    """The object tracker of detection runs (`edgekit.device.events`); see README, "Tracking and events"."""

    enabled: bool = True  # every detection gets a track_id
    # A new object must be seen in min_hits of its first `window` frames before its event starts.
    min_hits: int = ruled(3, lambda v: v >= 1, "1 or more")
    window: int = ruled(5, lambda v: v >= 1, "1 or more")
    # An object unseen for this long has left: its event ends.
    end_after: float = ruled(2.0, lambda v: v > 0, "above 0 seconds")
    # Least overlap (intersection over union) of a detection with a track's predicted box to continue it.
    iou: float = ruled(0.2, lambda v: 0.0 < v < 1.0, "between 0 and 1 (exclusive)")
    # Detections scoring less are not tracked (track_id null); [objects.filters.LABEL] can raise it per label.
    min_score: float = ruled(0.5, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")


@dataclass(frozen=True)
class EventsConfig:
    """Event records (`"type": "event"`) for tracked objects: new, update, end."""

    enabled: bool = True
    # An update goes out when the score moved by at least this much since the last record of the event.
    score_step: float = ruled(0.1, lambda v: 0.0 < v <= 1.0, "above 0 and at most 1")
    # Frames a box must stay put (IoU >= 0.8 with where it stopped) before the object is `stationary`.
    stationary_frames: int = ruled(25, lambda v: v >= 1, "1 or more")


@dataclass(frozen=True)
class SnapshotsConfig:
    """The best frame of each event (highest score with the box clear of the frame's edges), saved at its end."""

    enabled: bool = False
    folder: str = ""  # also write <camera>-<label>-<event id>.jpg here (empty: MQTT only)
    max_mb: float = ruled(100.0, lambda v: v > 0, "above 0")  # the folder's size cap: oldest files go first
    margin: float = ruled(0.25, lambda v: 0 <= v <= 2, "0..2 (a fraction of the box's size)")
    quality: int = ruled(80, lambda v: 1 <= v <= 100, "1..100")


@dataclass(frozen=True)
class FilterConfig:
    """Per-label filters (``[objects.filters.LABEL]``): detections that fail one are not tracked."""

    min_score: float = ruled(0.0, lambda v: 0.0 <= v <= 1.0, "between 0 and 1")
    # Box area as a fraction of the frame's.
    min_area: float = ruled(0.0, lambda v: 0.0 <= v <= 1.0, "a fraction of the frame between 0 and 1")
    max_area: float = ruled(1.0, lambda v: 0.0 < v <= 1.0, "a fraction of the frame above 0 and at most 1")
    # Polygons ([[x, y], ...], normalised 0..1 or pixels) where this label is ignored (its box's bottom centre).
    mask: list[list[list[float]]] = field(default_factory=list)


@dataclass(frozen=True)
class ObjectsConfig:
    """What the tracker takes in: masks for every label, and per-label filters."""

    mask: list[list[list[float]]] = field(default_factory=list)
    filters: dict[str, FilterConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class ZoneConfig:
    """A named zone (``[zones.NAME]``): a polygon, the labels that count in it, how long one must be inside."""

    # [[x, y], ...]: all values <= 1 are fractions of the frame, otherwise pixels of the source frame.
    coordinates: list[list[float]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # empty: every label
    # Consecutive frames an object's bottom centre must be inside before it is in the zone (Frigate's inertia).
    inertia: int = ruled(3, lambda v: v >= 1, "1 or more frames")
    # Seconds it must have been inside before it counts (Frigate's loitering_time); 0: at once.
    loitering: float = ruled(0.0, lambda v: v >= 0, "0 or more seconds")


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    run: RunConfig = field(default_factory=RunConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    snapshots: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    zones: dict[str, ZoneConfig] = field(default_factory=dict)


# --- loading -----------------------------------------------------------------------------------------------


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config file, then apply command-line overrides.

    Args:
        path: the TOML file; None means defaults only.
        overrides: dotted keys (``"run.threads"``) to values, applied after the file and validated the same way.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is unreadable or not TOML, or a key is unknown or of the wrong type.
    """
    where = str(path) if path is not None else "command line"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    return parse_section(Config, data, where)


def parse_section(cls: type[T], data: Mapping[str, Any], where: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and values of the wrong type.

    Args:
        cls: a dataclass type whose fields are the allowed keys.
        data: the mapping read from TOML.
        where: the file name (or "command line"), first in every message.
        prefix: the dotted key path of ``data`` inside the file.

    Returns:
        An instance of ``cls``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: key '{prefix.rstrip('.')}' must be a table")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' (known keys here: {known})")
    values = {key: _coerce(hints[key], value, where, f"{prefix}{key}") for key, value in data.items()}
    for key, value in values.items():
        rule = fields[key].metadata.get("rule")
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{where}: key '{prefix}{key}' must be {rule[1]}, got {value!r}")
    return cls(**values)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return parse_section(tp, value, where, f"{key}.")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{where}: key '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item_type,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: key '{key}' must be a list, got {_describe(value)}")
        return [_coerce(item_type, item, where, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        _, item_type = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: key '{key}' must be a table, got {_describe(value)}")
        return {str(k): _coerce(item_type, v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: key '{key}' must be true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: key '{key}' must be an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: key '{key}' must be a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: key '{key}' must be a string, got {_describe(value)}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: key '{key}' must be a path string, got {_describe(value)}")
        return Path(value)
    raise TypeError(f"config schema uses unsupported type {tp!r} for {key}")  # a bug in the schema, not input


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def to_dict(config: Any) -> dict[str, Any]:
    """The effective configuration as plain data (what ``--print-config`` shows)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def dump_toml(data: Mapping[str, Any]) -> str:
    """Render plain config data as TOML (tables for sections, inline values otherwise)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    for key, value in scalars.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        _dump_table(lines, name, table)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(lines: list[str], name: str, table: Mapping[str, Any]) -> None:
    lines.append("")
    lines.append(f"[{name}]")
    nested = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            nested[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in nested.items():
        _dump_table(lines, f"{name}.{key}", value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"cannot render {value!r} as TOML")


# --- secrets -----------------------------------------------------------------------------------------------


def read_secret(name: str, file: str | Path | None = None, what: str = "secret") -> str | None:
    """Read a secret from systemd's credentials directory or from a file; never from argv or the environment.

    Args:
        name: the credential name (``LoadCredential=NAME:...`` in the unit), looked up in $CREDENTIALS_DIRECTORY.
        file: a file named in the config, used when the credential is not there.
        what: how to call the secret in error messages (never its value).

    Returns:
        The secret without its trailing newline, or None when neither place has one.
    """
    candidates: list[Path] = []
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidates.append(Path(cred_dir) / name)
    if file:
        candidates.append(Path(file))
    for candidate in candidates:
        try:
            return candidate.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            if candidate == Path(file or ""):
                raise ConfigError(f"{candidate}: {what} file not found") from None
        except OSError as exc:
            raise ConfigError(f"{candidate}: cannot read {what} file ({exc.strerror})") from None
    return None
