"""`edgekit run` with a real detector on a generated video, end to end: tracking and events on by default, and
a real mosquitto that gets each object's exact new/update/end sequence with the zone it crossed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import dump_toml
from tests.conftest import REPO
from tests.device.moving_scenes import Mover, render, write_video
from tests.device.mqtt_broker import Broker, Subscriber, retained, retained_becomes

FPS = 10.0


def crossing_video(tmp_path: Path, frames: int = 65) -> Path:
    """A circle going right along the top and a square going left along the bottom, both through the middle
    third of the frame in 4 s, then empty background (they leave by vanishing, fully visible until then)."""
    movers = [
        Mover("circle", 0.3, ((0, 0.2, 0.3), (40, 0.8, 0.3)), seed=1),
        Mover("square", 0.3, ((0, 0.8, 0.72), (40, 0.2, 0.72)), seed=2),
    ]
    return write_video(render(movers, frames, background=3), tmp_path / "crossing.avi", FPS)


def test_detector_run_prints_events_with_no_extra_options(shape_detector_dir: Path, tmp_path: Path) -> None:
    video = crossing_video(tmp_path)
    result = CliRunner().invoke(
        cli, ["run", "--model", str(shape_detector_dir), "--source", str(video), "--stats-interval", "0"]
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    events = [r for r in records if r["type"] == "event"]
    by_label: dict[str, list[str]] = {}
    for e in events:
        by_label.setdefault(e["label"], []).append(e["event"])
    assert sorted(by_label) == ["circle", "square"]
    for kinds in by_label.values():
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == kinds.count("end") == 1
    results = [r for r in records if r["type"] == "result"]
    ids = {d["track_id"] for r in results for d in r["detections"] if d["track_id"] is not None}
    assert ids == {e["track_id"] for e in events}


def test_mqtt_gets_each_objects_exact_event_sequence_through_the_zone(
    mosquitto: Any, shape_detector_dir: Path, tmp_path: Path
) -> None:
    broker: Broker = mosquitto()
    sub = Subscriber(broker.port, "cams/#", client_id="events-watcher")
    video = crossing_video(tmp_path)
    config = tmp_path / "edgekit.toml"
    config.write_text(
        dump_toml(
            {
                "run": {"camera": "yard", "stats_interval": 0.0, "realtime": True},
                "mqtt": {"homeassistant": True, "device_id": "pi"},
                "snapshots": {"enabled": True, "folder": str(tmp_path / "snaps"), "margin": 0.25},
                "tracking": {"end_after": 1.0},
                # Only zones make updates here: no score steps, no stopping.
                "events": {"score_step": 1.0, "stationary_frames": 1000},
                "zones": {"middle": {"coordinates": [[0.4, 0.0], [0.6, 0.0], [0.6, 1.0], [0.4, 1.0]], "inertia": 2}},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", "run", "-c", str(config), "--model", str(shape_detector_dir), "--source",
         str(video), "--sink", f"mqtt://127.0.0.1:{broker.port}/cams"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sub.wait_for(lambda: len(sub.payloads("cams/yard/events")) >= 8, 10)
    sub.close()
    events = sub.payloads("cams/yard/events")
    assert all(e["type"] == "event" and e["camera"] == "yard" for e in events)
    assert not any(r["type"] == "event" for r in sub.payloads("cams/yard/result"))
    per_object: dict[str, list[tuple[str, list[str], list[str]]]] = {}
    for e in events:
        per_object.setdefault(e["id"], []).append((e["event"], e["current_zones"], e["entered_zones"]))
    assert len(per_object) == 2
    for said in per_object.values():
        assert said == [
            ("new", [], []),
            ("update", ["middle"], ["middle"]),
            ("update", [], ["middle"]),
            ("end", [], ["middle"]),
        ]
    ends = [e for e in events if e["event"] == "end"]
    assert sorted(e["label"] for e in ends) == ["circle", "square"]
    assert all(e["has_snapshot"] for e in ends) and not any(e["has_snapshot"] for e in events if e not in ends)
    # Both were last seen at frame 40 (4 s of video, played in real time) and ended a second later, before the
    # video did (6.5 s): the end time is the last sighting, not the moment the end was decided.
    for e in ends:
        assert 3.0 < e["end"] - e["start"] < 4.6

    # One snapshot per object: retained, a JPEG of the object with a margin, and the same file in the folder.
    import cv2
    import numpy as np

    for e in ends:
        topic = f"cams/yard/{e['label']}/snapshot"
        assert len(sub.raw(topic)) == 1
        jpeg = retained(broker.port, topic)
        assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        side = 0.3 * 240  # the movers' size; the detector's box is within a few pixels of it, the crop adds 25% a side
        assert all(1.1 * side <= n <= 2.0 * side for n in image.shape[:2]), image.shape  # not the 320x240 frame
        saved = tmp_path / "snaps" / f"yard-{e['label']}-{e['id']}.jpg"
        assert saved.read_bytes() == jpeg
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted(
        f"yard-{e['label']}-{e['id']}.jpg" for e in ends
    )

    # Home Assistant: per zone and label, occupancy and count from the tracked objects, back to 0 at the end.
    for label in ("circle", "square"):
        topic = f"cams/yard/middle/{label}"
        assert [p for p, _ in sub.raw(topic)] == [b"1", b"0"]  # in once, out once: no per-frame flicker
        assert retained_becomes(broker.port, topic, b"0")
        occupancy = json.loads(
            retained(broker.port, f"homeassistant/binary_sensor/edgekit_pi/yard_middle_{label}_occupancy/config")
        )
        count = json.loads(retained(broker.port, f"homeassistant/sensor/edgekit_pi/yard_middle_{label}_count/config"))
        assert occupancy["state_topic"] == count["state_topic"] == topic
        assert occupancy["device_class"] == "occupancy" and occupancy["availability_topic"] == "cams/status"


def test_preview_page_lists_the_events_with_their_snapshots_in_headless_chromium(
    shape_detector_dir: Path, tmp_path: Path
) -> None:
    import os

    from tests.device.test_http import _free_port, _get, _wait_for, preview_in_chromium

    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    config = tmp_path / "edgekit.toml"
    config.write_text(
        dump_toml(
            {
                "run": {"camera": "yard", "realtime": True},
                "tracking": {"end_after": 1.0},
                "snapshots": {"enabled": True},
            }
        )
    )
    video = crossing_video(tmp_path, frames=150)  # the objects are gone after 4 s; the video plays 15 s
    command = [sys.executable, "-m", "edgekit", "run", "-c", str(config), "--model", str(shape_detector_dir)]
    command += ["--source", str(video), "--sink", "file:" + os.devnull, "--http", f"127.0.0.1:{port}"]
    with preview_in_chromium(command, port) as browser:
        shown = "[...document.querySelectorAll('#events li.event')].map(li => li.textContent)"
        texts = _wait_for(lambda: len(t := browser.evaluate(shown)) == 2 and t, what="two events")
        loaded = (
            "[...document.querySelectorAll('#events img.snapshot')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        _wait_for(lambda: browser.evaluate(loaded) == 2, what="both snapshots shown", timeout=20)
        texts = browser.evaluate(shown)
        assert sorted(t.split(",")[0].split(" ")[0] for t in texts) == ["circle", "square"]
        assert not any("(now)" in t for t in texts)  # both ended
        events = json.loads(_get(base + "api/events")[2])
        assert [e["event"] for e in events] == ["end", "end"] and all(e["has_snapshot"] for e in events)
        status, headers, jpeg = _get(base + events[0]["snapshot"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
        assert _get(base + "api/events/nope/snapshot.jpg")[0] == 404
        assert browser.errors == [], browser.errors
