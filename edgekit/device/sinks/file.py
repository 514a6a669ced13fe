"""The file sink: JSON lines appended to a file, rotated by size (``path``, ``path.1`` ... ``path.N``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.device.sinks import jsonl
from edgekit.errors import SinkError
from edgekit.plan import FileSpec

logger = logging.getLogger(__name__)


class FileSink:
    """Append records to ``path``; when it passes ``max_bytes`` it becomes ``path.1`` and older files shift.

    Each line is flushed as written (``tail -f`` and log shippers see results at once); nothing is fsynced,
    because a device writing every frame to an SD card would wear it out for no gain.

    Args:
        path: the file.
        max_bytes: size that triggers a rotation (0: never rotate).
        keep: rotated files kept besides the current one.
    """

    def __init__(self, path: str | Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 5) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.max_bytes, self.keep = max_bytes, keep
        self._written = 0
        self._rotations = 0
        self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - lives as long as the sink; lines are UTF-8 bytes
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot open for writing ({exc.strerror})") from None
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._rotations += 1
        self._open()

    def _write(self, record: Mapping[str, Any]) -> None:
        line = jsonl.line(record)
        try:
            if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            self._fh.write(line)
            self._fh.flush()
        except OSError as exc:
            raise SinkError(f"{self.path}: write failed ({exc.strerror}); is the disk full?") from None
        self._size += len(line)
        self._written += 1

    def publish_result(self, record: Mapping[str, Any]) -> None:
        self._write(record)

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        self._write(record)

    def counters(self) -> Mapping[str, int | float]:
        return {"written": self._written, "rotations": self._rotations}

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def create(spec: FileSpec) -> FileSink:
    """The sink a ``file:PATH[?max_mb=10&keep=5]`` spec of the run plan names."""
    return FileSink(spec.path, spec.max_bytes, spec.keep)
