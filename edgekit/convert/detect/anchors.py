"""SSD anchor generation and the centre-size box coder, in numpy (shared by training, export and tests)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# The box coder of the TF Object Detection API's SSD configs (faster_rcnn_box_coder): encodings are
# (ty, tx, th, tw) with ty = (y - ya) / ha * 10, th = log(h / ha) * 5. TFLite_Detection_PostProcess decodes
# with the same four numbers, so they are written into the exported model.
BOX_CODER_SCALES: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


@dataclass(frozen=True)
class AnchorSpec:
    """The SSD multiple-grid anchor layout (the TF OD API's `ssd_anchor_generator` defaults).

    Feature map ``k`` of ``n`` gets the scale ``s_k = min_scale + (max_scale - min_scale) * k / (n - 1)``
    (with ``s_n = 1.0``). On every cell it places one box per aspect ratio ``a`` of height ``s_k / sqrt(a)``
    and width ``s_k * sqrt(a)`` (normalised to the image), plus one square box of scale
    ``sqrt(s_k * s_{k+1})``. The lowest (finest) map uses only three boxes, ``(0.1, 1.0)``, ``(s_0, 2.0)``
    and ``(s_0, 0.5)``, as SSD does to keep the anchor count down. Box centres sit at cell centres.

    Attributes:
        min_scale: scale of the finest feature map.
        max_scale: scale of the coarsest feature map.
        aspect_ratios: width/height ratios used on every map but the finest.
    """

    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)

    def boxes_per_cell(self, num_layers: int) -> list[int]:
        """Number of anchors per cell on each of ``num_layers`` feature maps."""
        return [3] + [len(self.aspect_ratios) + 1] * (num_layers - 1)

    def layer_shapes(self, num_layers: int) -> list[list[tuple[float, float]]]:
        """(scale, aspect ratio) pairs of every feature map, in the order the heads emit them."""
        scales = [
            self.min_scale + (self.max_scale - self.min_scale) * k / max(num_layers - 1, 1) for k in range(num_layers)
        ] + [1.0]
        layers: list[list[tuple[float, float]]] = []
        for k in range(num_layers):
            if k == 0:
                layers.append([(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)])
            else:
                pairs = [(scales[k], ar) for ar in self.aspect_ratios]
                pairs.append((math.sqrt(scales[k] * scales[k + 1]), 1.0))
                layers.append(pairs)
        return layers


def generate_anchors(feature_map_sizes: Sequence[tuple[int, int]], spec: AnchorSpec | None = None) -> FloatArray:
    """All anchors of an SSD, centre-size encoded.

    The order is the one the heads produce after reshaping ``[N, H, W, A * k]`` to ``[N, H * W * A, k]``:
    feature map by feature map, then row, column and box within the cell.

    Args:
        feature_map_sizes: (height, width) of each feature map, finest first.
        spec: the anchor layout (`AnchorSpec()` when omitted).

    Returns:
        float32 array ``[num_anchors, 4]`` of (y_centre, x_centre, height, width), normalised to [0, 1].
    """
    spec = spec or AnchorSpec()
    out: list[FloatArray] = []
    for (fh, fw), pairs in zip(feature_map_sizes, spec.layer_shapes(len(feature_map_sizes)), strict=True):
        sizes = np.array([(s / math.sqrt(ar), s * math.sqrt(ar)) for s, ar in pairs], dtype=np.float32)
        cy, cx = np.meshgrid(
            (np.arange(fh, dtype=np.float32) + 0.5) / fh, (np.arange(fw, dtype=np.float32) + 0.5) / fw, indexing="ij"
        )
        a = len(pairs)
        grid = np.empty((fh, fw, a, 4), dtype=np.float32)
        grid[..., 0] = cy[:, :, None]
        grid[..., 1] = cx[:, :, None]
        grid[..., 2] = sizes[None, None, :, 0]
        grid[..., 3] = sizes[None, None, :, 1]
        out.append(grid.reshape(-1, 4))
    return np.concatenate(out, axis=0)


def corners_to_center(boxes: FloatArray) -> FloatArray:
    """(ymin, xmin, ymax, xmax) -> (y_centre, x_centre, height, width)."""
    h = boxes[..., 2] - boxes[..., 0]
    w = boxes[..., 3] - boxes[..., 1]
    return np.stack([boxes[..., 0] + h / 2, boxes[..., 1] + w / 2, h, w], axis=-1).astype(np.float32)


def center_to_corners(boxes: FloatArray) -> FloatArray:
    """(y_centre, x_centre, height, width) -> (ymin, xmin, ymax, xmax)."""
    hh = boxes[..., 2] / 2
    hw = boxes[..., 3] / 2
    return np.stack([boxes[..., 0] - hh, boxes[..., 1] - hw, boxes[..., 0] + hh, boxes[..., 1] + hw], axis=-1).astype(
        np.float32
    )


def encode_boxes(boxes: FloatArray, anchors: FloatArray) -> FloatArray:
    """Encode corner boxes against centre-size anchors with `BOX_CODER_SCALES`.

    Args:
        boxes: ``[N, 4]`` (ymin, xmin, ymax, xmax), one per anchor.
        anchors: ``[N, 4]`` centre-size anchors.

    Returns:
        ``[N, 4]`` (ty, tx, th, tw).
    """
    sy, sx, sh, sw = BOX_CODER_SCALES
    c = corners_to_center(boxes)
    eps = 1e-8
    h = np.maximum(c[:, 2], eps)
    w = np.maximum(c[:, 3], eps)
    return np.stack(
        [
            (c[:, 0] - anchors[:, 0]) / anchors[:, 2] * sy,
            (c[:, 1] - anchors[:, 1]) / anchors[:, 3] * sx,
            np.log(h / anchors[:, 2]) * sh,
            np.log(w / anchors[:, 3]) * sw,
        ],
        axis=-1,
    ).astype(np.float32)


def decode_boxes(codes: FloatArray, anchors: FloatArray) -> FloatArray:
    """Inverse of `encode_boxes`: ``[N, 4]`` codes -> ``[N, 4]`` (ymin, xmin, ymax, xmax)."""
    sy, sx, sh, sw = BOX_CODER_SCALES
    cy = codes[:, 0] / sy * anchors[:, 2] + anchors[:, 0]
    cx = codes[:, 1] / sx * anchors[:, 3] + anchors[:, 1]
    h = np.exp(codes[:, 2] / sh) * anchors[:, 2]
    w = np.exp(codes[:, 3] / sw) * anchors[:, 3]
    return center_to_corners(np.stack([cy, cx, h, w], axis=-1))


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of corner boxes ``a [N, 4]`` and ``b [M, 4]`` -> ``[N, M]``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def match_targets(
    gt_boxes: FloatArray,
    gt_classes: npt.NDArray[np.int64],
    anchors: FloatArray,
    iou_threshold: float = 0.5,
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Assign ground truth to anchors the SSD way (argmax matcher plus forced best match per object).

    An anchor whose best IoU with any object is >= ``iou_threshold`` takes that object; every object also
    takes its single best anchor so small or oddly shaped objects are never left without a positive.

    Args:
        gt_boxes: ``[M, 4]`` corner boxes, normalised.
        gt_classes: ``[M]`` 0-based class ids.
        anchors: ``[N, 4]`` centre-size anchors.
        iou_threshold: IoU from which an anchor is positive.

    Returns:
        (``[N]`` targets with 0 = background and ``c + 1`` for class ``c``, ``[N, 4]`` box codes; zero for
        background anchors).
    """
    n = anchors.shape[0]
    cls_t = np.zeros(n, dtype=np.int64)
    box_t = np.zeros((n, 4), dtype=np.float32)
    if len(gt_boxes) == 0:
        return cls_t, box_t
    iou = iou_matrix(center_to_corners(anchors), gt_boxes)  # [N, M]
    best_gt = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    positive = best_iou >= iou_threshold
    forced = iou.argmax(axis=0)  # best anchor of every object
    best_gt[forced] = np.arange(len(gt_boxes))
    positive[forced] = True
    cls_t[positive] = np.asarray(gt_classes)[best_gt[positive]] + 1
    box_t[positive] = encode_boxes(np.asarray(gt_boxes, dtype=np.float32)[best_gt[positive]], anchors[positive])
    return cls_t, box_t
