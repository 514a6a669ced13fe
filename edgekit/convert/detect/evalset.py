"""The `--eval` format for detectors: a folder of images, each with a JSON file of its boxes beside it.

Layout::

    eval/
      kitchen_001.jpg
      kitchen_001.json    {"objects": [{"label": "cup", "box": [xmin, ymin, xmax, ymax]}, ...]}
      kitchen_002.png
      kitchen_002.json    {"objects": []}            (an image with nothing to find)

``box`` is in pixels of that image (x to the right, y down, as annotation tools write it); ``label`` is a
line of the labels file. Sub-folders are searched too. An image without a JSON file is an error rather
than an image "with no objects", so a forgotten annotation cannot inflate the score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.convert.detect.metrics import ImageBoxes
from edgekit.errors import InputError
from edgekit.plan import IMAGE_SUFFIXES


@dataclass(frozen=True)
class EvalItem:
    """One annotated image.

    Attributes:
        image: path of the image.
        truth: boxes normalised to [0, 1] as (ymin, xmin, ymax, xmax), classes as label indices.
    """

    image: Path
    truth: ImageBoxes


def load_eval_set(folder: str | Path, labels: Sequence[str]) -> list[EvalItem]:
    """Read a `--eval` folder (format in the module docstring).

    Args:
        folder: the folder.
        labels: class names; annotation labels must be among them.

    Returns:
        The annotated images, sorted by path.

    Raises:
        InputError: the folder is missing or empty, an annotation is missing or malformed, or names an
            unknown label.
    """
    import cv2

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: --eval must be a folder of images with one JSON of boxes per image")
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise InputError(f"{root}: no images (.jpg/.png) in the --eval folder")
    index = {name: i for i, name in enumerate(labels)}
    items = []
    for image in images:
        ann = image.with_suffix(".json")
        if not ann.is_file():
            raise InputError(f"{ann}: missing; every --eval image needs a JSON of its boxes (may be empty)")
        try:
            data = json.loads(ann.read_text(encoding="utf-8"))
            objects = data["objects"]
            if not isinstance(objects, list):
                raise TypeError("'objects' is not a list")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f'{ann}: not a box file ({exc}); expected {{"objects": [...]}}') from None
        shape = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if shape is None:
            raise InputError(f"{image}: unreadable image in the --eval folder")
        h, w = shape.shape[:2]
        boxes, classes = [], []
        for k, obj in enumerate(objects):
            try:
                label = obj["label"]
                xmin, ymin, xmax, ymax = (float(v) for v in obj["box"])
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f'{ann}: object {k} needs "label" and "box": [xmin, ymin, xmax, ymax] in pixels'
                ) from None
            if label not in index:
                raise InputError(f"{ann}: object {k} has label {label!r}, which is not in the labels file")
            if not (xmax > xmin and ymax > ymin):
                raise InputError(f"{ann}: object {k} box {obj['box']} is empty (need xmax > xmin, ymax > ymin)")
            boxes.append([ymin / h, xmin / w, ymax / h, xmax / w])
            classes.append(index[label])
        items.append(EvalItem(image, ImageBoxes.of(np.array(boxes).reshape(-1, 4), classes)))
    return items
