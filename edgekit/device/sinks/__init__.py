"""Result sinks: stdout, files, MQTT.

A sink spec's scheme picks a module; only that module is imported (no paho-mqtt unless an MQTT sink is
configured). Adding a sink is one module with ``create(spec, config) -> Sink`` and one line in `_REGISTRY`.

=========================  =====================================================================
spec                       sink
=========================  =====================================================================
``stdout`` (or ``-``)      JSON lines on standard output
``file:PATH[?opts]``       JSON lines appended to PATH, rotated (``max_mb=10``, ``keep=5``)
``mqtt://HOST[:PORT]/...``  an MQTT broker (``mqtts://`` for TLS); see the MQTT section of the README
=========================  =====================================================================
"""

from __future__ import annotations

import importlib

from edgekit.config import Config
from edgekit.device.sinks.base import Sink
from edgekit.errors import SinkError

__all__ = ["Sink", "create", "scheme_of"]

_REGISTRY = {
    "stdout": "edgekit.device.sinks.stdout:create",
    "file": "edgekit.device.sinks.file:create",
    "mqtt": "edgekit.device.sinks.mqtt:create",
    "mqtts": "edgekit.device.sinks.mqtt:create",
}


def scheme_of(spec: str) -> str:
    """The registry key of a sink spec.

    Raises:
        SinkError: an unknown scheme.
    """
    if spec in ("stdout", "-"):
        return "stdout"
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme not in _REGISTRY or scheme == "stdout":
        raise SinkError(f"sink {spec!r}: unknown kind; use stdout, file:PATH, mqtt://HOST/TOPIC or mqtts://...")
    return scheme


def create(spec: str, config: Config) -> Sink:
    """Open the sink a spec names.

    Args:
        spec: see the module docstring.
        config: the whole configuration (MQTT reads its own section).

    Returns:
        An open sink.

    Raises:
        SinkError: it cannot be opened.
        MissingExtra: its library is not installed.
    """
    module_name, _, func = _REGISTRY[scheme_of(spec)].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise SinkError(f"sink {spec!r}: this edgekit has no {scheme_of(spec)} sink") from None
        raise
    sink: Sink = getattr(module, func)(spec, config)
    return sink
