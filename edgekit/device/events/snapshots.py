"""Event snapshots: the best frame of an object cropped with a margin, its box drawn, as JPEG; a capped folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.device.events.spec import SnapshotSpec

logger = logging.getLogger(__name__)


def render(image: np.ndarray, box: Any, margin: float, quality: int, color: str = "BGR") -> bytes:
    """A JPEG of ``box`` (pixels, the records' format) in ``image`` with ``margin`` of its size around it.

    Args:
        image: the frame (H, W, 3) uint8, in ``color`` order.
        box: ``{"xmin", "ymin", "xmax", "ymax"}`` in pixels of the frame.
        margin: added on each side, as a fraction of the box's width and height.
        quality: JPEG quality.

    Returns:
        The JPEG bytes.
    """
    import cv2

    h, w = image.shape[:2]
    bw, bh = box["xmax"] - box["xmin"], box["ymax"] - box["ymin"]
    x0, y0 = max(int(box["xmin"] - margin * bw), 0), max(int(box["ymin"] - margin * bh), 0)
    x1, y1 = min(int(box["xmax"] + margin * bw + 1), w), min(int(box["ymax"] + margin * bh + 1), h)
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    if color == "RGB":
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    thickness = max(2, round(min(bw, bh) / 60))
    top_left = (round(box["xmin"]) - x0, round(box["ymin"]) - y0)
    bottom_right = (round(box["xmax"]) - x0, round(box["ymax"]) - y0)
    cv2.rectangle(crop, top_left, bottom_right, (0, 0, 255), thickness)
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any non-empty uint8 image
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


class SnapshotFolder:
    """Writes snapshots into a folder (temp name + rename), deleting the oldest when it passes ``max_bytes``."""

    def __init__(self, spec: SnapshotSpec) -> None:
        assert spec.folder is not None
        self.folder, self.max_bytes = spec.folder, spec.max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, name: str, jpeg: bytes) -> Path:
        path = self.folder / name
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_bytes(jpeg)
        os.replace(temp, path)
        self._cap()
        return path

    def _cap(self) -> None:
        files = sorted(
            (p for p in self.folder.iterdir() if p.suffix == ".jpg" and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime_ns,
        )
        total = sum(p.stat().st_size for p in files)
        for old in files[:-1]:  # never the one just written
            if total <= self.max_bytes:
                break
            total -= old.stat().st_size
            old.unlink(missing_ok=True)
            logger.debug("snapshot folder over %d bytes: removed %s", self.max_bytes, old.name)
