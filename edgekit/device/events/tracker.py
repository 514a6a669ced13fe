"""Multi-object tracking: a constant-velocity Kalman filter per object (OpenCV's), IoU association solved by `lap`.

The SORT recipe (Bewley et al. 2016) with the two pieces taken from libraries the device already has or that
cost nothing on a Pi: ``cv2.KalmanFilter`` (opencv-python-headless, a device dependency already) and
``lap.lapjv`` for the assignment (1.7 MB aarch64 wheel, no measurable RSS). README, "Tracking and events", says
why not norfair or trackers.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import MissingExtra

logger = logging.getLogger(__name__)

# Kalman noise, in normalised frame units per frame: set by hand (SORT's proportions), never fitted to the
# evaluation sequences of benchmarks/tracking.py.
_MEASUREMENT_STD = 0.01
_POSITION_STD = 0.01
_VELOCITY_STD = 0.003
_LABEL_PENALTY = 0.3  # cost added to pairing a detection with a track of another label (a flicker, not a swap)


def _kalman(box: Sequence[float]) -> Any:
    """A filter whose state is (cx, cy, w, h) and their velocities, started at ``box`` (xmin, ymin, xmax, ymax)."""
    import cv2

    kf = cv2.KalmanFilter(8, 4)
    transition = np.eye(8, dtype=np.float32)
    transition[:4, 4:] = np.eye(4, dtype=np.float32)
    kf.transitionMatrix = transition
    kf.measurementMatrix = np.eye(4, 8, dtype=np.float32)
    kf.processNoiseCov = np.diag([_POSITION_STD**2] * 4 + [_VELOCITY_STD**2] * 4).astype(np.float32)
    kf.measurementNoiseCov = np.eye(4, dtype=np.float32) * np.float32(_MEASUREMENT_STD**2)
    kf.errorCovPost = np.diag([_MEASUREMENT_STD**2] * 4 + [0.05**2] * 4).astype(np.float32)
    state = np.zeros((8, 1), np.float32)
    state[:4, 0] = _to_cxcywh(box)
    kf.statePost = state
    return kf


def _to_cxcywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


@dataclass(eq=False)
class Track:
    """One tracked object. Boxes are (xmin, ymin, xmax, ymax) normalised to the source frame."""

    id: int
    box: tuple[float, float, float, float]  # the last measured box
    label: str
    score: float
    first_seen: float
    last_seen: float
    hits: deque[bool]  # matched or not, in the last `window` frames since it appeared
    kf: Any = field(repr=False)
    confirmed: bool = False
    matched: bool = True  # matched in the latest frame
    labels: dict[str, int] = field(default_factory=dict)  # label -> frames it was detected as that label
    predicted: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


class Tracker:
    """Keeps object identities across frames.

    Each frame, every track's filter predicts where its object is now; detections are paired with predictions by
    the assignment that maximises overlap (pairs below ``iou`` are not made); a paired track is corrected with
    its detection, an unpaired detection starts a tentative track. A track is confirmed once it was paired in
    ``min_hits`` of its first ``window`` frames (a tentative one that can no longer get there is dropped), and
    ends when it has not been paired for ``end_after`` seconds.

    Args:
        iou: least intersection over union of a detection and a predicted box to pair them.
        min_hits: frames (of the first ``window``) a track needs to be confirmed.
        window: see ``min_hits``.
        end_after: seconds unseen after which a confirmed track ends.
    """

    def __init__(self, iou: float = 0.2, min_hits: int = 3, window: int = 5, end_after: float = 2.0) -> None:
        try:
            import lap
        except ImportError:
            raise MissingExtra("lap (for object tracking)", "device") from None
        self._lapjv = lap.lapjv
        self.iou, self.min_hits, self.window, self.end_after = iou, min_hits, max(window, min_hits), end_after
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(
        self, boxes: Sequence[Sequence[float]], labels: Sequence[str], scores: Sequence[float], ts: float
    ) -> tuple[list[Track], list[Track]]:
        """Advance one frame.

        Args:
            boxes: this frame's detections, (xmin, ymin, xmax, ymax) normalised.
            labels: their labels.
            scores: their scores.
            ts: the frame's time (seconds).

        Returns:
            (the track of each detection, in order; the confirmed tracks that ended in this frame).
        """
        tracks = self.tracks
        for t in tracks:
            state = t.kf.predict()
            cx, cy, w, h = float(state[0, 0]), float(state[1, 0]), float(state[2, 0]), float(state[3, 0])
            t.predicted = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            t.matched = False
        n = len(boxes)
        assigned: list[Track | None] = [None] * n
        if tracks and n:
            # Plain Python: for the few objects of a frame it is 10x faster than numpy's per-call overhead.
            cost = [
                [
                    1.0 - _iou(t.predicted, boxes[j]) + (_LABEL_PENALTY if labels[j] != t.label else 0.0)
                    for j in range(n)
                ]
                for t in tracks
            ]
            _, rows, _ = self._lapjv(np.array(cost), extend_cost=True, cost_limit=1.0 - self.iou)
            for i, j in enumerate(rows):
                if j >= 0:
                    assigned[j] = tracks[i]
        for j in range(n):
            box = (float(boxes[j][0]), float(boxes[j][1]), float(boxes[j][2]), float(boxes[j][3]))
            found = assigned[j]
            if found is None:
                t = Track(self._next_id, box, labels[j], scores[j], ts, ts, deque(maxlen=self.window), _kalman(box))
                self._next_id += 1
                tracks.append(t)
                assigned[j] = t
            else:
                t = found
                t.kf.correct(np.array(_to_cxcywh(box), np.float32).reshape(4, 1))
                t.box, t.score, t.last_seen = box, float(scores[j]), ts
            t.matched = True
            t.labels[labels[j]] = t.labels.get(labels[j], 0) + 1
            t.label = max(t.labels, key=t.labels.__getitem__)
        ended: list[Track] = []
        kept: list[Track] = []
        for t in tracks:
            if not t.confirmed:
                t.hits.append(t.matched)
                hits = sum(t.hits)
                if hits >= self.min_hits:
                    t.confirmed = True
                elif hits + (self.window - len(t.hits)) < self.min_hits:
                    continue  # cannot reach min_hits in its window any more: a false positive, dropped
            elif not t.matched and ts - t.last_seen >= self.end_after:
                ended.append(t)
                continue
            kept.append(t)
        self.tracks = kept
        return assigned, ended  # type: ignore[return-value]


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b`` (xmin, ymin, xmax, ymax)."""
    aa = np.asarray(a, np.float64).reshape(-1, 1, 4)
    bb = np.asarray(b, np.float64).reshape(1, -1, 4)
    w = np.clip(np.minimum(aa[..., 2], bb[..., 2]) - np.maximum(aa[..., 0], bb[..., 0]), 0.0, None)
    h = np.clip(np.minimum(aa[..., 3], bb[..., 3]) - np.maximum(aa[..., 1], bb[..., 1]), 0.0, None)
    inter = w * h
    area_a = (aa[..., 2] - aa[..., 0]) * (aa[..., 3] - aa[..., 1])
    area_b = (bb[..., 2] - bb[..., 0]) * (bb[..., 3] - bb[..., 1])
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
