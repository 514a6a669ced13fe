"""Tracking targets (issue 18): MOTA and IDF1 >= 0.9 on generated sequences run through a real converted detector,
and the per-frame cost of tracking + zones + events <= 5% of an SSD invoke, both measured in this run.

Run from the repository root: ``python benchmarks/tracking.py`` (``--tune`` scores the tuning sequences instead).
Each sequence is a generated video (`tests/device/moving_scenes.py`: shapes that enter, cross, stop, leave) played
by the real `Pipeline` with the event stage (default ``[tracking]``/``[events]`` plus two zones), on one
interpreter. The stage's time is taken around its call inside the loop, right after ``invoke()`` (cold caches),
beside the loop's own inference time of the same frames. Scored with motmetrics (pairs with IoU >= 0.5), on
every detection the stage gave a track id (tentative tracks included: what a record carries).

The cost target is against the SSD users run, a TF OD API-style SSD-MobileNetV2 300 (the one benchmarks/pipeline.py
builds; its invoke timed in this run, two threads); the test detector (SSDLite 0.35, 160 px: ~1.3 ms) is far
smaller than any SSD put on a camera, and the stage's cost against it is printed too.

Tuning and evaluation sequences differ: what was chosen while looking at results (MIN_SCORE below, the lanes and
sizes of `random_movers`) was chosen on seeds 100-102 (``--tune``); the default run reports seeds 200-205.
Prints a table and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("EDGEKIT_CACHE_DIR", str(REPO / ".edgekit-cache"))

from edgekit.config import Config, TrackingConfig, ZoneConfig  # noqa: E402
from edgekit.device.events.spec import build_spec  # noqa: E402
from edgekit.device.events.stage import DetectionEvents  # noqa: E402
from edgekit.device.events.tracker import iou_matrix  # noqa: E402
from edgekit.device.model import open_model  # noqa: E402
from edgekit.device.pipeline import Pipeline, Settings  # noqa: E402
from edgekit.device.sinks.file import FileSink  # noqa: E402
from edgekit.device.sources import create as create_source  # noqa: E402
from edgekit.plan import parse_source  # noqa: E402
from tests.device.moving_scenes import converted_shape_detector, random_movers, render, write_video  # noqa: E402

TUNING_SEEDS = (100, 101, 102)
EVALUATION_SEEDS = (200, 201, 202, 203, 204, 205)
FRAMES, FPS, OBJECTS = 150, 10.0, 3
MIN_MOTA, MIN_IDF1 = 0.9, 0.9
MAX_COST_RATIO = 0.05
# The test detector is briefly trained and scores true shapes low (recall at 0.5 is 60-70% on these videos):
# tracking.min_score for it, chosen on the tuning seeds (0.25 scored best there, against 0.3).
MIN_SCORE = 0.25


class Timed:
    """The event stage, timed around each call; frames carry video time (index / fps) as their timestamp."""

    def __init__(self, stage: DetectionEvents) -> None:
        self.stage = stage
        self.seconds: list[float] = []

    def observe(self, record: Any, frame: Any, geometry: Any) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        out = self.stage.observe(record, frame._replace(timestamp=frame.index / FPS), geometry)
        self.seconds.append(time.perf_counter() - t0)
        return out

    @property
    def needs_frames(self) -> bool:
        return self.stage.needs_frames

    def finish(self) -> list[dict[str, Any]]:
        return self.stage.finish()

    def has_active_objects(self) -> bool:
        return self.stage.has_active_objects()


def ssd300_invoke_us(rounds: int = 60) -> float:
    """Median ``invoke()`` of the TF OD API-style SSD-MobileNetV2 300 (benchmarks/pipeline.py builds and caches it),
    two threads like the sequences' detector: the SSD a user of this issue runs, beside the small test detector."""
    from benchmarks.pipeline import build_ssd

    model = open_model(build_ssd(), threads=2, probe=False)
    frame = np.zeros((300, 300, 3), np.uint8)
    model.set_input(frame, "RGB")
    model.interpreter.invoke()  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        model.interpreter.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def run_sequence(model_dir: Path, seed: int, tmp: Path) -> dict[str, Any]:
    import motmetrics as mm

    rng = np.random.default_rng(seed)
    seq = render(random_movers(rng, OBJECTS, FRAMES), FRAMES, background=seed)
    video = write_video(seq, tmp / f"seq{seed}.avi", FPS)
    model = open_model(model_dir, threads=2, probe=False)
    config = Config(
        tracking=TrackingConfig(min_score=MIN_SCORE),
        zones={
            "left": ZoneConfig(coordinates=[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]),
            "right": ZoneConfig(coordinates=[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]], inertia=5),
        },
    )
    spec = build_spec(config, list(model.labels.values()), model.path.name, "benchmark")
    assert spec is not None
    stage = Timed(DetectionEvents(spec))
    sink = FileSink(tmp / f"seq{seed}.jsonl", max_bytes=0)  # the records as a user's file sink writes them
    source = create_source(parse_source(str(video)), size=model.input_size)
    pipeline = Pipeline(model, source, [sink], Settings(camera="bench", top_k=10, stats_interval=0), events=stage)
    pipeline.run()
    source.close()
    sink.close()
    records = [json.loads(line) for line in sink.path.read_text().splitlines()]
    results = [r for r in records if r["type"] == "result"]
    events = [r for r in records if r["type"] == "event"]
    acc = mm.MOTAccumulator(auto_id=True)
    for record, truth in zip(results, seq.truth, strict=True):
        tracked = [d for d in record["detections"] if d["track_id"] is not None]
        hyp = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in (d["box"] for d in tracked)]
        # motmetrics' own iou_matrix calls np.asfarray, gone in NumPy 2: the same distance, 1 - IoU up to 0.5.
        distance = 1.0 - iou_matrix([box for _, _, box in truth], hyp).reshape(len(truth), len(hyp))
        distance[distance > 0.5] = np.nan
        acc.update([oid for oid, _, _ in truth], [d["track_id"] for d in tracked], distance)
    summary = mm.metrics.create().compute(
        acc, metrics=["mota", "idf1", "num_switches", "num_objects", "num_misses", "num_false_positives"], name="s"
    )
    inference = np.array([r["timing_ms"]["inference"] for r in results])
    return {
        "seed": seed,
        "mota": float(summary["mota"].iloc[0]),
        "idf1": float(summary["idf1"].iloc[0]),
        "switches": int(summary["num_switches"].iloc[0]),
        "objects": int(summary["num_objects"].iloc[0]),
        "misses": int(summary["num_misses"].iloc[0]),
        "false": int(summary["num_false_positives"].iloc[0]),
        "tracks": len({r["id"] for r in events}),
        "truth_tracks": len({oid for frame in seq.truth for oid, _, _ in frame}),
        "stage_us": float(np.median(stage.seconds)) * 1e6,
        "invoke_us": float(np.median(inference)) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="score the tuning sequences (seeds 100-102)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    seeds = TUNING_SEEDS if args.tune else EVALUATION_SEEDS
    model_dir = converted_shape_detector(REPO / "tests" / "data")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-tracking-") as tmp:
        for seed in seeds:
            rows.append(run_sequence(model_dir, seed, Path(tmp)))
    print(
        f"{'sequence':<10}{'MOTA':>7}{'IDF1':>7}{'ID sw':>7}{'missed':>8}{'false':>7}{'boxes':>7}{'events':>8}"
        f"{'truth':>7}{'stage us':>10}{'invoke us':>11}"
    )
    for r in rows:
        print(
            f"seed {r['seed']:<5}{r['mota']:>7.3f}{r['idf1']:>7.3f}{r['switches']:>7}{r['misses']:>8}{r['false']:>7}"
            f"{r['objects']:>7}{r['tracks']:>8}{r['truth_tracks']:>7}{r['stage_us']:>10.0f}{r['invoke_us']:>11.0f}"
        )
    objects = sum(r["objects"] for r in rows)
    mota = sum(r["mota"] * r["objects"] for r in rows) / objects
    idf1 = sum(r["idf1"] * r["objects"] for r in rows) / objects
    ratio = float(np.median([r["stage_us"] / r["invoke_us"] for r in rows]))
    stage_us = float(np.median([r["stage_us"] for r in rows]))
    ssd_us = ssd300_invoke_us()
    checks = [
        ("MOTA (weighted by objects)", f"{mota:.3f}", f">= {MIN_MOTA}", mota >= MIN_MOTA),
        ("IDF1 (weighted by objects)", f"{idf1:.3f}", f">= {MIN_IDF1}", idf1 >= MIN_IDF1),
        ("ID switches", str(sum(r["switches"] for r in rows)), "reported", True),
        ("stage / test detector invoke", f"{ratio:.3f}", "reported", True),
        (
            "stage / SSD-MobileNetV2 300",
            f"{stage_us / ssd_us:.3f}",
            f"<= {MAX_COST_RATIO}",
            stage_us / ssd_us <= MAX_COST_RATIO,
        ),
    ]
    print()
    for name, value, target, ok in checks:
        print(f"{name:<30}{value:>10}  {target:<10}{'ok' if ok else 'MISSED'}")
    print(f"\n{'tuning' if args.tune else 'evaluation'} sequences, seeds {seeds[0]}-{seeds[-1]}")
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
