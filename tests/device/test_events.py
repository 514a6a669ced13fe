"""The event stage on result records as the pipeline hands them over: N-of-M, T-seconds end, ids through a
crossing, zones with inertia and loitering, filters, masks, stationary, and the sinks' routing of event records.

The records here are written by the tests (so each frame says exactly what was detected); the stage, tracker,
Kalman filter and assignment are the product's. End to end with a real detector: tests/device/test_events_run.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.config import Config, EventsConfig, FilterConfig, ObjectsConfig, TrackingConfig, ZoneConfig
from edgekit.device.events.spec import build_spec
from edgekit.device.events.stage import DetectionEvents
from edgekit.device.pipeline import ChangeFilter
from edgekit.device.sinks.stdout import StdoutSink
from edgekit.device.sources.base import Frame
from edgekit.errors import ConfigError
from edgekit.model.preprocess import Geometry

H, W = 240, 320
GEOMETRY = Geometry((H, W), (160, 160), (0, 0, W, H), (0, 0, 160, 160))
LABELS = ["circle", "square", "triangle"]
FPS = 10.0

Det = tuple[str, float, tuple[float, float, float, float]]  # label, score, normalised (xmin, ymin, xmax, ymax)


def stage(**tables: Any) -> DetectionEvents:
    spec = build_spec(Config(**tables), LABELS, "shapes.tflite", "edgekit.toml")
    assert spec is not None
    return DetectionEvents(spec)


def record(dets: Sequence[Det]) -> dict[str, Any]:
    return {
        "type": "result",
        "camera": "yard",
        "detections": [
            {
                "id": LABELS.index(label),
                "label": label,
                "score": score,
                "box": {"xmin": b[0] * W, "ymin": b[1] * H, "xmax": b[2] * W, "ymax": b[3] * H},
                "box_norm": {"xmin": b[0], "ymin": b[1], "xmax": b[2], "ymax": b[3]},
            }
            for label, score, b in dets
        ],
    }


def feed(s: DetectionEvents, frames: Sequence[Sequence[Det]], start: int = 0) -> list[tuple[int, dict[str, Any]]]:
    """Each frame's detections through the stage at 10 fps: (frame index, event record) in order, then the
    records of the frames as the stage left them in `feed.records`."""
    out = []
    feed.records = []  # type: ignore[attr-defined]
    for i, dets in enumerate(frames, start=start):
        rec = record(dets)
        frame = Frame(np.empty((0, 0, 3), np.uint8), i, i / FPS, i / FPS)
        out += [(i, e) for e in s.observe(rec, frame, GEOMETRY)]
        feed.records.append(rec)  # type: ignore[attr-defined]
    return out


def box_at(x: float, y: float, side: float = 0.2) -> tuple[float, float, float, float]:
    return (x - side / 2, y - side / 2, x + side / 2, y + side / 2)


def test_new_after_n_of_m_frames_and_a_flicker_makes_no_event() -> None:
    s = stage()  # min_hits 3 of window 5
    b = box_at(0.5, 0.5)
    seen = [[("circle", 0.9, b)], [], [("circle", 0.9, b)], [], [("circle", 0.9, b)], [("circle", 0.9, b)]]
    events = feed(s, seen)
    assert [(i, e["event"]) for i, e in events] == [(4, "new")]  # the third sighting in five frames
    ids = {d["track_id"] for r in feed.records for d in r["detections"]}  # type: ignore[attr-defined]
    assert len(ids) == 1 and None not in ids  # one object, one id, through the misses
    flicker = [[("square", 0.9, box_at(0.2, 0.2))], [], [], [], [("square", 0.9, box_at(0.2, 0.2))], [], []]
    assert feed(stage(), flicker) == []


def test_end_comes_t_seconds_after_the_last_sighting_with_that_time_as_end() -> None:
    s = stage(tracking=TrackingConfig(end_after=1.5))
    b = box_at(0.5, 0.5)
    events = feed(s, [[("circle", 0.9, b)]] * 10 + [[]] * 20)
    assert [(i, e["event"]) for i, e in events] == [(2, "new"), (24, "end")]  # last seen at 0.9 s; 2.4 s >= 0.9 + 1.5
    new, end = events[0][1], events[1][1]
    assert end["id"] == new["id"] and end["start"] == new["start"] == 0.0 and end["end"] == 0.9
    assert new["end"] is None and new["track_id"] == end["track_id"]
    assert set(new) == {
        "type", "event", "id", "camera", "label", "start", "end", "score", "top_score", "box", "entered_zones",
        "current_zones", "stationary", "has_snapshot", "track_id",
    }  # fmt: skip
    assert new["camera"] == "yard" and new["box"] == {"xmin": 128.0, "ymin": 96.0, "xmax": 192.0, "ymax": 144.0}
    id_start, _, suffix = new["id"].partition("-")
    assert float(id_start) == 0.0 and len(suffix) == 6 and int(suffix, 16) >= 0


def test_two_objects_crossing_keep_their_ids() -> None:
    s = stage()
    frames = []
    for i in range(40):
        a = box_at(0.15 + 0.7 * i / 39, 0.5)  # left to right
        b = box_at(0.85 - 0.7 * i / 39, 0.55)  # right to left, overlapping it mid-way
        frames.append([("circle", 0.9, a), ("square", 0.8, b)])
    feed(s, frames)
    records = feed.records  # type: ignore[attr-defined]
    first = {d["label"]: d["track_id"] for d in records[0]["detections"]}
    for rec in records:
        assert {d["label"]: d["track_id"] for d in rec["detections"]} == first
    assert len(set(first.values())) == 2


def test_zone_counts_after_inertia_and_entered_zones_stay_after_leaving() -> None:
    zones = {
        "right": ZoneConfig(coordinates=[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]], inertia=3),
        "squares_only": ZoneConfig(coordinates=[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], labels=["square"]),
    }
    s = stage(zones=zones, events=EventsConfig(score_step=1.0))
    # The bottom centre decides: it goes right across x = 0.5, then back left.
    xs = [0.3 + 0.02 * i for i in range(20)] + [0.68 - 0.04 * i for i in range(1, 10)]
    events = feed(s, [[("circle", 0.9, box_at(x, 0.5))] for x in xs])
    said = [(i, e["event"], e["current_zones"], e["entered_zones"]) for i, e in events]
    first_inside = next(i for i, x in enumerate(xs) if x >= 0.5)
    first_out = next(i for i, x in enumerate(xs) if i > first_inside and x < 0.5)
    assert said == [
        (2, "new", [], []),
        (first_inside + 2, "update", ["right"], ["right"]),  # the third frame inside
        (first_out, "update", [], ["right"]),
    ]
    assert all("squares_only" not in e["entered_zones"] for _, e in events)  # a circle never counts there


def test_loitering_needs_that_long_inside() -> None:
    zones = {"door": ZoneConfig(coordinates=[[0, 0], [320, 0], [320, 240], [0, 240]], inertia=1, loitering=2.0)}
    quiet = EventsConfig(score_step=1.0, stationary_frames=1000)
    events = feed(stage(zones=zones, events=quiet), [[("circle", 0.9, box_at(0.5, 0.5))]] * 30)
    # Zone time counts from the frame the object is confirmed (frame 2, 0.2 s): inside from 2.2 s on.
    assert [(i, e["event"], e["current_zones"]) for i, e in events] == [(2, "new", []), (22, "update", ["door"])]


def test_pixel_and_normalised_polygons_are_the_same_zone() -> None:
    def run(points: list[list[float]]) -> list[Any]:
        zones = {"z": ZoneConfig(coordinates=points, inertia=1)}
        frames = [[("circle", 0.9, box_at(0.1 + 0.03 * i, 0.5))] for i in range(25)]
        return [
            (i, e["current_zones"]) for i, e in feed(stage(zones=zones, events=EventsConfig(score_step=1.0)), frames)
        ]

    norm = run([[0.4, 0.0], [0.7, 0.0], [0.7, 1.0], [0.4, 1.0]])
    assert norm == run([[128, 0], [224, 0], [224, 240], [128, 240]])
    assert [z for _, z in norm] == [[], ["z"], []]


def test_filters_and_masks_leave_detections_untracked() -> None:
    objects = ObjectsConfig(
        mask=[[[0.0, 0.0], [0.3, 0.0], [0.3, 1.0], [0.0, 1.0]]],  # the left strip, every label
        filters={"square": FilterConfig(min_score=0.7, max_area=0.05), "triangle": FilterConfig(min_area=0.1)},
    )
    s = stage(objects=objects)
    dets = [
        ("circle", 0.9, box_at(0.15, 0.5)),  # masked
        ("circle", 0.4, box_at(0.6, 0.3)),  # below tracking.min_score 0.5
        ("square", 0.65, box_at(0.8, 0.3, 0.1)),  # below its label's 0.7
        ("square", 0.9, box_at(0.8, 0.7, 0.3)),  # area 0.09 > 0.05
        ("triangle", 0.9, box_at(0.5, 0.7, 0.2)),  # area 0.04 < 0.1
        ("circle", 0.9, box_at(0.6, 0.7)),  # the one that counts
    ]
    events = feed(s, [dets] * 5)
    rec = feed.records[-1]  # type: ignore[attr-defined]
    assert len(rec["detections"]) == 6  # the record keeps what the detector saw
    assert [d["track_id"] is None for d in rec["detections"]] == [True] * 5 + [False]
    assert [e["event"] for _, e in events] == ["new"] and events[0][1]["label"] == "circle"


def test_stationary_after_it_stops_and_not_when_it_moves_again() -> None:
    s = stage(events=EventsConfig(stationary_frames=5, score_step=1.0))
    xs = [0.1 + 0.05 * i for i in range(10)] + [0.55] * 10 + [0.55 + 0.05 * i for i in range(1, 8)]
    events = feed(s, [[("circle", 0.9, box_at(x, 0.5))] for x in xs])
    assert [(i, e["event"], e["stationary"]) for i, e in events] == [
        (2, "new", False),
        (14, "update", True),  # five frames after it stopped at frame 9
        (20, "update", False),  # the first frame that moved off (IoU with the stop < 0.8)
    ]


def test_score_updates_follow_the_top_score_by_steps_and_finish_ends_what_is_open() -> None:
    s = stage(events=EventsConfig(score_step=0.1))
    scores = [0.55, 0.56, 0.6, 0.62, 0.7, 0.68, 0.9, 0.5, 0.95]
    events = feed(s, [[("circle", sc, box_at(0.5, 0.5))] for sc in scores])
    assert [(e["event"], e["top_score"]) for _, e in events] == [("new", 0.6), ("update", 0.7), ("update", 0.9)]
    (end,) = s.finish()
    assert end["event"] == "end" and end["end"] == 0.8 and end["top_score"] == 0.95 and end["current_zones"] == []


def test_events_off_still_gives_track_ids() -> None:
    s = stage(events=EventsConfig(enabled=False))
    assert feed(s, [[("circle", 0.9, box_at(0.5, 0.5))]] * 5) == []
    assert feed.records[-1]["detections"][0]["track_id"] == 1  # type: ignore[attr-defined]
    assert build_spec(Config(tracking=TrackingConfig(enabled=False)), LABELS, "m", "c") is None


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"zones": {"d": ZoneConfig(coordinates=[[0, 0], [1, 1]])}}, "key 'zones.d.coordinates' must be a polygon"),
        ({"zones": {"d": ZoneConfig(coordinates=[[0, 0], [1, 0], [1]])}}, "key 'zones.d.coordinates[2]' must be an"),
        ({"zones": {"d": ZoneConfig(coordinates=[[0, 0], [1, 0], [-1, 1]])}}, "coordinates[2]' must not be negative"),
        ({"zones": {"d": ZoneConfig(coordinates=[[0, 0], [0.5, 0.5], [1, 1]])}}, "encloses no area"),
        (
            {"zones": {"d": ZoneConfig(coordinates=[[0, 0], [1, 1], [1, 0.2], [0, 1]])}},
            "key 'zones.d.coordinates': edges 0-1 and 2-3 cross",
        ),
        (
            {"zones": {"d": ZoneConfig(coordinates=[[0, 0], [1, 0], [1, 1]], labels=["unicorn"])}},
            "key 'zones.d.labels[0]': 'unicorn' is not a label of shapes.tflite (labels: circle, square, triangle)",
        ),
        ({"objects": ObjectsConfig(filters={"dog": FilterConfig()})}, "key 'objects.filters.dog': 'dog' is not"),
        (
            {"objects": ObjectsConfig(filters={"circle": FilterConfig(min_area=0.5, max_area=0.2)})},
            "key 'objects.filters.circle.min_area' (0.5) is above max_area (0.2)",
        ),
        ({"objects": ObjectsConfig(mask=[[[0, 0], [1, 0]]])}, "key 'objects.mask[0]' must be a polygon"),
        ({"tracking": TrackingConfig(min_hits=4, window=3)}, "key 'tracking.window' (3) must be at least"),
    ],
)
def test_bad_tables_are_config_errors_naming_the_key(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_spec(Config(**tables), LABELS, "shapes.tflite", "edgekit.toml")
    assert info.value.message.startswith("edgekit.toml: ") and message in info.value.message


def test_change_filter_and_stdout_pass_event_records(tmp_path: Path) -> None:
    stream = io.StringIO()
    sink = ChangeFilter(StdoutSink(stream))
    result = {"type": "result", "detections": [{"id": 0}]}
    event = {"type": "event", "event": "new", "id": "1-abcdef", "camera": "yard"}
    for rec in (result, event, result, event):
        sink.publish_result(rec)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [result, event, event]  # the repeated result is suppressed, events never are


def test_snapshot_crop_has_the_margin_and_the_box_and_the_folder_keeps_under_its_cap(tmp_path: Path) -> None:
    import os

    import cv2

    from edgekit.device.events.snapshots import SnapshotFolder, render
    from edgekit.device.events.spec import SnapshotSpec

    image = np.full((240, 320, 3), 200, np.uint8)
    box = {"xmin": 100.0, "ymin": 80.0, "xmax": 180.0, "ymax": 160.0}
    crop = cv2.imdecode(np.frombuffer(render(image, box, 0.25, 95), np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape[:2] == (121, 121)  # 80 px and 20 px a side
    b, g, r = (int(v) for v in crop[60, 20])  # on the box's left edge
    assert r > 150 and r > b + 60 and r > g + 60  # drawn in red
    assert tuple(int(v) for v in crop[60, 60]) == pytest.approx((200, 200, 200), abs=3)  # inside untouched
    folder = SnapshotFolder(SnapshotSpec(tmp_path / "snaps", 2500, 0.25, 80))
    for i in range(4):
        path = folder.save(f"cam-circle-{i}.jpg", bytes(1000))
        os.utime(path, ns=(i * 10**9, i * 10**9))
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == ["cam-circle-2.jpg", "cam-circle-3.jpg"]
