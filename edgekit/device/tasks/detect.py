"""Detection: the four outputs of an SSD postprocess op (boxes, classes, scores, count) to frozen detections."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from edgekit.model.preprocess import Geometry


@dataclass(frozen=True)
class BBox:
    """A box as (xmin, ymin, xmax, ymax)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def width(self) -> float:
        return self.xmax - self.xmin

    @property
    def height(self) -> float:
        return self.ymax - self.ymin

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass(frozen=True)
class Detection:
    """One detected object: class id, score, the box in source pixels and normalised to the source frame."""

    id: int
    score: float
    bbox: BBox
    bbox_norm: BBox


def get_detections(
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    count: np.ndarray | int,
    geometry: Geometry,
    threshold: float = 0.5,
    class_ids: Collection[int] | None = None,
    top_k: int = 0,
) -> tuple[Detection, ...]:
    """Detections above ``threshold`` mapped back from model input coordinates to the source frame.

    Args:
        boxes: (1, N, 4) or (N, 4) of (ymin, xmin, ymax, xmax) normalised to the model input (SSD convention).
        classes: (1, N) or (N,) class ids (float in SSD models).
        scores: (1, N) or (N,) scores in 0..1.
        count: how many of the N entries are valid.
        geometry: how the frame was cropped/resized into the input (from `edgekit.model.preprocess.prepare`).
        threshold: minimum score.
        class_ids: keep only these class ids (None keeps all).
        top_k: keep at most this many, best first (0 keeps all).

    Returns:
        The detections, highest score first; boxes are clipped to the frame and empty ones dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    n = int(np.asarray(count).reshape(-1)[0]) if np.ndim(count) else int(count)
    n = max(0, min(n, boxes.shape[0], classes.size, scores.size))
    keep = np.flatnonzero(scores[:n] >= threshold)
    if class_ids is not None:
        wanted = np.fromiter(class_ids, dtype=np.int64)
        keep = keep[np.isin(classes[keep].astype(np.int64), wanted)]
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    if top_k > 0:
        keep = keep[:top_k]
    if keep.size == 0:
        return ()
    pixels = geometry.to_source(boxes[keep])  # (ymin, xmin, ymax, xmax) in source pixels, clipped
    src_h, src_w = geometry.source_size
    out = []
    for row, i in enumerate(keep):
        ymin, xmin, ymax, xmax = (float(v) for v in pixels[row])
        if xmax <= xmin or ymax <= ymin:
            continue  # entirely in the letterbox padding, or degenerate
        out.append(
            Detection(
                id=int(classes[i]),
                score=float(scores[i]),
                bbox=BBox(xmin, ymin, xmax, ymax),
                bbox_norm=BBox(xmin / src_w, ymin / src_h, xmax / src_w, ymax / src_h),
            )
        )
    return tuple(out)
