"""mAP matching and COCO 101-point AP on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.convert.detect.metrics import ImageBoxes, average_precision, mean_average_precision

GT = ImageBoxes.of([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])


def test_perfect_detections_give_ap_one() -> None:
    det = ImageBoxes.of(GT.boxes, GT.classes, [0.9, 0.8])
    assert average_precision([det], [GT], 0, 0.5) == pytest.approx(1.0)


def test_false_positive_between_two_hits() -> None:
    # Ranked: hit, miss, hit -> recall .5 .5 1, precision 1 .5 .667; envelope 1 .667 .667.
    # Recall points 0..0.50 (51 of them) read precision 1, points 0.51..1 (50) read 2/3.
    det = ImageBoxes.of([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0, 0, 0], [0.9, 0.8, 0.7])
    assert average_precision([det], [GT], 0, 0.5) == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_duplicate_detection_of_one_object_is_a_false_positive() -> None:
    gt = ImageBoxes.of([[0, 0, 10, 10]], [0])
    det = ImageBoxes.of([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
    # The duplicate comes after full recall, so it cannot lower the envelope: AP stays 1.
    assert average_precision([det], [gt], 0, 0.5) == pytest.approx(1.0)
    # Ranked first, the duplicate of nothing (wrong place) halves precision at every recall.
    det2 = ImageBoxes.of([[40, 40, 50, 50], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])
    assert average_precision([det2], [gt], 0, 0.5) == pytest.approx(0.5)


def test_ranking_is_across_images() -> None:
    gt_a = ImageBoxes.of([[0, 0, 10, 10]], [0])
    gt_b = ImageBoxes.of([[0, 0, 10, 10]], [0])
    # The miss in image b outranks the hit in image a: precision 0, .5, .667 at recall 0, .5, 1, whose
    # envelope is 2/3 everywhere. Ranking image by image instead (a's hit first) would give 0.835.
    det_a = ImageBoxes.of([[0, 0, 10, 10]], [0], [0.5])
    det_b = ImageBoxes.of([[50, 50, 60, 60], [0, 0, 10, 10]], [0, 0], [0.9, 0.4])
    assert average_precision([det_a, det_b], [gt_a, gt_b], 0, 0.5) == pytest.approx(2 / 3)


def test_iou_thresholds_of_map50_95() -> None:
    gt = ImageBoxes.of([[0, 0, 1, 1]], [0])
    det = ImageBoxes.of([[0, 0, 1, 0.62]], [0], [0.9])  # IoU 0.62: a hit at 0.5, 0.55, 0.6 only
    result = mean_average_precision([det], [gt], 1)
    assert result.map50 == pytest.approx(1.0)
    assert result.map50_95 == pytest.approx(0.3)


def test_wrong_class_does_not_match_and_classes_without_truth_are_left_out() -> None:
    gt = ImageBoxes.of([[0, 0, 10, 10]], [1])
    det = ImageBoxes.of([[0, 0, 10, 10]], [2], [0.9])
    result = mean_average_precision([det], [gt], 3)
    assert result.ap50_per_class == (None, 0.0, None)
    assert result.map50 == 0.0
    # Class 2 has a detection but no truth: excluded (COCO), so it does not count as a zero either.
    det_ok = ImageBoxes.of([[0, 0, 10, 10], [5, 5, 9, 9]], [1, 2], [0.9, 0.8])
    assert mean_average_precision([det_ok], [gt], 3).map50 == pytest.approx(1.0)


def test_no_detections_give_zero_and_no_truth_gives_none() -> None:
    empty = ImageBoxes.of(np.zeros((0, 4)), [])
    assert average_precision([empty], [GT], 0, 0.5) == 0.0
    assert average_precision([empty], [empty], 0, 0.5) is None


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError):
        ImageBoxes.of([[0, 0, 1, 1]], [0, 1])
    with pytest.raises(ValueError):
        average_precision([GT], [GT, GT], 0, 0.5)
