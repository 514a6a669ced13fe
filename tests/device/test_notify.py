"""sd_notify over a real datagram socket: READY, rate-limited WATCHDOG only on results, STATUS, STOPPING."""

from __future__ import annotations

import http.server
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekit.device import notify
from edgekit.device.sinks.base import Sink
from tests.conftest import REPO


class Receiver:
    """A bound AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(notify.socket_address(address))
        self.sock.settimeout(0.0)

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, parsed into KEY=VALUE dicts."""
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@edgekit-test-{os.getpid()}-{id(tmp_path)}"
    rx = Receiver(address)
    yield rx
    rx.sock.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _result(label: str = "tabby", score: float = 0.81) -> dict[str, object]:
    return {"type": "result", "seq": 1, "classes": [{"id": 3, "label": label, "score": score}]}


def test_addresses() -> None:
    assert notify.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify.socket_address("@sd/notify") == b"\0sd/notify"
    with pytest.raises(ValueError, match="vsock"):
        notify.socket_address("vsock:2:1234")


def test_watchdog_interval_from_environment() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 4.0
    # The watchdog of our parent process is not ours to feed.
    assert notify.watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, pid=4242) is None
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_no_socket_means_a_silent_notifier() -> None:
    notifier = notify.create({})
    assert isinstance(notifier, notify.NullNotifier)
    assert isinstance(notifier, Sink)
    notifier.publish_result(_result())
    notifier.close()


def test_ready_then_watchdog_only_while_results_flow(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = notify.SystemdNotifier(receiver.address, watchdog_s=4.0, clock=clock)
    assert isinstance(notifier, Sink)
    assert receiver.messages() == []  # nothing before the first result: the model may still be loading

    notifier.publish_result(_result())
    (ready,) = receiver.messages()
    assert ready["READY"] == "1" and ready["WATCHDOG"] == "1"
    assert ready["STATUS"] == "running; last: tabby 0.81"

    # Results at 8 fps for 6 s: pings at most every 2 s (half of WATCHDOG_USEC), so 3 of them.
    for _ in range(48):
        clock.now += 0.125
        notifier.publish_result(_result())
    pings = receiver.messages()
    assert [m.get("WATCHDOG") for m in pings] == ["1", "1", "1"]
    assert all("READY" not in m for m in pings)

    # Stats on their timer are no proof of life: with no results for 10 s, no ping at all.
    notifier.publish_stats({"type": "stats", "fps": 9.87})
    clock.now += 10.0
    notifier.publish_stats({"type": "stats", "fps": 0.0})
    assert receiver.messages() == []

    notifier.publish_result(_result("goldfish", 0.5))
    (ping,) = receiver.messages()
    assert ping == {"WATCHDOG": "1", "STATUS": "0.0 fps; last: goldfish 0.50"}

    notifier.close()
    notifier.close()  # once only
    (stopping,) = receiver.messages()
    assert stopping["STOPPING"] == "1"
    assert notifier.counters() == {"sent": 6, "failed": 0, "watchdog": 5}


def test_reload_is_announced_and_ready_comes_again_with_the_next_result(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = notify.SystemdNotifier(receiver.address, watchdog_s=30.0, clock=clock)
    notifier.publish_result(_result())
    notifier.reloading()
    clock.now += 0.5
    notifier.publish_result(_result("goldfish"))
    ready, reloading, ready_again = receiver.messages()
    assert ready["READY"] == "1" and ready_again["READY"] == "1"
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert ready_again["STATUS"].endswith("last: goldfish 0.81")
    notifier.close()
    receiver.messages()


def test_without_watchdog_only_ready_is_sent(receiver: Receiver) -> None:
    clock = FakeClock()
    notifier = notify.SystemdNotifier(receiver.address, watchdog_s=None, clock=clock)
    for _ in range(100):
        clock.now += 1.0
        notifier.publish_result(_result())
    notifier.close()
    ready, stopping = receiver.messages()
    assert ready["READY"] == "1" and "WATCHDOG" not in ready
    assert stopping["STOPPING"] == "1"


def test_detection_status() -> None:
    record = {
        "detections": [
            {"id": 1, "label": "person", "score": 0.9},
            {"id": 1, "label": "person", "score": 0.8},
            {"id": 17, "label": "cat", "score": 0.6},
        ]
    }
    assert notify.describe_result(record) == "2 person, 1 cat"
    assert notify.describe_result({"detections": []}) == "no detections"
    assert notify.describe_result({"classes": []}) == "no class above threshold"


def test_create_reads_the_environment(receiver: Receiver) -> None:
    notifier = notify.create({"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "6000000"})
    assert isinstance(notifier, notify.SystemdNotifier)
    assert notifier.watchdog_s == 6.0
    notifier.publish_result(_result())
    assert receiver.messages()[0]["READY"] == "1"
    notifier.close()


def test_max_fps_slower_than_the_watchdog_warns(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    env = {"NOTIFY_SOCKET": receiver.address, "WATCHDOG_USEC": "30000000"}
    notify.create(env, max_fps=0.05).close()
    assert "raise WatchdogSec= (systemctl edit) to more than 40 s" in caplog.text
    caplog.clear()
    notify.create(env, max_fps=1.0).close()
    assert "WatchdogSec" not in caplog.text


def test_a_missing_socket_never_stops_the_camera(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = notify.SystemdNotifier(str(tmp_path / "gone"), watchdog_s=1.0)
    notifier.publish_result(_result())
    notifier.publish_result(_result())
    notifier.close()
    assert notifier.counters()["failed"] == 2
    assert caplog.text.count("cannot notify systemd") == 1


def test_unsupported_address_falls_back_to_no_op(caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(notify.create({"NOTIFY_SOCKET": "vsock:2:99"}), notify.NullNotifier)
    assert "not notifying systemd" in caplog.text


# --- end to end: a real `edgekit run` under a fake systemd ---------------------------------------------------


class StallingStream:
    """An HTTP server that trickles the first part of a real video, then stops sending and holds the connection.

    OpenCV (FFmpeg) reads it as a network camera: frames flow while bytes arrive, then every read blocks, like a
    camera whose cable came loose. Later connections (the source reopening) get headers and nothing else.
    """

    def __init__(self, video: Path, seconds: float = 4.0, fraction: float = 0.5) -> None:
        self.data = video.read_bytes()
        self.sent_all_at: float | None = None
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            requests = 0

            def do_GET(self) -> None:
                Handler.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(outer.data)))
                self.end_headers()
                if Handler.requests == 1:
                    part = outer.data[: int(len(outer.data) * fraction)]
                    step = max(1, len(part) // 30)
                    for start in range(0, len(part), step):
                        self.wfile.write(part[start : start + step])
                        self.wfile.flush()
                        time.sleep(seconds / 30)
                    outer.sent_all_at = time.monotonic()
                outer.release.wait(60)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam.avi"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_real_run_notifies_ready_watchdog_stops_on_stall_and_stopping_on_sigterm(
    classifier_dir: Path, video: Path, tmp_path: Path
) -> None:
    receiver = Receiver(f"@edgekit-e2e-{os.getpid()}")
    receiver.sock.settimeout(0.2)
    stream = StallingStream(video)
    watchdog_s = 2.0
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "LISTEN_FDS")}
    env.update(NOTIFY_SOCKET=receiver.address, WATCHDOG_USEC=str(int(watchdog_s * 1e6)), PYTHONPATH=str(REPO))
    results = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "edgekit", "run", "--model", str(classifier_dir), "--source", stream.url]
    command += ["--stats-interval", "1", "--max-fps", "20"]
    with results.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
    received: list[tuple[float, dict[str, str]]] = []

    def collect(until: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            try:
                data = receiver.sock.recv(4096)
            except TimeoutError:
                continue
            received.append((time.monotonic(), dict(line.split("=", 1) for line in data.decode().split("\n"))))

    try:
        # Frames flow for ~4 s, then the stream stalls; watch until 5 s after the last byte went out.
        collect(lambda: stream.sent_all_at is not None and time.monotonic() > stream.sent_all_at + 5.0, 60)
        assert stream.sent_all_at is not None, "the stream never finished sending"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""

        kinds = [next(iter(m)) for _, m in received]
        assert kinds[0] == "READY"  # nothing before the first result
        pings = [t for t, m in received if m.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, received  # READY carries the first ping, then about one per second
        # Once frames stop, pings stop within the watchdog interval: systemd then sees a whole WatchdogSec without
        # one and restarts the service. (The stream source itself gives up on the dead connection after 5 s and
        # hands over the frames FFmpeg still held, which is why a late ping may follow; systemd would have acted.)
        flowing = [t for t in pings if t <= stream.sent_all_at + watchdog_s]
        later = [t for t in pings if t > stream.sent_all_at + watchdog_s]
        assert flowing and (not later or later[0] - flowing[-1] > watchdog_s), (flowing, later)
        gaps = [b - a for a, b in itertools.pairwise(flowing)]
        assert all(0.9 <= gap <= watchdog_s for gap in gaps), gaps  # rate-limited to half the timeout
        statuses = [m["STATUS"] for _, m in received if "STATUS" in m]
        assert any(re.fullmatch(r"\d+\.\d fps; last: class_\d \d\.\d\d", s) for s in statuses), statuses
        results_before = [line for line in results.read_text().splitlines() if '"type":"result"' in line]
        assert len(results_before) >= 10  # results really flowed before the stall

        proc.send_signal(signal.SIGTERM)
        collect(lambda: any("STOPPING" in m for _, m in received), 15)
        assert any(m.get("STOPPING") == "1" for _, m in received)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        stream.close()
        receiver.sock.close()
