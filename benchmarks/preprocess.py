"""What the ``area`` downscale costs now that it is exact on every architecture, against one INTER_AREA call.

    python benchmarks/preprocess.py [--rounds 7] [--repeat 50]

On real frames (a Megamind.avi frame, 720x528; a 640x480 photo; a 1080p frame made of the photo), centre-cropped
at 0.875 to 224 px: `prepare` with ``downscale="area"`` (the integer box mean, `edgekit.model.preprocess._area`)
and with ``pyramid``, against ``cv2.resize(crop, INTER_AREA)`` plus the channel swap, which is what ``area`` was
before it had to give an aarch64 Pi the same bytes as x86 (tests/arm64). Interleaved round by round, so that a
busy machine slows both alike; the median of the per-round ratios is reported. Target: exact area <= 3.0x the
INTER_AREA call (exit 1 when missed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.model.manifest import Preprocess  # noqa: E402
from edgekit.model.preprocess import plan, prepare  # noqa: E402

DATA = REPO / "tests" / "data"
TARGET = 3.0


def frames() -> dict[str, np.ndarray]:
    ok, video = cv2.VideoCapture(str(DATA / "video" / "Megamind.avi")).read()
    assert ok
    photo = cv2.imread(str(DATA / "photos" / "aero1.jpg"))
    return {"720x528 video": video, "640x480 photo": photo, "1920x1080": cv2.resize(photo, (1920, 1080))}


def timed(work: Callable[[], object], repeat: int) -> float:
    """Mean microseconds of ``work()`` over ``repeat`` calls."""
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - start) / repeat * 1e6


def one_round(frame: np.ndarray, repeat: int) -> tuple[float, float, float]:
    """INTER_AREA + channel swap, exact ``area`` and ``pyramid`` on one frame: microseconds each."""
    area = Preprocess(policy="center_crop", crop_fraction=0.875)
    pyramid = Preprocess(policy="center_crop", crop_fraction=0.875, downscale="pyramid")
    out = np.empty((224, 224, 3), np.uint8)
    cx, cy, cw, ch = plan(frame.shape[:2], (224, 224), "center_crop", 0.875).crop
    crop = frame[cy : cy + ch, cx : cx + cw]
    one = timed(lambda: cv2.cvtColor(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA),
                                     cv2.COLOR_BGR2RGB), repeat)  # fmt: skip
    exact = timed(lambda: prepare(frame, (224, 224), area, color="BGR", out=out), repeat)
    fast = timed(lambda: prepare(frame, (224, 224), pyramid, color="BGR", out=out), repeat)
    return one, exact, fast


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    print(f"{'frame':<15} {'INTER_AREA us':>13} {'area us':>8} {'ratio':>6} {'pyramid us':>10}")
    worst = 0.0
    for name, frame in frames().items():
        rows = [one_round(frame, args.repeat) for _ in range(args.rounds)]
        one, exact, fast = (statistics.median(r[i] for r in rows) for i in range(3))
        ratio = statistics.median(r[1] / r[0] for r in rows)
        worst = max(worst, ratio)
        print(f"{name:<15} {one:>13.0f} {exact:>8.0f} {ratio:>6.2f} {fast:>10.0f}")
    verdict = "ok" if worst <= TARGET else "MISSED"
    print(f"exact area / INTER_AREA: worst {worst:.2f}x (target <= {TARGET}x): {verdict}")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
