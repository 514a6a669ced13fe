"""SSD anchors, the centre-size box coder and target matching."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.convert.detect.anchors import (
    AnchorSpec,
    center_to_corners,
    decode_boxes,
    encode_boxes,
    generate_anchors,
    iou_matrix,
    match_targets,
)

SIZES_160 = [(10, 10), (5, 5), (3, 3), (2, 2), (1, 1), (1, 1)]


def test_anchor_count_and_order_follow_the_heads() -> None:
    anchors = generate_anchors(SIZES_160)
    assert anchors.shape == (10 * 10 * 3 + (25 + 9 + 4 + 1 + 1) * 6, 4)
    # First map: cell (0, 0) has the 0.1 square box, then scale 0.2 at aspect 2 and 0.5.
    np.testing.assert_allclose(anchors[0], [0.05, 0.05, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(anchors[1], [0.05, 0.05, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)], atol=1e-6)
    # Cell (0, 1) comes next (row-major), then the second map starts after 300 anchors.
    np.testing.assert_allclose(anchors[3, :2], [0.05, 0.15], atol=1e-6)
    second = anchors[300]
    np.testing.assert_allclose(second, [0.1, 0.1, 0.35, 0.35], atol=1e-6)  # s_1 = 0.2 + 0.75 / 5
    # The extra square box of the last map has scale sqrt(0.95 * 1.0).
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], atol=1e-6)


def test_boxes_per_cell() -> None:
    assert AnchorSpec().boxes_per_cell(6) == [3, 6, 6, 6, 6, 6]


def test_encode_decode_round_trip_and_known_code() -> None:
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], dtype=np.float32)
    box = np.array([[0.42, 0.34, 0.62, 0.74]], dtype=np.float32)  # centre (0.52, 0.54), 0.2 x 0.4
    code = encode_boxes(box, anchors)
    np.testing.assert_allclose(code, [[0.02 / 0.2 * 10, 0.04 / 0.4 * 10, 0.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(decode_boxes(code, anchors), box, atol=1e-6)
    bigger = np.array([[0.3, 0.1, 0.7, 0.9]], dtype=np.float32)  # twice the anchor: log(2) * 5
    np.testing.assert_allclose(encode_boxes(bigger, anchors)[0, 2:], [5 * math.log(2)] * 2, atol=1e-5)


def test_iou() -> None:
    iou = iou_matrix(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 2]]))
    np.testing.assert_allclose(iou, [[1 / 7, 0.0, 1.0]], atol=1e-6)


def test_matching_gives_every_object_a_positive() -> None:
    anchors = generate_anchors(SIZES_160)
    corners = center_to_corners(anchors)
    exact = corners[305]
    tiny = np.array([0.01, 0.01, 0.03, 0.03], dtype=np.float32)  # IoU < 0.5 with every anchor
    cls, codes = match_targets(np.stack([exact, tiny]), np.array([2, 1]), anchors)
    assert cls[305] == 3
    np.testing.assert_allclose(codes[305], 0.0, atol=1e-5)
    assert (cls == 2).sum() == 1  # forced match only
    assert iou_matrix(corners[cls == 2], tiny[None]).max() < 0.5
    assert set(np.unique(cls)) == {0, 2, 3}


def test_no_objects_means_all_background() -> None:
    anchors = generate_anchors(SIZES_160)
    cls, codes = match_targets(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), anchors)
    assert not cls.any() and not codes.any()


@pytest.mark.parametrize("size", [96, 160, 320])
def test_anchors_cover_the_image(size: int) -> None:
    anchors = generate_anchors([(math.ceil(size / 16), math.ceil(size / 16)), (math.ceil(size / 32),) * 2])
    assert anchors[:, :2].min() > 0 and anchors[:, :2].max() < 1
