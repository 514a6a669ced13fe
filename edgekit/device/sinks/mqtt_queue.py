"""The MQTT sink's bounded queue: in memory, or in SQLite under `queue_dir` so a process restart loses nothing."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Protocol

from edgekit.errors import SinkError

logger = logging.getLogger(__name__)

Policy = Literal["drop_oldest", "drop_newest"]
DELETE_BATCH = 32


@dataclass(frozen=True, slots=True)
class Message:
    """One queued MQTT message; `key` grows with every message, so it orders them."""

    key: int
    topic: str
    payload: bytes
    retain: bool


class MessageQueue(Protocol):
    """Messages waiting for the broker, oldest first, bounded by a size and a drop policy.

    A message moves through three states: pending (`put`), in flight (`take` handed it to the MQTT client),
    done (`done`: the broker acknowledged it). Only pending messages count against the size and can be dropped;
    a durable queue keeps in-flight messages until `done`, so they are sent again after a crash.
    """

    @property
    def pending(self) -> int: ...

    def put(self, topic: str, payload: bytes, retain: bool) -> int:
        """Add a message; returns how many messages the drop policy discarded to make room (0 or 1)."""
        ...

    def take(self) -> Message | None: ...

    def done(self, message: Message) -> None: ...

    def close(self) -> None: ...


class MemoryQueue:
    """A bounded deque: the default, lost when the process ends."""

    def __init__(self, size: int, policy: Policy) -> None:
        self._size = size
        self._policy = policy
        self._items: deque[Message] = deque()
        self._next_key = 0

    @property
    def pending(self) -> int:
        return len(self._items)

    def put(self, topic: str, payload: bytes, retain: bool) -> int:
        dropped = 0
        if len(self._items) >= self._size:
            if self._policy == "drop_newest":
                return 1
            self._items.popleft()
            dropped = 1
        self._next_key += 1
        self._items.append(Message(self._next_key, topic, payload, retain))
        return dropped

    def take(self) -> Message | None:
        return self._items.popleft() if self._items else None

    def done(self, message: Message) -> None:
        pass

    def close(self) -> None:
        self._items.clear()


class SpoolQueue:
    """A queue in an SQLite file: every message is written before `put` returns and deleted when acknowledged.

    WAL mode with synchronous=NORMAL makes a commit a page-cache write (no fsync per message, which an SD card
    could not sustain at 30 fps) while a crash of the process still loses nothing; only a power cut can lose
    the last moments. A lock file keeps two processes from sending the same spool twice.
    """

    def __init__(self, directory: Path, name: str, size: int, policy: Policy) -> None:
        self._size = size
        self._policy = policy
        self.path = directory / f"{name}.sqlite3"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock: IO[str] = open(directory / f"{name}.lock", "a+")  # noqa: SIM115  (held until close)
        except OSError as exc:
            raise SinkError(f"{directory}: cannot use as mqtt.queue_dir ({exc.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise SinkError(
                f"{self.path}: in use by another edgekit process; give each process its own mqtt.queue_dir"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: keys never go back, even when the table empties, so "key > last taken" stays right.
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (key INTEGER PRIMARY KEY AUTOINCREMENT,"
                " topic TEXT NOT NULL, payload BLOB NOT NULL, retain INTEGER NOT NULL)"
            )
            (count,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise SinkError(f"{self.path}: not a usable queue file ({exc}); move it away to start afresh") from None
        self._taken = 0  # every message with a larger key is pending
        self._pending = int(count)
        self._last: Message | None = None  # the newest message, so the usual take() needs no SELECT
        self._acked: list[int] = []  # acknowledged keys not yet deleted (deleted in batches)
        self._closed = False
        self.restored = self._pending
        self.dropped_at_start = 0
        while self._pending > self._size:
            self._drop_one()
            self.dropped_at_start += 1

    @property
    def pending(self) -> int:
        return self._pending

    def put(self, topic: str, payload: bytes, retain: bool) -> int:
        dropped = 0
        if self._pending >= self._size:
            if self._policy == "drop_newest":
                return 1
            self._drop_one()
            dropped = 1
        cursor = self._execute(
            "INSERT INTO messages (topic, payload, retain) VALUES (?, ?, ?)", (topic, payload, int(retain))
        )
        self._pending += 1
        self._last = Message(int(cursor.lastrowid or 0), topic, payload, retain)
        return dropped

    def take(self) -> Message | None:
        if not self._pending:
            return None
        last = self._last
        if self._pending == 1 and last is not None and last.key > self._taken:
            self._taken = last.key
            self._pending = 0
            return last
        row = self._execute(
            "SELECT key, topic, payload, retain FROM messages WHERE key > ? ORDER BY key LIMIT 1", (self._taken,)
        ).fetchone()
        if row is None:  # pragma: no cover - the count and the table agree unless the file is edited underneath
            self._pending = 0
            return None
        self._taken = row[0]
        self._pending -= 1
        return Message(row[0], row[1], bytes(row[2]), bool(row[3]))

    def done(self, message: Message) -> None:
        # Deleting in batches halves the commits per message; the price is that a crash re-sends up to
        # DELETE_BATCH records the broker already had (delivery is at least once anyway).
        self._acked.append(message.key)
        if len(self._acked) >= DELETE_BATCH:
            self._flush_acked()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._flush_acked()
        finally:
            self._db.close()
            self._lock.close()

    def _flush_acked(self) -> None:
        if self._acked:
            keys, self._acked = self._acked, []
            self._execute(f"DELETE FROM messages WHERE key IN ({','.join('?' * len(keys))})", tuple(keys))

    def _drop_one(self) -> None:
        if self._policy == "drop_newest":
            sql = "DELETE FROM messages WHERE key = (SELECT MAX(key) FROM messages WHERE key > ?)"
        else:
            sql = "DELETE FROM messages WHERE key = (SELECT MIN(key) FROM messages WHERE key > ?)"
        self._execute(sql, (self._taken,))
        self._pending -= 1

    def _execute(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise SinkError(f"{self.path}: the MQTT queue file failed ({exc})") from None
