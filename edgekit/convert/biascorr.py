"""Bias correction: cancel the mean output shift that int8 weight rounding causes in each convolution.

TFLite quantizes each output channel's (BatchNorm-folded) weights symmetrically to int8. The rounding error
``eps = W_q - W`` shifts that channel's output by ``eps · E[x]`` on average, a shift that accumulates through
MobileNet's depthwise layers (few taps, so little averaging). Knowing TFLite's rounding rule and the mean input
per channel on the calibration images, we subtract the expected shift (Nagel et al., "Data-Free
Quantization", 2019, analytic bias correction with empirical input means). For Conv -> BatchNorm the shift is
folded into BatchNorm's moving mean, so the float model is unchanged except for that known offset.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _int8_error(kernel: np.ndarray, axis_out: int) -> np.ndarray:
    """W_q - W for TFLite's per-channel symmetric int8 (scale = max|w| / 127 per output channel)."""
    moved = np.moveaxis(kernel.astype(np.float64), axis_out, -1)
    peak = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.round(moved / scale), -127, 127) * scale
    return np.moveaxis(q - moved, -1, axis_out)


def _targets(model: Any) -> list[tuple[Any, Any | None]]:
    """(conv or dense layer, the BatchNorm right after it or None) for every weight layer."""
    import keras

    layers = keras.layers
    consumers: dict[int, list[Any]] = {}
    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        for t in inputs:
            history = getattr(t, "_keras_history", None)
            if history is not None:
                consumers.setdefault(id(history.operation), []).append(layer)
    found = []
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            nxt = consumers.get(id(layer), [])
            norm = nxt[0] if len(nxt) == 1 and isinstance(nxt[0], layers.BatchNormalization) else None
            if norm is None and not layer.use_bias:
                continue
            found.append((layer, norm))
        elif isinstance(layer, layers.Dense) and layer.use_bias:
            found.append((layer, None))
    return found


def correct_biases(model: Any, images: np.ndarray, batch: int = 4) -> int:
    """Adjust biases / BatchNorm means of ``model`` in place for its int8 weight rounding.

    Args:
        model: float Keras model taking the same inputs as ``images``.
        images: calibration inputs in the model's input units.
        batch: images per forward pass.

    Returns:
        How many layers were corrected.
    """
    import keras

    targets = _targets(model)
    if not targets:
        return 0
    probe = keras.Model(model.inputs, [layer.input for layer, _ in targets])
    sums = [np.zeros(int(layer.input.shape[-1])) for layer, _ in targets]
    count = 0
    for start in range(0, len(images), batch):
        outs = probe(images[start : start + batch], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for j, out in enumerate(outs):
            arr = np.asarray(out)
            # per-image spatial mean, summed over the batch; float64 accumulation without a float64 copy
            axes = tuple(range(1, arr.ndim - 1))
            sums[j] += arr.mean(axis=axes, dtype=np.float64).sum(axis=0)
        count += len(images[start : start + batch])
    for (layer, norm), total in zip(targets, sums, strict=True):
        mean_in = total / count
        weights = layer.get_weights()
        kernel = weights[0]
        if isinstance(layer, keras.layers.Dense):
            eps = _int8_error(kernel, 1)
            shift = mean_in @ eps
            weights[1] = (weights[1] - shift).astype(np.float32)
            layer.set_weights(weights)
            continue
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        k: np.ndarray
        if norm is not None:
            gamma, beta, moving_mean, var = norm.get_weights()
            k = gamma / np.sqrt(var + norm.epsilon)
        else:
            k = np.ones(kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3])
        if depthwise:
            folded = kernel * k.reshape(kernel.shape[2], kernel.shape[3])[None, None]
            flat = folded.reshape(kernel.shape[0], kernel.shape[1], -1)
            eps = _int8_error(flat, 2)
            # each output channel c*mult+m reads input channel c only
            shift_folded = (eps.sum(axis=(0, 1)).reshape(kernel.shape[2], kernel.shape[3]) * mean_in[:, None]).reshape(
                -1
            )
        else:
            folded = kernel * k[None, None, None, :]
            eps = _int8_error(folded, 3)
            shift_folded = np.einsum("hwio,i->o", eps, mean_in)
        safe_k = np.where(np.abs(k) > 1e-12, k, 1.0)
        if norm is not None:
            norm.set_weights([gamma, beta, (moving_mean + shift_folded / safe_k).astype(np.float32), var])
        else:
            weights[1] = (weights[1] - shift_folded).astype(np.float32)
            layer.set_weights(weights)
    logger.info("bias-corrected %d layers", len(targets))
    return len(targets)
