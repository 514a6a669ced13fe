"""Generated detection scenes: coloured shapes with known boxes pasted on crops of real photos."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgekit.errors import InputError
from edgekit.plan import IMAGE_SUFFIXES

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
# Distinct hues so colour and shape agree; jittered per object so the detector cannot key on one exact value.
_SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "circle": (220, 40, 40),
    "square": (40, 190, 60),
    "triangle": (50, 80, 230),
}


@dataclass(frozen=True)
class Scenes:
    """A batch of generated scenes.

    Attributes:
        images: ``[N, S, S, 3]`` uint8 RGB.
        boxes: per image ``[M, 4]`` float32 (ymin, xmin, ymax, xmax), normalised to [0, 1].
        classes: per image ``[M]`` int64 indices into ``labels``.
        labels: class names.
    """

    images: npt.NDArray[np.uint8]
    boxes: list[npt.NDArray[np.float32]]
    classes: list[npt.NDArray[np.int64]]
    labels: tuple[str, ...] = SHAPE_CLASSES


def load_photos(folder: str | Path) -> list[npt.NDArray[np.uint8]]:
    """Read every photo of ``folder`` (sorted by name, so scenes are reproducible) as RGB.

    Raises:
        InputError: the folder has no readable photo.
    """
    import cv2

    photos = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is not None:
                photos.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    if not photos:
        raise InputError(f"{folder}: no readable photos (.jpg/.png) to use as scene backgrounds")
    return photos


def make_scenes(
    photos: Sequence[npt.NDArray[np.uint8]],
    count: int,
    size: int,
    seed: int,
    max_objects: int = 4,
    object_scale: tuple[float, float] = (0.15, 0.45),
) -> Scenes:
    """Draw ``count`` scenes of ``size`` x ``size`` pixels, deterministic for a given seed and photo list.

    Each scene is a random crop of a photo with 1..``max_objects`` shapes (circle, square/rectangle,
    triangle) whose sides are ``object_scale`` of the image, overlapping each other by IoU < 0.1.

    Args:
        photos: RGB background photos.
        count: number of scenes.
        size: side of the square scenes in pixels.
        seed: random seed.
        max_objects: most objects in one scene.
        object_scale: (min, max) object side as a fraction of the image side.

    Returns:
        The scenes with their boxes and classes.
    """
    import cv2

    from edgekit.convert.detect.anchors import iou_matrix

    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    all_boxes: list[npt.NDArray[np.float32]] = []
    all_classes: list[npt.NDArray[np.int64]] = []
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        side = int(min(h, w) * rng.uniform(0.35, 1.0))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = photo[y0 : y0 + side, x0 : x0 + side]
        canvas: npt.NDArray[np.uint8] = np.ascontiguousarray(
            cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
        boxes: list[list[float]] = []
        classes: list[int] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(20):
                cls = int(rng.integers(len(SHAPE_CLASSES)))
                bh = rng.uniform(*object_scale) * size
                bw = bh if cls != 1 else bh * rng.uniform(0.7, 1.4)
                bw = min(bw, size * 0.95)
                top = rng.uniform(0, size - bh)
                left = rng.uniform(0, size - bw)
                box = [top / size, left / size, (top + bh) / size, (left + bw) / size]
                if boxes and iou_matrix(np.array([box]), np.array(boxes)).max() > 0.1:
                    continue
                _draw_shape(cv2, canvas, SHAPE_CLASSES[cls], top, left, bh, bw, rng)
                boxes.append(box)
                classes.append(cls)
                break
        images[i] = canvas
        all_boxes.append(np.clip(np.array(boxes, dtype=np.float32).reshape(-1, 4), 0.0, 1.0))
        all_classes.append(np.array(classes, dtype=np.int64))
    return Scenes(images, all_boxes, all_classes)


def _draw_shape(
    cv2: Any,
    canvas: npt.NDArray[np.uint8],
    kind: str,
    top: float,
    left: float,
    bh: float,
    bw: float,
    rng: np.random.Generator,
) -> None:
    colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in _SHAPE_COLOURS[kind])
    shift = 4  # sub-pixel coordinates so boxes match the drawing to a fraction of a pixel
    f = 1 << shift

    def p(y: float, x: float) -> tuple[int, int]:
        return round(x * f), round(y * f)

    if kind == "circle":
        # The box is exact only for a circle; use the shorter side.
        cy, cx, r = top + bh / 2, left + bw / 2, min(bh, bw) / 2
        cv2.circle(canvas, p(cy, cx), round(r * f), colour, -1, cv2.LINE_AA, shift)
    elif kind == "square":
        pts = np.array([p(top, left), p(top, left + bw), p(top + bh, left + bw), p(top + bh, left)], np.int32)
        cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, shift)
    else:
        pts = np.array([p(top, left + bw / 2), p(top + bh, left + bw), p(top + bh, left)], np.int32)
        cv2.fillPoly(canvas, [pts], colour, cv2.LINE_AA, shift)


def write_eval_folder(scenes: Scenes, folder: str | Path) -> Path:
    """Write scenes in the `--eval` folder format (see `edgekit.convert.detect.evalset`).

    Args:
        scenes: the scenes.
        folder: folder to create; images become ``scene_00000.png`` with ``scene_00000.json`` beside.

    Returns:
        The folder.
    """
    import cv2

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    size = scenes.images.shape[1:3]
    for i, image in enumerate(scenes.images):
        stem = out / f"scene_{i:05d}"
        cv2.imwrite(str(stem.with_suffix(".png")), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        objects = [
            {
                "label": scenes.labels[int(c)],
                "box": [
                    round(float(b[1]) * size[1], 2),
                    round(float(b[0]) * size[0], 2),
                    round(float(b[3]) * size[1], 2),
                    round(float(b[2]) * size[0], 2),
                ],
            }
            for b, c in zip(scenes.boxes[i], scenes.classes[i], strict=True)
        ]
        stem.with_suffix(".json").write_text(json.dumps({"objects": objects}) + "\n", encoding="utf-8")
    return out
