"""The stdout sink: one JSON line per record, flushed at once so a pipe reader sees every result live."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any, BinaryIO, TextIO

from edgekit.device.sinks import jsonl
from edgekit.plan import StdoutSpec


class StdoutSink:
    """JSON lines on standard output (results and stats).

    A closed pipe (``edgekit run | head``) raises BrokenPipeError, which the pipeline takes as "stop".
    """

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        # Lines go to the byte layer under the text stream when there is one (no decode and re-encode); anything
        # already written as text goes out first, so the order holds.
        self._stream.flush()
        self._binary: BinaryIO | None = getattr(self._stream, "buffer", None)
        self._written = 0

    def _write(self, record: Mapping[str, Any]) -> None:
        try:
            if self._binary is not None:
                self._binary.write(jsonl.line(record))
                self._binary.flush()
            else:
                self._stream.write(jsonl.line(record).decode())
                self._stream.flush()
        except BrokenPipeError:
            # Point fd 1 at /dev/null so that the interpreter's own flush at exit does not complain again.
            with contextlib.suppress(OSError, ValueError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._stream.fileno())
                os.close(null)
            raise
        self._written += 1

    def publish_result(self, record: Mapping[str, Any]) -> None:
        self._write(record)

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        self._write(record)

    def counters(self) -> Mapping[str, int | float]:
        return {"written": self._written}

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):  # reader gone, or already closed
            (self._binary or self._stream).flush()


def create(spec: StdoutSpec) -> StdoutSink:
    """``stdout`` or ``-``."""
    return StdoutSink()
