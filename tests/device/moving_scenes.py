"""Generated videos of shapes that move, cross, stop and leave, with their ground-truth tracks.

The shapes are those the test detector was trained on (`edgekit.convert.detect.scenes`), drawn the same way,
over a crop of a real photo; each object follows waypoints (a repeated waypoint is a stop) and can enter and
leave the frame. `converted_shape_detector` turns the cached trained detector into an edgekit model folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.convert.detect.demo import Recipe
from edgekit.convert.detect.scenes import SHAPE_CLASSES, _draw_shape, load_photos

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGEKIT_CACHE_DIR", REPO / ".edgekit-cache"))
# The recipe of benchmarks/convert_detect.py (float mAP@0.5 >= 0.8 there), so both share one cached training
# (about 10 minutes on two cores, once); the quick recipe of tests/convert finds no shapes in these videos.
DETECTOR_RECIPE = Recipe(input_size=160, alpha=0.35, train_scenes=2000, steps=1500)


@dataclass(frozen=True)
class Mover:
    """One object: a shape of side ``size`` (fraction of the frame height) visiting ``path`` points.

    ``path`` is (frame, cx, cy) waypoints in fractions of the frame; between two the centre moves linearly; the
    object exists from the first waypoint's frame to the last's.
    """

    label: str
    size: float
    path: tuple[tuple[int, float, float], ...]
    seed: int = 0

    def centre(self, frame: int) -> tuple[float, float] | None:
        if frame < self.path[0][0] or frame > self.path[-1][0]:
            return None
        for (f0, x0, y0), (f1, x1, y1) in zip(self.path, self.path[1:], strict=False):
            if f0 <= frame <= f1:
                a = (frame - f0) / max(f1 - f0, 1)
                return x0 + a * (x1 - x0), y0 + a * (y1 - y0)
        return self.path[-1][1], self.path[-1][2]


@dataclass(frozen=True)
class Sequence_:
    """A generated video: frames (BGR) and, per frame, the visible objects (id, label, box in pixels xyxy)."""

    frames: np.ndarray
    truth: list[list[tuple[int, str, tuple[float, float, float, float]]]]


def render(movers: Sequence[Mover], frames: int, size: tuple[int, int] = (240, 320), background: int = 0) -> Sequence_:
    """Draw ``frames`` frames of ``size`` (height, width) with ``movers`` over photo number ``background``.

    Objects are drawn in list order (later ones in front). A box that leaves the frame is clipped; an object of
    which less than 60% of its box shows (off the frame, or behind the boxes of objects in front) is not in the
    truth of that frame: the detector cannot be asked to find a sliver.
    """
    import cv2

    photos = load_photos(REPO / "tests" / "data" / "photos")
    photo = photos[background % len(photos)]
    h, w = size
    ph, pw = photo.shape[:2]
    scale = max(h / ph, w / pw)
    resized = cv2.resize(photo, (round(pw * scale) + 1, round(ph * scale) + 1), interpolation=cv2.INTER_AREA)
    base = np.ascontiguousarray(resized[:h, :w])
    out = np.empty((frames, h, w, 3), np.uint8)
    truth: list[list[tuple[int, str, tuple[float, float, float, float]]]] = []
    for f in range(frames):
        canvas = base.copy()
        placed = []
        for oid, m in enumerate(movers, start=1):
            c = m.centre(f)
            if c is None:
                continue
            side = m.size * h
            left, top = c[0] * w - side / 2, c[1] * h - side / 2
            _draw_shape(cv2, canvas, m.label, top, left, side, side, np.random.default_rng(m.seed + oid))
            x0, y0, x1, y1 = max(left, 0.0), max(top, 0.0), min(left + side, w), min(top + side, h)
            if x1 > x0 and y1 > y0:
                placed.append((oid, m.label, (x0, y0, x1, y1), side * side))
        covered = np.zeros((h, w), bool)
        visible = []
        for oid, label, box, full in reversed(placed):  # front to back
            x0, y0, x1, y1 = (round(v) for v in box)
            if (~covered[y0:y1, x0:x1]).sum() >= 0.6 * full:
                visible.append((oid, label, box))
            covered[y0:y1, x0:x1] = True
        out[f] = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        truth.append(sorted(visible))
    return Sequence_(out, truth)


def write_video(seq: Sequence_, path: Path, fps: float = 10.0) -> Path:
    """A lossless (FFV1) .avi of the frames, which `edgekit run` reads back pixel for pixel.

    Not MJPEG: its chroma subsampling, even at quality 100, costs the test detector up to a quarter of its hits
    on some shapes, and the benchmark is about the tracker.
    """
    import cv2

    h, w = seq.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    for frame in seq.frames:
        writer.write(frame)
    writer.release()
    return path


def random_movers(rng: np.random.Generator, count: int, frames: int) -> list[Mover]:
    """Objects that appear at one side, cross the frame in lanes (passing each other; some stop on the way) and
    leave, for tuning or evaluation. Lanes keep them from hiding each other for long: the shapes detector was
    trained on scenes without overlaps."""
    movers = []
    lanes = rng.permutation(count)
    for i in range(count):
        label = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        size = float(rng.uniform(0.22, 0.3))
        start = int(rng.integers(0, frames // 3))
        length = int(rng.integers(frames // 3, frames - start))
        lane = 0.2 + 0.6 * lanes[i] / max(count - 1, 1)
        y0, y1 = lane + float(rng.uniform(-0.04, 0.04)), lane + float(rng.uniform(-0.04, 0.04))
        x0, x1 = (0.2, 0.8) if rng.random() < 0.5 else (0.8, 0.2)
        path = [(start, x0, y0)]
        if rng.random() < 0.4:  # stops halfway for a while
            mid = start + length // 2
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            path += [(mid - length // 6, xm, ym), (mid + length // 6, xm, ym)]
        path.append((start + length, x1, y1))
        movers.append(Mover(label, size, tuple(path), seed=int(rng.integers(1 << 30)) + i))
    return movers


def converted_shape_detector(data_dir: Path, rebuild: bool = False) -> Path:
    """An edgekit model folder of the shape detector: the copy in ``tests/data/shape_detector`` (so a fresh clone
    does not spend ~10 minutes training it), or, with ``rebuild``, trained once and converted once, both cached in
    CACHE (``python -m tests.device.moving_scenes`` rebuilds the copy in tests/data from it).

    The conversion (about 100 s on two shared cores) is cached beside the trained model, under its name.
    """
    import shutil
    import tempfile

    from edgekit.convert.detect.demo import trained_shape_detector
    from edgekit.convert.detect.pipeline import convert_detector
    from edgekit.convert.detect.scenes import make_scenes, write_eval_folder

    committed = data_dir / "shape_detector"
    if not rebuild and (committed / "edgekit.json").is_file():
        return committed
    saved_model = trained_shape_detector(data_dir / "photos", CACHE, DETECTOR_RECIPE)
    done = CACHE / f"converted-{saved_model.parent.name}-v1"
    if (done / "edgekit.json").is_file():
        return done
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".converting-") as tmp:
        calib = write_eval_folder(make_scenes(load_photos(data_dir / "photos"), 40, 160, seed=101), Path(tmp) / "c")
        out = Path(tmp) / "model"
        convert_detector(saved_model, calib, out, labels=saved_model.parent / "labels.txt", num_calib=40)
        try:
            os.replace(out, done)  # atomic: a cache entry with edgekit.json is complete
        except OSError:  # another process got there first
            shutil.rmtree(out, ignore_errors=True)
    return done


if __name__ == "__main__":  # rebuild tests/data/shape_detector from the cached training (or train it)
    import shutil

    source = converted_shape_detector(REPO / "tests" / "data", rebuild=True)
    target = REPO / "tests" / "data" / "shape_detector"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    print(target)
