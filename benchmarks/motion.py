"""Motion gating targets: <= 5% of frames inferred on still scenes; on moving ones no result that matters changes.

`python benchmarks/motion.py`. Prints a table; exits 1 on a missed target. Every figure is a fraction of the same
run's frames, or a ratio against an invoke timed in the same process.

Clips (tests/device/motion_clips.py, from the real photos): ``still`` (noise and MJPEG artefacts on a photo),
``light`` (the same with an exposure drift and a light switch), both played at their own 24 fps (``--realtime``)
with the default keyframe, as a camera would deliver them; ``moving`` (two shapes cross, stop, leave) with the
test detector; and Megamind.avi, real footage, with Coral's MobileNetV2 classifier. Each moving clip runs gated and
ungated; "held agreement" is the fraction of frames whose ungated result (top class, or the multiset of detected
classes) equals the gated run's last published result, which is what a consumer holds while frames are skipped.
The gate's thresholds are its documented defaults (Frigate's scale of values), not tuned on these clips.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.targets import print_targets  # noqa: E402
from edgekit.device.motion import MotionDetector, MotionSettings  # noqa: E402
from tests.device.motion_clips import moving_clip, static_clip  # noqa: E402

DATA = REPO / "tests" / "data"
DETECTOR = DATA / "ssdlite_shapes_int8.tflite"
CLASSIFIER = DATA / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
STILL_MAX = 0.05
GATE_COST_MAX = 0.05  # the check, as a fraction of one MobileNetV2 invoke
Row = tuple[str, str, str, bool]  # measure, value, target, met


def run(model: Path, source: Path, out: Path, *extra: str) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """`edgekit run` in a subprocess; its results by frame index and its last stats record."""
    args = [sys.executable, "-m", "edgekit", "run", "--model", str(model), "--source", str(source)]
    subprocess.run([*args, "--sink", f"file:{out}", "--stats-interval", "60", *extra], check=True, cwd=REPO)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    results = {r["frame"]: r for r in records if r["type"] == "result"}
    return results, [r for r in records if r["type"] == "stats"][-1]


def key(record: dict[str, Any]) -> Any:
    if "classes" in record:
        return record["classes"][0]["id"] if record["classes"] else None
    return tuple(sorted(d["id"] for d in record["detections"]))


def held_agreement(ungated: dict[int, dict[str, Any]], gated: dict[int, dict[str, Any]]) -> float:
    held, same = None, 0
    for frame in sorted(ungated):
        if frame in gated:
            held = key(gated[frame])
        same += held == key(ungated[frame])
    return same / len(ungated)


def gated_rows(clip: str, ungated: dict[int, dict[str, Any]], gated: dict[int, dict[str, Any]]) -> list[Row]:
    """The share of frames a gated run inferred (information) and its held agreement with the ungated run."""
    agreement = held_agreement(ungated, gated)
    inferred = f"{len(gated)}/{len(ungated)} = {len(gated) / len(ungated):.3f}"
    return [
        (f"{clip}: frames inferred", inferred, "(info)", True),
        (f"{clip}: held agreement", f"{agreement:.3f}", "1.0", agreement == 1.0),
    ]


def gate_cost(video: Path) -> float:
    """The check's median time on a video's frames over a MobileNetV2 invoke's, in this process."""
    from edgekit.device import runtime

    frames = []
    capture = cv2.VideoCapture(str(video))
    while len(frames) < 200:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    detector = MotionDetector(MotionSettings())
    checks = []
    for image in frames:
        t0 = time.perf_counter()
        detector.changed(image)
        checks.append(time.perf_counter() - t0)
    interpreter = runtime.make_interpreter(CLASSIFIER, "cpu", probe=False)  # every core, as `edgekit run`
    invokes = []
    for _ in range(30):
        t0 = time.perf_counter()
        interpreter.invoke()
        invokes.append(time.perf_counter() - t0)
    return float(np.median(checks) / np.median(invokes))


def main() -> int:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photo = DATA / "photos" / "home.jpg"
        still = [static_clip(photo, root / "still.avi"), static_clip(photo, root / "light.avi", light=True)]
        moving = moving_clip(DATA / "photos" / "leuvenA.jpg", root / "moving.avi")
        labels = root / "shapes.txt"
        labels.write_text("circle\nsquare\ntriangle\n")

        for clip in still:
            _, stats = run(
                DETECTOR, clip, root / f"{clip.stem}.jsonl", "--labels", str(labels), "--motion", "--realtime"
            )
            seen = stats["frames"] + stats["motion_skipped"]
            fraction = stats["frames"] / seen
            rows.append(
                (
                    f"{clip.stem}: frames inferred",
                    f"{stats['frames']}/{seen} = {fraction:.3f}",
                    f"<= {STILL_MAX}",
                    fraction <= STILL_MAX,
                )
            )

        det = ("--labels", str(labels), "--threshold", "0.5")
        ungated, _ = run(DETECTOR, moving.path, root / "moving-off.jsonl", *det)
        gated, stats = run(DETECTOR, moving.path, root / "moving-on.jsonl", *det, "--motion")
        min_pixels = 2 * MotionSettings().min_area * 640 * 480
        visible = [i for i, n in enumerate(moving.moved) if n >= min_pixels]
        recall = sum(i in gated for i in visible) / len(visible)
        same = all(gated[i]["detections"] == ungated[i]["detections"] for i in gated)
        rows += [
            *gated_rows("moving", ungated, gated),
            ("moving: motion >= 2x min_area inferred", f"{recall:.3f} of {len(visible)}", "1.0", recall == 1.0),
            ("moving: inferred frames, same detections", str(same), "True", same),
        ]

        megamind = DATA / "video" / "Megamind.avi"
        cls = ("--labels", str(DATA / "coral" / "imagenet_labels.txt"), "--top-k", "1")
        ungated, _ = run(CLASSIFIER, megamind, root / "mm-off.jsonl", *cls)
        gated, _ = run(CLASSIFIER, megamind, root / "mm-on.jsonl", *cls, "--motion")
        rows += gated_rows("Megamind", ungated, gated)
    cost = gate_cost(DATA / "video" / "Megamind.avi")
    rows.append(
        ("gate check / MobileNetV2 invoke (720x528)", f"{cost:.4f}", f"<= {GATE_COST_MAX}", cost <= GATE_COST_MAX)
    )

    return print_targets(rows)


if __name__ == "__main__":
    sys.exit(main())
