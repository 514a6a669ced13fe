"""JSON-lines encoding shared by the stdout and file sinks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(record: Mapping[str, Any]) -> str:
    """One record as one compact JSON line (with the newline)."""
    return _encoder.encode(record) + "\n"
