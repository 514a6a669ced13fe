"""systemd notification (sd_notify) as a sink: READY after the first result, WATCHDOG while results flow, STATUS.

The protocol is one datagram of newline-separated ``KEY=VALUE`` lines sent to the AF_UNIX socket named in
$NOTIFY_SOCKET (a path, or ``@name`` for an abstract address); systemd learns the sender from the kernel's
credentials. No library is needed for that, so none is used.

The notifier is fed like any sink, and that is the point of the watchdog design: a ping is sent only when a
result arrives, so a camera that stops delivering frames or a delegate that hangs inside ``invoke()`` produces no
results, hence no pings, and systemd kills and restarts the service after ``WatchdogSec=``. Nothing here runs on
a timer thread that could keep pinging while the frame loop is stuck.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """The address to send to for a $NOTIFY_SOCKET value.

    Args:
        value: ``/run/systemd/notify`` or ``@name`` (abstract namespace).

    Returns:
        A path for ``sendto``, or the abstract address as bytes starting with NUL.

    Raises:
        ValueError: the value is neither (e.g. ``vsock:...``, which this notifier does not speak).
    """
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r} is not a socket path or an abstract address (@name)")


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """The watchdog timeout systemd expects pings within, in seconds, or None when there is no watchdog.

    Args:
        environ: the process environment ($WATCHDOG_USEC, $WATCHDOG_PID).
        pid: this process id (default: ``os.getpid()``); a $WATCHDOG_PID of another process means the watchdog
            is not ours (we are a child of the service's main process).

    Returns:
        Seconds, or None.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 1e6


def describe_result(record: Mapping[str, Any]) -> str:
    """A short human summary of a result record for ``systemctl status`` (top class, or detections)."""
    if "classes" in record:
        classes = record["classes"]
        if not classes:
            return "no class above threshold"
        top = classes[0]
        return f"{top.get('label') or top.get('id')} {float(top.get('score', 0.0)):.2f}"
    detections = record.get("detections") or []
    if not detections:
        return "no detections"
    labels: dict[str, int] = {}
    for det in detections:
        label = str(det.get("label") or det.get("id"))
        labels[label] = labels.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in labels.items())


class SystemdNotifier:
    """Tells systemd how the service is doing; a `Sink` that the pipeline feeds every result and stats record.

    * ``READY=1`` with the first result: the model is loaded and a frame went all the way through it.
    * ``WATCHDOG=1`` on a result when half the watchdog timeout has passed since the last ping (so systemd
      sees about two pings per timeout while frames flow, and none when they stop).
    * ``STATUS=`` with the fps of the last stats record and the last result, sent with READY and the pings.
    * ``RELOADING=1`` on `reloading` (SIGHUP), and READY=1 again with the first result of the new config.
    * ``STOPPING=1`` on `close`.

    Sending never raises: a notification that cannot be delivered is counted and logged once, and the camera
    keeps running.

    Args:
        address: the $NOTIFY_SOCKET value.
        watchdog_s: the watchdog timeout ($WATCHDOG_USEC in seconds), or None for no pings.
        clock: monotonic seconds (tests pass a fake).
    """

    name = "systemd"

    def __init__(
        self, address: str, watchdog_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._address = socket_address(address)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_s = watchdog_s
        self._ping_every = watchdog_s / 2 if watchdog_s else math.inf
        self._clock = clock
        self._ready = False
        self._last_ping = -math.inf
        self._fps: float | None = None
        self._last = ""
        self._counts = {"sent": 0, "failed": 0, "watchdog": 0}
        self._warned = False
        self._closed = False

    # --- the Sink interface --------------------------------------------------------------------------------

    def publish_result(self, record: Mapping[str, Any]) -> None:
        """Count a result as proof of life: READY the first time, then rate-limited WATCHDOG pings."""
        self._last = describe_result(record)
        now = self._clock()
        if not self._ready:
            self._ready = True
            self._last_ping = now
            fields = ["READY=1", f"STATUS={self.status()}"]
            if self.watchdog_s:
                fields.insert(1, "WATCHDOG=1")
                self._counts["watchdog"] += 1
            self.send(*fields)
            return
        if now - self._last_ping >= self._ping_every:
            self._last_ping = now
            self._counts["watchdog"] += 1
            self.send("WATCHDOG=1", f"STATUS={self.status()}")

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        """Take the fps for STATUS; a stats record is not a proof of life (it is sent on a timer)."""
        fps = record.get("fps")
        if isinstance(fps, (int, float)):
            self._fps = float(fps)

    def counters(self) -> Mapping[str, int | float]:
        return dict(self._counts)

    def close(self) -> None:
        """Send STOPPING=1 once and close the socket."""
        if self._closed:
            return
        self._closed = True
        self.send("STOPPING=1", "STATUS=stopping")
        self._socket.close()

    def reloading(self) -> None:
        """SIGHUP: say so (``systemctl status`` shows "reloading"); the first result after it sends READY=1 again."""
        self._ready = False
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    # --- protocol ------------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    def status(self) -> str:
        """The STATUS= text: fps of the last stats window and the last result."""
        fps = f"{self._fps:.1f} fps" if self._fps is not None else "running"
        return f"{fps}; last: {self._last}" if self._last else fps

    def send(self, *fields: str) -> bool:
        """Send one notification datagram.

        Args:
            *fields: ``KEY=VALUE`` strings (no newlines inside a value).

        Returns:
            True when the datagram was delivered to the socket.
        """
        message = "\n".join(f.replace("\n", " ") for f in fields).encode()
        try:
            # MSG_DONTWAIT: a notification socket that does not read must never stall the frame loop.
            self._socket.sendto(message, socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            self._counts["failed"] += 1
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify systemd at %r: %s", self._address, exc)
            return False
        self._counts["sent"] += 1
        return True


class NullNotifier:
    """What the daemon gets when it does not run under systemd ($NOTIFY_SOCKET unset): does nothing."""

    name = "systemd"
    watchdog_s: float | None = None
    ready = False

    def publish_result(self, record: Mapping[str, Any]) -> None:
        pass

    def publish_stats(self, record: Mapping[str, Any]) -> None:
        pass

    def counters(self) -> Mapping[str, int | float]:
        return {}

    def reloading(self) -> None:
        pass

    def close(self) -> None:
        pass


def create(environ: Mapping[str, str] | None = None, max_fps: float = 0.0) -> SystemdNotifier | NullNotifier:
    """The notifier for this process: a real one under systemd (Type=notify), else a no-op.

    Args:
        environ: the environment to read (default: ``os.environ``).
        max_fps: ``run.max_fps``; warns when frames are further apart than half the watchdog timeout, since
            then systemd would restart a healthy service.

    Returns:
        A `Sink`-shaped notifier.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return NullNotifier()
    try:
        notifier = SystemdNotifier(address, watchdog_interval(env))
    except ValueError as exc:
        logger.warning("%s; not notifying systemd", exc)
        return NullNotifier()
    if notifier.watchdog_s and max_fps > 0 and 1.0 / max_fps > notifier.watchdog_s / 2:
        logger.warning(
            "run.max_fps=%g gives a frame every %.0f s, but the watchdog expects a ping every %.0f s; raise "
            "WatchdogSec= (systemctl edit) to more than %.0f s",
            max_fps,
            1.0 / max_fps,
            notifier.watchdog_s / 2,
            2.0 / max_fps,
        )
    logger.info("notifying systemd at %s (watchdog %s)", address, notifier.watchdog_s or "off")
    return notifier
