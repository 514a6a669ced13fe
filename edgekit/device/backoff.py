"""The one exponential backoff of the device side: source reopening and the Edge TPU watcher use it."""

from __future__ import annotations


class Backoff:
    """Exponential delays: ``first``, twice that, ... capped at ``cap``; `reset` after a success.

    (The MQTT sink leaves its reconnect delays to paho, which doubles them the same way.)
    """

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        """The delay to wait now; the following one doubles, up to the cap."""
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first
