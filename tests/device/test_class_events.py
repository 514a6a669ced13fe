"""Classification events (`edgekit.device.events.classify`) through `edgekit run`, on sequences of real photos.

Each sequence is a folder of the real photos, each repeated for several frames, with short flickers of another
photo inserted: what a camera sees when something passes for a frame or two.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli

# (photo, frames): photos 2 and 12 share a top class, and so do 8 and 10 (asserted below, from the model itself)
SEQUENCE = [(2, 5), (9, 1), (2, 3), (12, 3), (8, 2), (12, 2), (8, 4), (10, 3)]


@pytest.fixture(scope="module")
def sequence(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("class-events")
    frame = 0
    for index, count in SEQUENCE:
        for _ in range(count):
            shutil.copy(photos[index], folder / f"{frame:03d}{photos[index].suffix}")
            frame += 1
    return folder


def _run(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["run", "--stats-interval", "0", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def test_events_follow_classes_that_hold_not_flickers(classifier_dir: Path, sequence: Path) -> None:
    records = _run("--model", str(classifier_dir), "--source", str(sequence), "--class-events", "3")
    results = [r for r in records if r["type"] == "result"]
    top = [r["classes"][0] for r in results]
    # The premise, from the model: which frames show which class.
    a, b, flicker = top[0]["id"], top[16]["id"], top[5]["id"]
    assert [t["id"] for t in top] == [a] * 5 + [flicker] + [a] * 6 + [b] * 2 + [a] * 2 + [b] * 7
    assert len({a, b, flicker}) == 3
    assert abs(top[9]["score"] - top[0]["score"]) > 0.1  # photo 12 moves the score of a by more than a step
    assert abs(top[20]["score"] - top[16]["score"]) <= 0.1  # photo 10 does not move b's
    ts = [r["ts"] for r in results]

    events = [r for r in records if r["type"] == "event"]
    summary = [(e["event"], e["label"], e["start"], e["end"], e["score"], e["top_score"]) for e in events]
    label_a, label_b = top[0]["label"], top[16]["label"]
    assert summary == [
        ("new", label_a, ts[0], None, top[0]["score"], top[0]["score"]),
        ("update", label_a, ts[0], None, top[9]["score"], top[0]["score"]),
        ("end", label_a, ts[0], ts[16], top[15]["score"], top[0]["score"]),
        ("new", label_b, ts[16], None, top[16]["score"], top[16]["score"]),
        ("end", label_b, ts[16], ts[-1], top[-1]["score"], top[16]["score"]),
    ]
    # Where each event record goes out: right after the frame's result that caused it.
    order = [r["type"] if r["type"] == "result" else r["event"] for r in records]
    # new at frame 2 (a's third), update at 9 (photo 12), end and new at 18 (b's third), end after the last (22)
    expected = ["result"] * 3 + ["new"] + ["result"] * 7 + ["update"] + ["result"] * 9 + ["end", "new"]
    assert order == [*expected, *["result"] * 4, "end"]
    assert events[0]["id"] == events[1]["id"] == events[2]["id"] != events[3]["id"] == events[4]["id"]
    assert re.fullmatch(r"\d+\.\d{3}-[0-9a-f]{6}", events[0]["id"])
    for event in events:
        assert event["camera"] == results[0]["camera"]
        assert event["box"] is None and event["track_id"] is None
        assert event["entered_zones"] == event["current_zones"] == []
        assert event["stationary"] is False and event["has_snapshot"] is False


def test_hold_one_follows_every_change_and_only_changes_passes_events(classifier_dir: Path, sequence: Path) -> None:
    """``--class-events 1``: each change of top class is an event (the flicker too); ``--only-changes`` keeps them."""
    args = ["--model", str(classifier_dir), "--source", str(sequence), "--class-events", "1", "--only-changes"]
    records = _run(*args)
    kinds = [(r["event"], r["label"]) for r in records if r["type"] == "event" and r["event"] != "update"]
    results = [r for r in records if r["type"] == "result"]
    labels = [r["classes"][0]["label"] for r in results]  # only the changes: one per run of a class
    assert labels == [labels[0], labels[1], labels[0], labels[3], labels[0], labels[3]]
    expected = [("new", labels[0])]
    for previous, label in itertools.pairwise(labels):
        expected += [("end", previous), ("new", label)]
    assert kinds == [*expected, ("end", labels[-1])]


def test_without_class_events_there_are_none(classifier_dir: Path, sequence: Path) -> None:
    records = _run("--model", str(classifier_dir), "--source", str(sequence))
    assert {r["type"] for r in records} == {"result"}


def test_frames_the_motion_gate_skips_keep_the_class(classifier_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """A still scene is inferred once, yet its class holds for N frames: the skipped frames did not change."""
    from tests.device.motion_clips import static_clip

    clip = static_clip(data_dir / "photos" / "home.jpg", tmp_path / "still.avi", frames=24)
    records = _run("--model", str(classifier_dir), "--source", str(clip), "--motion", "--class-events", "3")
    assert [r["type"] for r in records] == ["result", "event", "event"]
    result, new, end = records
    assert (new["event"], new["label"], new["start"]) == ("new", result["classes"][0]["label"], result["ts"])
    assert end["event"] == "end" and end["id"] == new["id"] and end["end"] > new["start"]


def test_no_class_above_the_threshold_ends_an_event_and_starts_none(classifier_dir: Path, sequence: Path) -> None:
    """At threshold 0.5, photos 9 and 12 have no class: three frames of photo 12 end the first event, no new one."""
    args = ["--model", str(classifier_dir), "--source", str(sequence), "--class-events", "3", "--threshold", "0.5"]
    records = _run(*args)
    results = [r for r in records if r["type"] == "result"]
    empty = [i for i, r in enumerate(results) if not r["classes"]]
    assert empty == [5, 9, 10, 11, 14, 15]  # the premise: photo 9 once, photo 12 three times then twice
    ts = [r["ts"] for r in results]
    label_a, label_b = results[0]["classes"][0]["label"], results[16]["classes"][0]["label"]
    events = [(e["event"], e["label"], e["start"], e["end"]) for e in records if e["type"] == "event"]
    assert events == [
        ("new", label_a, ts[0], None),
        ("end", label_a, ts[0], ts[9]),
        ("new", label_b, ts[16], None),
        ("end", label_b, ts[16], ts[-1]),
    ]
