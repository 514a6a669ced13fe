"""Cross-layer equalization of ReLU/ReLU6 activations feeding a convolution, so one int8 scale fits all channels.

MobileNet activations after a depthwise or expansion convolution differ per channel by orders of magnitude,
but TFLite quantizes activations per tensor: small channels get a handful of levels. Scaling channel ``c`` of
the producer (its BatchNorm gamma and beta) by ``s_c > 1`` and the matching input slice of the consumer
convolution by ``1 / s_c`` leaves the float function unchanged (ReLU is positively homogeneous; ReLU6's cap
moves to ``6 / s_c``, which stays above what the channel reached on the calibration images) while every
channel now uses the tensor's whole int8 range (Nagel et al., "Data-Free Quantization", 2019). A depthwise
consumer is quantized per channel, so the rescaling costs it nothing; a pointwise consumer loses a little weight
precision on up-scaled columns, hence the cap on ``s_c``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """A producer (conv + BatchNorm), its ReLU/ReLU6, and the convolution that consumes it."""

    norm: Any
    relu: Any
    consumer: Any
    cap: float | None  # the ReLU's max_value (6.0 for ReLU6) or None


def _producer(tensor: Any) -> Any:
    return tensor._keras_history.operation


def find_pairs(model: Any) -> list[Pair]:
    """Conv -> BatchNorm -> ReLU(6) -> [ZeroPadding] -> Conv/DepthwiseConv chains with no other consumer."""
    import keras

    layers = keras.layers
    consumers: dict[int, list[Any]] = {}
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        for t in inputs:
            try:
                consumers.setdefault(id(_producer(t)), []).append(layer)
            except AttributeError:
                continue
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, layers.ReLU) or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            continue
        norm = _producer(layer.input)
        if not isinstance(norm, layers.BatchNormalization) or len(consumers.get(id(norm), [])) != 1:
            continue
        if not isinstance(_producer(norm.input), (layers.Conv2D, layers.DepthwiseConv2D)):
            continue
        nxt = consumers.get(id(layer), [])
        if len(nxt) != 1:
            continue
        consumer = nxt[0]
        if isinstance(consumer, layers.ZeroPadding2D):
            after = consumers.get(id(consumer), [])
            if len(after) != 1:
                continue
            consumer = after[0]
        if isinstance(consumer, layers.Conv2D) and consumer.groups == 1:
            pass
        elif not isinstance(consumer, layers.DepthwiseConv2D):
            continue
        cap = None if layer.max_value is None else float(layer.max_value)
        pairs.append(Pair(norm, layer, consumer, cap))
    return pairs


def channel_maxima(model: Any, pairs: list[Pair], images: np.ndarray, batch: int = 8) -> list[np.ndarray]:
    """Per-channel maximum of each pair's activation over the (baked-input) calibration images."""
    import keras

    probe = keras.Model(model.inputs, [p.relu.output for p in pairs])
    maxima = [np.zeros(int(p.relu.output.shape[-1]), dtype=np.float64) for p in pairs]
    for start in range(0, len(images), batch):
        outs = probe(images[start : start + batch], training=False)
        for k, out in enumerate(outs):
            maxima[k] = np.maximum(maxima[k], np.asarray(out).max(axis=(0, 1, 2)))
    return maxima


def equalize(
    model: Any, pixel_images: np.ndarray, prepare_input: Any = None, max_scale: float = 16.0, headroom: float = 2.0
) -> dict[str, float]:
    """Rescale channels in place; returns per-activation mean scale applied (for the report).

    Args:
        model: the float Keras model (its weights are modified in place).
        pixel_images: calibration inputs already in the model's input units.
        prepare_input: unused hook kept None; the caller passes inputs the model accepts.
        max_scale: upper bound of any channel's scale factor.

    Returns:
        activation layer name -> mean scale factor.
    """
    pairs = find_pairs(model)
    if not pairs:
        return {}
    maxima = channel_maxima(model, pairs, pixel_images)
    applied: dict[str, float] = {}
    for pair, m in zip(pairs, maxima, strict=True):
        top = float(m.max())
        if top <= 0:
            continue
        # Dead channels (never positive) keep scale 1: nothing to gain, and 1/s would be meaningless.
        limit = np.full_like(m, max_scale)
        if pair.cap is not None:
            # Keep ReLU6's moved cap (cap / s) at least `headroom` times above what the channel reached, so that
            # brighter scenes than the calibration set are not clipped where the float model would not clip.
            limit = np.minimum(limit, pair.cap / (headroom * np.maximum(m, 1e-12)))
        s = np.where(m > top * 1e-6, np.clip(top / np.maximum(m, 1e-12), 1.0, np.maximum(limit, 1.0)), 1.0)
        gamma, beta, mean, var = pair.norm.get_weights()
        pair.norm.set_weights([gamma * s, beta * s, mean, var])
        weights = pair.consumer.get_weights()
        kernel = weights[0]
        # Conv2D kernels are (h, w, in, out), depthwise (h, w, channels, multiplier): the input axis is 2 in both.
        kernel = kernel / s[None, None, :, None]
        pair.consumer.set_weights([kernel.astype(np.float32), *weights[1:]])
        applied[pair.relu.name] = float(s.mean())
    logger.info("equalized %d activations", len(applied))
    return applied
