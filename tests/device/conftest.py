"""Fixtures shared by the device tests."""

from tests.device.mqtt_broker import mosquitto  # noqa: F401  (a fixture, registered by importing it)
