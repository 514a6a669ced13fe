"""Detection metrics in plain numpy: COCO-style AP (101-point interpolation) per class, then the mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgekit.convert.detect.anchors import iou_matrix

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes of one image: ground truth (scores ignored) or detections.

    Attributes:
        boxes: ``[K, 4]`` (ymin, xmin, ymax, xmax), any consistent unit.
        classes: ``[K]`` class ids.
        scores: ``[K]`` confidences (ones for ground truth).
    """

    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    @staticmethod
    def of(boxes: object, classes: object, scores: object = None) -> ImageBoxes:
        """Build from array-likes; ``scores`` defaults to ones."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        c = np.asarray(classes, dtype=np.int64).reshape(-1)
        s = np.ones(len(c), np.float32) if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
        if not len(b) == len(c) == len(s):
            raise ValueError(f"{len(b)} boxes, {len(c)} classes and {len(s)} scores")
        return ImageBoxes(b, c, s)


@dataclass(frozen=True)
class MapResult:
    """Mean average precision over the classes that have ground truth.

    Attributes:
        map50: mAP at IoU 0.5.
        map50_95: mAP averaged over IoU 0.5, 0.55, ..., 0.95.
        ap50_per_class: AP at IoU 0.5 per class id, None for classes without ground truth.
    """

    map50: float
    map50_95: float
    ap50_per_class: tuple[float | None, ...]


def average_precision(
    detections: Sequence[ImageBoxes], truths: Sequence[ImageBoxes], class_id: int, iou_threshold: float
) -> float | None:
    """AP of one class at one IoU threshold, COCO style.

    Detections of all images are ranked by score; each one, in that order, takes the unmatched ground truth
    box of its image and class with the highest IoU if that IoU is >= ``iou_threshold`` (true positive),
    else it is a false positive. Precision is made monotone (the running max from the right) and sampled at
    the 101 recall points 0, 0.01, ..., 1; a recall never reached counts as precision 0.

    Args:
        detections: per image detections.
        truths: per image ground truth, same order.
        class_id: the class.
        iou_threshold: the IoU a match needs.

    Returns:
        AP in [0, 1], or None when the class has no ground truth box.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection lists for {len(truths)} images")
    num_truths = sum(int((t.classes == class_id).sum()) for t in truths)
    if num_truths == 0:
        return None
    scores: list[npt.NDArray[np.float32]] = []
    hits: list[npt.NDArray[np.bool_]] = []
    for det, gt in zip(detections, truths, strict=True):
        d_mask = det.classes == class_id
        if not d_mask.any():
            continue
        order = np.argsort(-det.scores[d_mask], kind="mergesort")
        d_boxes = det.boxes[d_mask][order]
        g_boxes = gt.boxes[gt.classes == class_id]
        hit = np.zeros(len(d_boxes), dtype=bool)
        if len(g_boxes):
            iou = iou_matrix(d_boxes, g_boxes)
            taken = np.zeros(len(g_boxes), dtype=bool)
            for k in range(len(d_boxes)):
                candidates = np.where(taken, -1.0, iou[k])
                j = int(candidates.argmax())
                if candidates[j] >= iou_threshold:
                    taken[j] = True
                    hit[k] = True
        scores.append(det.scores[d_mask][order])
        hits.append(hit)
    if not scores:
        return 0.0
    all_scores = np.concatenate(scores)
    # Greedy matching inside one image already followed score order; ranking across images by score keeps
    # every image's own order because the sort is stable and per-image lists are sorted.
    order = np.argsort(-all_scores, kind="mergesort")
    tp = np.concatenate(hits)[order].astype(np.float64)
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / num_truths
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    sampled = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(sampled.mean())


def mean_average_precision(
    detections: Sequence[ImageBoxes], truths: Sequence[ImageBoxes], num_classes: int
) -> MapResult:
    """mAP@0.5 and mAP@0.5:0.95 over classes ``0 .. num_classes - 1`` that have ground truth.

    Args:
        detections: per image detections.
        truths: per image ground truth, same order.
        num_classes: number of classes.

    Returns:
        The result; both means are 0 when no class has ground truth.
    """
    per_threshold: list[list[float | None]] = [
        [average_precision(detections, truths, c, t) for c in range(num_classes)] for t in COCO_IOU_THRESHOLDS
    ]

    def mean(values: list[float | None]) -> float:
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else 0.0

    return MapResult(
        map50=mean(per_threshold[0]),
        map50_95=float(np.mean([mean(v) for v in per_threshold])),
        ap50_per_class=tuple(per_threshold[0]),
    )
