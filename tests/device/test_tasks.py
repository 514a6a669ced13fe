"""Postprocessing as pure functions: top-k, dequantization, SSD outputs mapped back to the frame."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.device.tasks import dequantize
from edgekit.device.tasks.classify import Class, Classifier, get_classes
from edgekit.device.tasks.detect import BBox, get_detections
from edgekit.model.preprocess import plan


def test_top_k_best_first_with_threshold() -> None:
    scores = np.array([[0.1, 0.5, 0.05, 0.3, 0.05]], np.float32)
    assert get_classes(scores, top_k=2) == (Class(1, 0.5), Class(3, pytest.approx(0.3)))
    assert [c.id for c in get_classes(scores, top_k=5, threshold=0.1)] == [1, 3, 0]
    assert get_classes(scores, top_k=0) == ()


def test_ties_keep_the_lower_id_first() -> None:
    assert [c.id for c in get_classes(np.array([0.2, 0.4, 0.4, 0.4]), top_k=2)] == [1, 2]


@pytest.mark.parametrize("k", [1, 5, 20])  # 20: past the argmax loop, the sort
@pytest.mark.parametrize("dtype", ["uint8", "int8", "float32"])
def test_top_k_matches_a_full_sort_by_score_then_id(dtype: str, k: int) -> None:
    # Many ties (values drawn from a few levels), both signs for int8: the result must be what sorting every
    # (score, id) pair gives, with the lower id first among equal scores.
    rng = np.random.default_rng(7)
    low, high = (-128, 127) if dtype == "int8" else (0, 255)
    for _ in range(50):
        raw = rng.choice(rng.integers(low, high + 1, 6), size=1001).astype(dtype)
        scale, zero = (0.0, 0) if dtype == "float32" else (0.25, -3 if dtype == "int8" else 17)
        want = sorted(range(raw.size), key=lambda i: (-float(raw[i]), i))[:k]
        got = get_classes(raw[None], top_k=k, threshold=-1e9, scale=scale, zero_point=zero)
        assert [c.id for c in got] == want
        expected = [float(raw[i]) if scale == 0 else scale * (int(raw[i]) - zero) for i in want]
        assert [c.score for c in got] == pytest.approx(expected)


@pytest.mark.parametrize("k", [1, 3, 20])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "float32"])
def test_classifier_items_are_get_classes_rounded_and_labelled(dtype: str, k: int) -> None:
    # The frame loop's table-driven path must publish exactly what get_classes ranks, scores rounded to 4 places,
    # thresholds applied to the unrounded score, labels with the model's fallback for unnamed ids.
    rng = np.random.default_rng(11)
    low, high = (-128, 127) if dtype == "int8" else (0, 255)
    names = {i: f"class {i}" for i in range(0, 1001, 2)}  # odd ids unnamed

    def label(i: int) -> str:
        return names.get(i, str(i))

    scale, zero = (0.0, 0) if dtype == "float32" else (0.00390625 * 3, -7 if dtype == "int8" else 11)
    for threshold in (-1e9, 0.0, 0.3, 0.7, 2.0):
        classifier = Classifier(1001, label, k, threshold, scale, zero, dtype)
        for _ in range(20):
            raw = rng.choice(rng.integers(low, high + 1, 8), size=1001).astype(dtype)
            if dtype == "float32":
                raw = raw / 255.0
            want = [
                {"id": c.id, "label": label(c.id), "score": round(c.score, 4)}
                for c in get_classes(raw[None], k, threshold, scale, zero)
            ]
            assert classifier.items(raw[None]) == want


def test_classifier_skips_a_nan_score_like_get_classes() -> None:
    raw = np.array([0.2, np.nan, 0.9, 0.5], np.float32)
    classifier = Classifier(4, str, 3, 0.0, 0.0, 0, "float32")
    assert [item["id"] for item in classifier.items(raw)] == [c.id for c in get_classes(raw, 3)] == [2, 3]


def test_dequantize_through_int64_does_not_wrap() -> None:
    # uint8 250 - zero point 200 would be fine, but 10 - 200 wraps around in uint8 arithmetic.
    raw = np.array([10, 200, 250], np.uint8)
    assert dequantize(raw, 0.5, 200).tolist() == [-95.0, 0.0, 25.0]
    classes = get_classes(raw, top_k=3, threshold=-100.0, scale=0.5, zero_point=200)
    assert [(c.id, c.score) for c in classes] == [(2, 25.0), (1, 0.0), (0, -95.0)]


def _ssd(boxes: list[list[float]], classes: list[int], scores: list[float]) -> tuple[np.ndarray, ...]:
    n = 10
    b = np.zeros((1, n, 4), np.float32)
    b[0, : len(boxes)] = boxes
    c = np.zeros((1, n), np.float32)
    c[0, : len(classes)] = classes
    s = np.zeros((1, n), np.float32)
    s[0, : len(scores)] = scores
    return b, c, s, np.array([len(scores)], np.float32)


def test_detections_threshold_filter_and_order() -> None:
    geometry = plan((100, 200), (100, 100), "stretch")
    b, c, s, n = _ssd([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.1, 0.1, 0.2, 0.2]], [1, 2, 1], [0.6, 0.9, 0.3])
    found = get_detections(b, c, s, n, geometry, threshold=0.5)
    assert [(d.id, d.score) for d in found] == [(2, pytest.approx(0.9)), (1, pytest.approx(0.6))]
    # stretch: x scales by 2 (200 px wide frame), y by 1
    assert found[1].bbox == BBox(0.0, 0.0, 100.0, 50.0)
    assert found[1].bbox_norm == BBox(0.0, 0.0, 0.5, 0.5)
    assert [d.id for d in get_detections(b, c, s, n, geometry, 0.2, class_ids={1})] == [1, 1]
    assert len(get_detections(b, c, s, n, geometry, 0.2, top_k=1)) == 1


def test_count_limits_the_valid_entries() -> None:
    geometry = plan((100, 100), (100, 100), "stretch")
    b, c, s, _ = _ssd([[0, 0, 1, 1], [0, 0, 1, 1]], [0, 0], [0.9, 0.9])
    assert len(get_detections(b, c, s, np.array([1.0]), geometry, 0.5)) == 1


def test_letterbox_boxes_map_back_to_source_pixels() -> None:
    # A 200x100 (w x h) frame letterboxed into 100x100: it occupies rows 25..75 of the model input.
    geometry = plan((100, 200), (100, 100), "letterbox")
    b, c, s, n = _ssd([[0.25, 0.0, 0.75, 1.0], [0.0, 0.0, 0.2, 1.0]], [3, 4], [0.8, 0.7])
    found = get_detections(b, c, s, n, geometry, 0.5)
    assert found[0].bbox == BBox(0.0, 0.0, 200.0, 100.0)
    assert found[0].bbox_norm == BBox(0.0, 0.0, 1.0, 1.0)
    assert [d.id for d in found] == [3]  # the second box lies entirely in the padding


def test_center_crop_boxes_map_back_to_source_pixels() -> None:
    geometry = plan((100, 200), (50, 50), "center_crop")  # the middle 100x100 of the frame
    b, c, s, n = _ssd([[0.0, 0.0, 0.5, 0.5]], [0], [0.9])
    (det,) = get_detections(b, c, s, n, geometry, 0.5)
    assert det.bbox == BBox(50.0, 0.0, 100.0, 50.0)
    assert det.bbox_norm == BBox(0.25, 0.0, 0.5, 0.5)
