"""MQTT sink targets: >= 2,000 results/s at QoS 1 with flat memory, < 3% of a 30 fps frame, 0 loss over restarts.

Runs a real mosquitto on a loopback port (the test suite's fixture class). Prints a table; exits 1 on a missed
target. `python benchmarks/mqtt.py [--quick]`.

Loss is measured end to end (a persistent QoS-1 subscriber) across graceful broker restarts. Across SIGKILLs
the sink's target is that the broker acknowledged every record; mosquitto acknowledges before it forwards or
saves, so a kill can lose a few it had accepted: that is reported, not counted against the sink.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.targets import print_targets  # noqa: E402
from edgekit.config import load_config  # noqa: E402
from edgekit.device.sinks.mqtt import MqttSink, create  # noqa: E402
from edgekit.plan import mqtt_spec  # noqa: E402
from tests.device.mqtt_broker import Broker, Subscriber  # noqa: E402

FRAME_BUDGET_S = 1 / 30
PIPELINE_BUSY_S = 0.020
FAST = {"mqtt.reconnect_min": 0.05, "mqtt.reconnect_max": 0.3}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def record(seq: int) -> dict[str, Any]:
    """A realistic classification result (top-3, timings): ~450 bytes of JSON."""
    return {
        "type": "result",
        "seq": seq,
        "ts": time.time(),
        "frame": seq,
        "source": "/dev/video0",
        "camera": "door",
        "model": "mobilenet_v2_1.0_224_int8",
        "task": "classify",
        "classes": [
            {"id": 409, "label": "analog clock", "score": 0.8125},
            {"id": 892, "label": "wall clock", "score": 0.0703},
            {"id": 530, "label": "digital clock", "score": 0.0312},
        ],
        "timing_ms": {"capture": 1.2, "preprocess": 0.8, "inference": 18.5, "postprocess": 0.1, "total": 20.6},
    }


def sink_for(broker: Broker, **overrides: Any) -> MqttSink:
    cfg = load_config(None, {**FAST, **{f"mqtt.{k}": v for k, v in overrides.items()}})
    return create(mqtt_spec(f"mqtt://127.0.0.1:{broker.port}/bench", cfg))


def wait_settled(sink: MqttSink, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sink.counters()["queued"] and time.monotonic() < deadline:
        time.sleep(0.005)


def capacity(broker: Broker, count: int, **overrides: Any) -> float:
    """Results/s from the first publish until the broker acknowledged the last one (an unpaced burst)."""
    with sink_for(broker, queue_size=count, **overrides) as sink:
        start = time.perf_counter()
        for seq in range(count):
            sink.publish_result(record(seq))
        wait_settled(sink)
        elapsed = time.perf_counter() - start
        assert sink.counters()["sent"] == count, sink.counters()
    return count / elapsed


def sustained(broker: Broker, rate: float, seconds: float) -> dict[str, float]:
    """Publish at `rate` for `seconds`; report the delivered rate, the deepest queue and RSS growth."""
    with sink_for(broker) as sink:
        total = int(rate * seconds)
        rss: list[float] = []
        depth = 0
        start = time.perf_counter()
        for seq in range(total):
            target = start + seq / rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(target - now, 0.001))
            sink.publish_result(record(seq))
            if seq % 250 == 0:
                rss.append(rss_mb())
                depth = max(depth, int(sink.counters()["queued"]))
        wait_settled(sink)
        elapsed = time.perf_counter() - start
        counters = sink.counters()
    warm = rss[len(rss) // 5 :]  # after the first fifth: allocator and queue warm
    return {
        "rate": counters["sent"] / elapsed,
        "dropped": counters["dropped"],
        "max_queued": depth,
        "rss_growth_mb": max(warm) - warm[0],
        "rss_mb": warm[-1],
    }


def _thread_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds used so far by this process's threads whose names start with one of `names`."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith(names) and thread.ident is not None:
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


def frame_cost(broker: Broker, frames: int, **overrides: Any) -> tuple[float, float, float, float]:
    """Publish one result per frame at 30 fps; attribute CPU to the sink exactly.

    Returns:
        Per frame, in seconds: the frame loop's CPU inside publish_result; all the sink's CPU (that, plus paho's
        network thread and the sender thread); the mean and p99 wall time of a publish_result call (which on a
        loaded machine also counts the time the scheduler gave the core to other processes).
    """
    sink = sink_for(broker, **overrides)
    threads = ("paho-mqtt-client-", "edgekit-mqtt-sender")
    calls: list[float] = []
    caller_cpu = 0.0
    background0 = _thread_cpu(threads)
    start = time.perf_counter()
    image = np.zeros((224, 224, 3), np.uint8)
    for seq in range(frames):
        target = start + seq * FRAME_BUDGET_S
        while (now := time.perf_counter()) < target:
            time.sleep(min(target - now, 0.002))
        # A stand-in for capture + preprocess + inference: a pipeline at 30 fps keeps a core busy for most of
        # each frame, and code that runs right after that costs what it costs on a device, not what it costs on
        # a core woken from idle (here up to 5x more).
        busy_until = time.perf_counter() + PIPELINE_BUSY_S
        while time.perf_counter() < busy_until:
            image = (image + 1) % 255
        wall, cpu = time.perf_counter(), time.thread_time()
        sink.publish_result(record(seq))
        caller_cpu += time.thread_time() - cpu
        calls.append(time.perf_counter() - wall)
    wait_settled(sink)
    background = _thread_cpu(threads) - background0
    sink.close()
    return (
        caller_cpu / frames,
        (caller_cpu + background) / frames,
        statistics.fmean(calls),
        statistics.quantiles(calls, n=100)[98],
    )


def restarts(folder: Path, count: int, restarts: int, kill: bool) -> dict[str, float]:
    """Publish `count` results at ~1,000/s while the broker is stopped (SIGTERM) or killed (SIGKILL) and restarted."""
    broker = Broker(folder, persistence=True).start()
    try:
        sub = Subscriber(broker.port, "bench/+/result", client_id="bench-watcher")
        broker.save_sessions(sub)  # the subscription must survive the first SIGKILL
        sink = sink_for(broker)
        at = {count * (i + 1) // (restarts + 1) for i in range(restarts)}
        start = time.perf_counter()
        for seq in range(count):
            while time.perf_counter() < start + seq / 1000:
                time.sleep(0.0005)
            sink.publish_result(record(seq))
            if seq in at:
                if kill:
                    broker.kill()
                else:
                    broker.stop()
                time.sleep(0.3)
                broker.start()
        wait_settled(sink)
        sub.wait_for(lambda: {p["seq"] for p in sub.payloads()} >= set(range(count)), timeout=30)
        seen = [p["seq"] for p in sub.payloads()]
        counters = sink.counters()
        sink.close()
        sub.close()
    finally:
        broker.stop()
    return {
        "unacknowledged": count - counters["sent"] + counters["dropped"],
        "missing": len(set(range(count)) - set(seen)),
        "duplicates": len(seen) - len(set(seen)),
        "reconnects": counters["reconnects"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (a smoke test of the benchmark)")
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    rows: list[tuple[str, str, str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker").start()
        try:
            burst = capacity(broker, int(20000 * scale))
            rows.append(("capacity, QoS 1, burst", f"{burst:,.0f} results/s", ">= 2,000", burst >= 2000))
            spooled = capacity(broker, int(10000 * scale), queue_dir=str(Path(tmp) / "spool"))
            rows.append(("capacity, QoS 1, queue_dir", f"{spooled:,.0f} results/s", ">= 2,000", spooled >= 2000))
            s = sustained(broker, 2000, 10 * scale)
            ok = s["rate"] >= 1950 and s["dropped"] == 0 and s["max_queued"] < 2000
            rows.append(("sustained 2,000/s, delivered", f"{s['rate']:,.0f} results/s", ">= 2,000 (±2.5%)", ok))
            rows.append(
                (
                    "sustained: deepest queue",
                    f"{s['max_queued']:.0f} records",
                    "< 1 s of results",
                    s["max_queued"] < 2000,
                )
            )
            grew = s["rss_growth_mb"]
            rows.append(("sustained: RSS growth", f"{grew:+.1f} MB (RSS {s['rss_mb']:.0f} MB)", "< 5 MB", grew < 5))
            frames = int(300 * scale)
            for label, overrides in (("memory queue", {}), ("queue_dir", {"queue_dir": str(Path(tmp) / "s30")})):
                caller, cpu, mean, p99 = frame_cost(broker, frames, **overrides)
                # The pipeline's time is the frame loop's: the CPU publish_result takes from each 33.3 ms frame.
                share = caller / FRAME_BUDGET_S
                rows.append(
                    (f"30 fps, {label}: frame loop CPU in sink", f"{share:.2%} of 33.3 ms", "< 3%", share < 0.03)
                )
                rows.append(
                    ("  publish_result wall mean / p99", f"{mean * 1e6:,.0f} / {p99 * 1e6:,.0f} µs", "(reported)", True)
                )
                rows.append(
                    ("  CPU incl. network threads", f"{cpu / FRAME_BUDGET_S:.2%} of a frame", "(reported)", True)
                )
        finally:
            broker.stop()
        n = int(6000 * scale)
        stop = restarts(Path(tmp) / "stop", n, 3, kill=False)
        ok = stop["missing"] == 0 and stop["unacknowledged"] == 0
        rows.append(("3 broker restarts (SIGTERM): lost", f"{stop['missing']:.0f} of {n}", "0", ok))
        rows.append(("  duplicates (at least once)", f"{stop['duplicates']:.0f}", "(reported)", True))
        kill = restarts(Path(tmp) / "kill", n, 3, kill=True)
        ok = kill["unacknowledged"] == 0
        rows.append(("3 broker kills (SIGKILL): never acked", f"{kill['unacknowledged']:.0f} of {n}", "0", ok))
        rows.append(("  lost by mosquitto after its ack", f"{kill['missing']:.0f}", "(reported)", True))
        rows.append(("  duplicates (at least once)", f"{kill['duplicates']:.0f}", "(reported)", True))
    return print_targets(rows, value_width=28, target_width=18)


if __name__ == "__main__":
    sys.exit(main())
