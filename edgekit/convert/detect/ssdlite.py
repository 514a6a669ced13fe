"""SSDLite-MobileNetV2 in tf_keras: backbone, extra feature layers, separable heads, loss and training."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgekit.convert.detect._tf import import_tf
from edgekit.convert.detect.anchors import AnchorSpec, FloatArray, generate_anchors, match_targets

logger = logging.getLogger(__name__)

# SSDLite's extra layers after the stride-32 map (TF OD API `ssd_mobilenet_v2` feature extractor); each is a
# 1x1 conv to half depth, a stride-2 3x3 depthwise conv and a 1x1 conv to full depth. Scaled by alpha.
EXTRA_LAYER_DEPTHS: tuple[int, ...] = (512, 256, 256, 128)
MIN_DEPTH = 16
# MobileNetV2 layers whose outputs feed the detector: the expansion of block 13 (stride 16, before the
# stride-2 depthwise) and the final 1x1 conv (stride 32), as in the TF OD API.
BACKBONE_OUTPUTS: tuple[str, str] = ("block_13_expand_relu", "out_relu")


@dataclass
class SSDLite:
    """A built SSDLite detector: the Keras model and the anchors its outputs are encoded against.

    Attributes:
        model: tf_keras model, float input ``[N, S, S, 3]`` in [-1, 1], outputs box codes ``[N, A, 4]`` and
            class logits ``[N, A, num_classes + 1]`` (column 0 is background).
        anchors: ``[A, 4]`` centre-size anchors, normalised.
        num_classes: classes without background.
        input_size: square input side in pixels.
        alpha: MobileNetV2 width multiplier.
        feature_map_sizes: (height, width) of each feature map, finest first.
    """

    model: Any
    anchors: FloatArray
    num_classes: int
    input_size: int
    alpha: float
    feature_map_sizes: list[tuple[int, int]] = field(default_factory=list)


def build_ssdlite(
    num_classes: int,
    input_size: int = 320,
    alpha: float = 1.0,
    anchor_spec: AnchorSpec | None = None,
    seed: int = 0,
    bn_momentum: float = 0.9,
) -> SSDLite:
    """Build an SSDLite-MobileNetV2 detector with randomly initialised weights.

    Args:
        num_classes: number of object classes (background excluded).
        input_size: square input side; a multiple of 32 keeps every feature map aligned.
        alpha: MobileNetV2 width multiplier; also scales the extra layers' depths.
        anchor_spec: anchor scales and aspect ratios (`AnchorSpec()` when omitted).
        seed: seed for weight initialisation.
        bn_momentum: momentum of every batch normalisation's moving statistics.

    Returns:
        The detector.
    """
    tf, keras = import_tf()
    anchor_spec = anchor_spec or AnchorSpec()
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3), alpha=alpha, include_top=False, weights=None
    )
    features = [backbone.get_layer(name).output for name in BACKBONE_OUTPUTS]
    x = features[-1]
    for i, depth in enumerate(EXTRA_LAYER_DEPTHS):
        d = max(int(depth * alpha), MIN_DEPTH)
        x = _conv_bn(layers, x, max(d // 2, MIN_DEPTH), f"extra_{i}_1x1_reduce")
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name=f"extra_{i}_dw")(x)
        x = layers.BatchNormalization(epsilon=1e-3, name=f"extra_{i}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"extra_{i}_dw_relu")(x)
        x = _conv_bn(layers, x, d, f"extra_{i}_1x1")
        features.append(x)

    per_cell = anchor_spec.boxes_per_cell(len(features))
    sizes = [(int(f.shape[1]), int(f.shape[2])) for f in features]
    box_outs, cls_outs = [], []
    prior = math.log(0.99 * num_classes / 0.01)  # background starts at p ~= 0.99 so early losses stay sane
    for k, (feat, a) in enumerate(zip(features, per_cell, strict=True)):
        box = _separable_head(layers, feat, a * 4, f"box_{k}", keras.initializers.Zeros())
        box_outs.append(layers.Reshape((-1, 4), name=f"box_{k}_reshape")(box))
        bias = np.zeros(a * (num_classes + 1), dtype=np.float32)
        bias[:: num_classes + 1] = prior
        cls = _separable_head(layers, feat, a * (num_classes + 1), f"cls_{k}", keras.initializers.Constant(bias))
        cls_outs.append(layers.Reshape((-1, num_classes + 1), name=f"cls_{k}_reshape")(cls))
    boxes = layers.Concatenate(axis=1, name="box_encodings")(box_outs)
    logits = layers.Concatenate(axis=1, name="class_logits")(cls_outs)
    model = keras.Model(backbone.input, [boxes, logits], name=f"ssdlite_mobilenet_v2_{alpha}_{input_size}")
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            # Keras' MobileNetV2 uses 0.999, which leaves the moving statistics near their initial values
            # after the few thousand steps a user's fine-tuning takes; the exported (inference) model would
            # then see unnormalised activations.
            layer.momentum = bn_momentum
    anchors = generate_anchors(sizes, anchor_spec)
    if anchors.shape[0] != int(boxes.shape[1]):
        raise AssertionError(f"{anchors.shape[0]} anchors for {boxes.shape[1]} head outputs")
    del tf
    return SSDLite(model, anchors, num_classes, input_size, alpha, sizes)


def _conv_bn(layers: Any, x: Any, depth: int, name: str) -> Any:
    x = layers.Conv2D(depth, 1, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _separable_head(layers: Any, x: Any, outputs: int, name: str, bias_init: Any) -> Any:
    # SSDLite replaces SSD's 3x3 head convs by a depthwise 3x3 (+BN, ReLU6) and a 1x1 projection.
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    return layers.Conv2D(outputs, 1, bias_initializer=bias_init, name=f"{name}_1x1")(x)


def ssd_loss(
    tf: Any,
    cls_targets: Any,
    box_targets: Any,
    box_pred: Any,
    logits: Any,
    negative_ratio: float = 3.0,
    min_negatives: int = 8,
) -> tuple[Any, Any]:
    """SSD multibox loss: softmax cross-entropy with hard-negative mining plus Huber loss on box codes.

    Per image, only the ``negative_ratio`` x (number of positives) background anchors with the highest
    cross-entropy count (at least ``min_negatives``, so images without objects still teach background).
    Both terms are normalised by the number of positive anchors in the batch.

    Args:
        tf: the TensorFlow module.
        cls_targets: ``[N, A]`` int targets (0 = background).
        box_targets: ``[N, A, 4]`` box codes.
        box_pred: ``[N, A, 4]`` predicted codes.
        logits: ``[N, A, C + 1]`` class logits.
        negative_ratio: negatives kept per positive.
        min_negatives: negatives kept per image at least.

    Returns:
        (classification loss, localisation loss), scalar tensors.
    """
    positive = cls_targets > 0
    pos_f = tf.cast(positive, tf.float32)
    num_pos_img = tf.reduce_sum(pos_f, axis=1)
    num_pos = tf.maximum(tf.reduce_sum(pos_f), 1.0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=cls_targets, logits=logits)
    neg_ce = tf.stop_gradient(tf.where(positive, tf.zeros_like(ce), ce))
    rank = tf.argsort(tf.argsort(neg_ce, axis=1, direction="DESCENDING"), axis=1)
    num_anchors = tf.cast(tf.shape(ce)[1], tf.float32)
    num_neg = tf.minimum(tf.maximum(negative_ratio * num_pos_img, float(min_negatives)), num_anchors - num_pos_img)
    negative = tf.logical_and(tf.cast(rank, tf.float32) < num_neg[:, None], tf.logical_not(positive))
    cls_loss = tf.reduce_sum(ce * (pos_f + tf.cast(negative, tf.float32))) / num_pos
    huber = tf.reduce_sum(
        tf.where(
            tf.abs(box_pred - box_targets) < 1.0,
            0.5 * tf.square(box_pred - box_targets),
            tf.abs(box_pred - box_targets) - 0.5,
        ),
        axis=-1,
    )
    box_loss = tf.reduce_sum(huber * pos_f) / num_pos
    return cls_loss, box_loss


def encode_dataset(
    det: SSDLite, boxes: Sequence[FloatArray], classes: Sequence[npt.NDArray[np.int64]]
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Match every image's objects to the anchors.

    Args:
        det: the detector (for its anchors).
        boxes: per image ``[M, 4]`` normalised corner boxes.
        classes: per image ``[M]`` 0-based class ids.

    Returns:
        (``[N, A]`` class targets, ``[N, A, 4]`` box targets).
    """
    pairs = [match_targets(b, c, det.anchors) for b, c in zip(boxes, classes, strict=True)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def train_ssdlite(
    det: SSDLite,
    images: npt.NDArray[np.uint8],
    boxes: Sequence[FloatArray],
    classes: Sequence[npt.NDArray[np.int64]],
    steps: int = 1000,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> list[float]:
    """Train a detector on images with boxes (Adam, cosine decay, random horizontal flips).

    Args:
        det: the detector, trained in place.
        images: ``[N, S, S, 3]`` uint8 RGB images at the detector's input size.
        boxes: per image ``[M, 4]`` normalised (ymin, xmin, ymax, xmax).
        classes: per image ``[M]`` 0-based class ids.
        steps: optimiser steps.
        batch_size: images per step.
        learning_rate: peak learning rate.
        seed: seed for batch order and flips.

    Returns:
        The total loss of every step.
    """
    tf, keras = import_tf()
    if images.shape[1:3] != (det.input_size, det.input_size):
        raise ValueError(f"images are {images.shape[1:3]}, the detector takes {det.input_size}")
    flipped_boxes = [np.stack([b[:, 0], 1 - b[:, 3], b[:, 2], 1 - b[:, 1]], axis=-1) if len(b) else b for b in boxes]
    cls_t, box_t = encode_dataset(det, boxes, classes)
    cls_tf, box_tf = encode_dataset(det, flipped_boxes, classes)
    warmup = max(steps // 20, 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate * 0.1, steps - warmup, alpha=0.01, warmup_target=learning_rate, warmup_steps=warmup
    )
    optimizer = keras.optimizers.Adam(schedule)
    model = det.model

    @tf.function(reduce_retracing=True)
    def step(x: Any, ct: Any, bt: Any) -> Any:
        with tf.GradientTape() as tape:
            box_pred, logits = model(x, training=True)
            cls_loss, box_loss = ssd_loss(tf, ct, bt, box_pred, logits)
            loss = cls_loss + box_loss
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(seed)
    history: list[float] = []
    n = images.shape[0]
    for i in range(steps):
        idx = rng.choice(n, size=batch_size, replace=n < batch_size)
        flip = rng.random(batch_size) < 0.5
        x = images[idx].copy()
        x[flip] = x[flip, :, ::-1]
        ct = np.where(flip[:, None], cls_tf[idx], cls_t[idx])
        bt = np.where(flip[:, None, None], box_tf[idx], box_t[idx])
        loss = float(step(tf.constant(x.astype(np.float32) / 127.5 - 1.0), tf.constant(ct), tf.constant(bt)))
        history.append(loss)
        if i % 50 == 0 or i == steps - 1:
            logger.info("step %d/%d loss %.3f", i + 1, steps, loss)
    return history
