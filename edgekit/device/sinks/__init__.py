"""Result sinks: stdout, files, MQTT.

A sink spec's scheme picks a module; only that module is imported (no paho-mqtt unless an MQTT sink is
configured). Adding a sink is a spec in `edgekit.plan`, one module with ``create(spec) -> Sink`` and one line in
`_REGISTRY`.

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

from edgekit.device.sinks.base import Sink
from edgekit.plan import SinkSpec

__all__ = ["Sink", "create"]

_REGISTRY = {
    "stdout": "edgekit.device.sinks.stdout:create",
    "file": "edgekit.device.sinks.file:create",
    "mqtt": "edgekit.device.sinks.mqtt:create",
}


def create(spec: SinkSpec) -> Sink:
    """Open the sink a spec of the run plan names (`edgekit.plan.parse_sink` parsed and checked it).

    Returns:
        An open sink.

    Raises:
        SinkError: it cannot be opened.
        MissingExtra: its library is not installed.
    """
    module_name, _, func = _REGISTRY[spec.kind].partition(":")
    module = importlib.import_module(module_name)
    sink: Sink = getattr(module, func)(spec)
    return sink
