"""What a sink is: somewhere results and stats records go (stdout, a file, an MQTT broker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    """A destination for records.

    Records are JSON-ready mappings in the documented schema (see README, "Result records"). A sink must not
    block the frame loop for long: a slow destination queues (bounded) or drops, and counts what it drops.
    """

    name: str

    def publish_result(self, record: Mapping[str, Any]) -> None: ...

    def publish_stats(self, record: Mapping[str, Any]) -> None: ...

    def counters(self) -> Mapping[str, int | float]:
        """Sink-specific counters merged into stats records (queued, dropped, reconnects, ...)."""
        ...

    def close(self) -> None: ...
