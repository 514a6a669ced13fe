"""Motion gating (`edgekit.device.motion`) through `edgekit run`, on clips made from the real photos and Megamind.avi.

The clips come from tests/device/motion_clips.py; benchmarks/motion.py gives the figures on longer ones.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.device.motion import MotionDetector, MotionGate, MotionSettings
from tests.device.motion_clips import MovingClip, moving_clip, static_clip

DETECTOR = Path(__file__).resolve().parents[1] / "data" / "ssdlite_shapes_int8.tflite"


@pytest.fixture(scope="module")
def clips(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("motion")
    photo = data_dir / "photos" / "home.jpg"
    labels = root / "shapes.txt"
    labels.write_text("circle\nsquare\ntriangle\n")
    return {
        "still": static_clip(photo, root / "still.avi", frames=72),
        "light": static_clip(photo, root / "light.avi", frames=72, light=True),
        "moving": moving_clip(data_dir / "photos" / "leuvenA.jpg", root / "moving.avi"),
        "labels": labels,
    }


def _run(*args: str) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return {r["frame"]: r for r in records if r["type"] == "result"}, [r for r in records if r["type"] == "stats"]


@pytest.mark.parametrize("clip", ["still", "light"])
def test_a_still_scene_is_inferred_once(clip: str, clips: dict[str, Any], classifier_dir: Path) -> None:
    """Noise, codec artefacts, an exposure drift and a light switch are not motion: only the first frame runs."""
    results, stats = _run("--model", str(classifier_dir), "--source", str(clips[clip]), "--motion")
    assert list(results) == [0]
    assert stats[-1]["frames"] == 1
    assert stats[-1]["motion_skipped"] == 71


def test_without_motion_gating_every_frame_is_inferred(clips: dict[str, Any], classifier_dir: Path) -> None:
    results, stats = _run("--model", str(classifier_dir), "--source", str(clips["still"]))
    assert len(results) == 72
    assert "motion_skipped" not in stats[-1]


def test_keyframes_come_every_interval_on_a_still_scene(clips: dict[str, Any], classifier_dir: Path) -> None:
    """Played at its own 24 fps, a 3 s still clip with a 0.5 s keyframe is inferred about every 12th frame."""
    args = ["--model", str(classifier_dir), "--source", str(clips["still"]), "--realtime"]
    results, stats = _run(*args, "--motion", "--motion-keyframe", "0.5")
    assert 4 <= len(results) <= 8, sorted(results)  # 6 when the pacing is exact; the machine is shared
    gaps = [b - a for a, b in itertools.pairwise(sorted(results))]
    assert min(gaps) >= 10, gaps  # never more often than the interval (12 frames), with a frame of slack
    assert stats[-1]["frames"] + stats[-1]["motion_skipped"] + stats[-1]["dropped"] == 72  # paced: a busy machine drops


def test_gating_keeps_every_result_that_matters_on_a_moving_scene(clips: dict[str, Any]) -> None:
    """With the detector and the gate alone (no tracker asking for every frame): every frame where an object moved
    is inferred, with the records of an ungated run, and on skipped frames the last published detections are what
    the ungated run found, but for its flicker."""
    clip: MovingClip = clips["moving"]
    args = ["--model", str(DETECTOR), "--labels", str(clips["labels"]), "--source", str(clip.path)]
    args += ["--threshold", "0.5", "--no-tracking"]
    ungated, _ = _run(*args)
    gated, stats = _run(*args, "--motion")
    assert len(ungated) == 240
    assert stats[-1]["frames"] == len(gated) and stats[-1]["motion_skipped"] == 240 - len(gated)
    assert len(gated) < 0.75 * len(ungated)  # the empty and the stopped stretches are skipped
    assert all(gated[i]["detections"] == ungated[i]["detections"] for i in gated)
    big = [i for i, n in enumerate(clip.moved) if n >= 2 * MotionSettings().min_area * 640 * 480]
    assert len(big) > 100 and all(i in gated for i in big)
    held, differ = None, []
    for i in sorted(ungated):
        held = gated[i]["detections"] if i in gated else held
        assert held is not None
        if sorted(d["label"] for d in held) != sorted(d["label"] for d in ungated[i]["detections"]):
            differ.append(i)
    # On a still stretch the ungated detector still flickers (a stopped circle scoring 0.50-0.70 drops below the
    # threshold on one frame of codec noise, frame 158); what the gate holds is the scene, so a few frames differ.
    assert all(i not in gated for i in differ) and len(differ) <= 0.05 * (240 - len(gated)), differ
    assert any(ungated[i]["detections"] for i in ungated)  # the detector does see the shapes


def test_gating_changes_no_event_on_a_moving_scene(clips: dict[str, Any]) -> None:
    """With the tracker on (the default for detectors) the gate infers every frame while a track is open, and
    skips only the empty stretches: the events are the same as without gating."""
    clip: MovingClip = clips["moving"]
    args = ["run", "--model", str(DETECTOR), "--labels", str(clips["labels"]), "--source", str(clip.path)]

    def events(*extra: str) -> tuple[list[tuple[Any, ...]], int]:
        result = CliRunner().invoke(cli, [*args, *extra])
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
        skipped = [r for r in records if r["type"] == "stats"][-1].get("motion_skipped", 0)
        kept = [(r["event"], r["label"], r["top_score"], r["stationary"]) for r in records if r["type"] == "event"]
        return kept, skipped

    ungated, _ = events()
    gated, skipped = events("--motion")
    assert ungated and [e[0] for e in ungated].count("new") >= 2  # the detector does track the shapes
    assert gated == ungated
    assert skipped > 0  # the empty stretches are still skipped


def test_real_footage_is_inferred_nearly_every_frame(video: Path, classifier_dir: Path) -> None:
    """Megamind.avi moves almost throughout (a cut from a black first frame, a walking figure, a pan)."""
    results, stats = _run("--model", str(classifier_dir), "--source", str(video), "--motion")
    assert len(results) >= 0.95 * 270
    assert stats[-1]["frames"] + stats[-1]["motion_skipped"] == 270


def test_a_tracked_object_keeps_inference_going(clips: dict[str, Any]) -> None:
    """The gate's busy input (the tracker): while it reports an object, still frames are inferred too."""
    import cv2

    class Tracking:
        active = False

        def has_active_objects(self) -> bool:
            return self.active

    busy = Tracking()
    gate = MotionGate(MotionSettings(keyframe=1e9), busy)
    capture = cv2.VideoCapture(str(clips["still"]))
    decisions = []
    for i in range(40):
        ok, image = capture.read()
        assert ok
        busy.active = 10 <= i < 20
        decisions.append(gate.wants(image, "BGR", float(i)))
    assert [i for i, d in enumerate(decisions) if d] == [0, *range(10, 20)]
    assert gate.skipped == 29


def test_a_frame_from_black_is_motion(video: Path) -> None:
    """Megamind's first frame is black: the gain compensation must not scale the next frames to black too."""
    import cv2

    detector = MotionDetector(MotionSettings())
    capture = cv2.VideoCapture(str(video))
    fractions = [detector.changed(capture.read()[1]) for _ in range(3)]
    assert fractions[0] == 1.0 and fractions[1] > 0.2


def test_stats_stay_on_time_while_every_frame_is_skipped(clips: dict[str, Any], classifier_dir: Path) -> None:
    args = ["--model", str(classifier_dir), "--source", str(clips["still"]), "--realtime", "--stats-interval", "0.5"]
    results, stats = _run(*args, "--motion", "--motion-keyframe", "100")
    assert list(results) == [0]
    assert len(stats) >= 4  # 3 s of video: a record every 0.5 s, and the last one
    assert [s["motion_skipped"] for s in stats] == sorted(s["motion_skipped"] for s in stats)
    assert stats[-1]["motion_skipped"] + stats[-1]["dropped"] == 71


def test_a_moved_camera_is_inferred_once_and_becomes_the_background(
    data_dir: Path, tmp_path: Path, classifier_dir: Path
) -> None:
    photos = data_dir / "photos"
    clip = static_clip(photos / "home.jpg", tmp_path / "cut.avi", frames=48, cut_to=photos / "building.jpg")
    results, stats = _run("--model", str(classifier_dir), "--source", str(clip), "--motion")
    assert list(results) == [0, 24]
    assert stats[-1]["motion_skipped"] == 46
