"""JSON encoding of records, shared by the stdout, file and MQTT sinks (orjson: compact UTF-8 bytes).

The frame loop encodes every result with cold caches (`edgekit.device.pipeline`): there the standard library's
encoder takes about 25 us for a classification record, orjson about 5 us.
The output is the same compact JSON (``separators=(",", ":")``, non-ASCII kept as UTF-8; a float may be spelt
differently, 0.00001 for 1e-05, with the same value), except that a NaN or an infinity becomes ``null`` (the
standard encoder would raise); numpy scalars and arrays are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(record: Mapping[str, Any]) -> bytes:
    """One record as compact JSON (an MQTT payload)."""
    return orjson.dumps(record, option=_OPTIONS)


def line(record: Mapping[str, Any]) -> bytes:
    """One record as one JSON line, with its newline (stdout and files)."""
    return orjson.dumps(record, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
