"""Videos for the motion-gating tests and `benchmarks/motion.py`, made from the real photos in tests/data/photos.

A fixed camera on a still scene is never a frozen picture: each frame here is the photo with sensor noise (gaussian,
per pixel and frame) written through the MJPEG codec, whose 8x8 block artefacts change with the noise. The light
clip adds what real cameras do to a still scene: a slow exposure drift and one sudden light switch. The moving clip
has shapes the test detector knows (tests/data/ssdlite_shapes_int8.tflite) cross the scene, stop, and leave, and
says on which frames something moved (the ground truth the gate is scored against).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIZE = (640, 480)
FPS = 24.0


def _writer(path: Path) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    return writer


def _background(photo: Path) -> np.ndarray:
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    assert image is not None, photo
    return cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def static_clip(
    photo: Path,
    path: Path,
    frames: int = 240,
    sigma: float = 3.0,
    light: bool = False,
    seed: int = 0,
    cut_to: Path | None = None,
) -> Path:
    """A still scene: ``photo`` with sensor noise, MJPEG-coded; with ``light``, exposure drift and a light switch.

    The drift lowers the gain from 1.0 to 0.75 over the first half; at two thirds the light goes up by a third at once.
    With ``cut_to``, the second half shows that photo instead (the camera was moved).
    """
    rng = np.random.default_rng(seed)
    base = _background(photo)
    writer = _writer(path)
    for i in range(frames):
        if cut_to is not None and i == frames // 2:
            base = _background(cut_to)
        gain = 1.0
        if light:
            gain = 1.0 - 0.25 * min(i / (frames / 2), 1.0)
            if i >= 2 * frames // 3:
                gain *= 4 / 3
        writer.write(_noisy(base * gain, rng, sigma))
    writer.release()
    return path


@dataclass(frozen=True)
class MovingClip:
    """A generated clip and, per frame, how much of it moved since the previous frame."""

    path: Path
    moved: list[int]  # per frame, the pixels that differ from the previous frame without the noise


# (kind, colour BGR, radius or half side, centre at frame 30, velocity per moving frame)
_OBJECTS = (
    ("circle", (40, 40, 220), 60, (-60, 150), (6, 0)),
    ("square", (60, 190, 40), 55, (700, 330), (-6, 0)),
)


def moving_clip(photo: Path, path: Path, frames: int = 240, sigma: float = 3.0, seed: int = 1) -> MovingClip:
    """Two shapes on ``photo``: still scene, both enter and cross, stop for a while, move on and leave, still scene.

    Frames 0-29 are empty; 30-119 the shapes move; 120-159 they stand; 160-219 they move on and leave; the rest is
    empty again.
    """
    rng = np.random.default_rng(seed)
    base = _background(photo)
    writer = _writer(path)
    moved = []
    previous = base
    for i in range(frames):
        canvas = base.copy()
        steps = max(0, min(i, 120) - 30) + max(0, min(i, 220) - 160)
        for kind, colour, r, (x0, y0), (vx, vy) in _OBJECTS:
            if i < 30:
                continue
            x, y = x0 + vx * steps, y0 + vy * steps
            if kind == "circle":
                cv2.circle(canvas, (int(x), int(y)), r, colour, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(canvas, (int(x - r), int(y - r)), (int(x + r), int(y + r)), colour, -1, cv2.LINE_AA)
        moved.append(int(np.count_nonzero(np.any(canvas != previous, axis=2))))
        previous = canvas
        writer.write(_noisy(canvas, rng, sigma))
    writer.release()
    return MovingClip(path, moved)
