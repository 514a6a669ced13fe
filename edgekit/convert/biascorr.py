"""Bias correction on the calibrated TFLite graph: cancel the mean output shift of int8 weight rounding.

TFLite quantizes each output channel's (BatchNorm-folded) weights symmetrically to int8. The rounding error
``eps = W_q - W`` shifts that channel's output by ``eps · E[x]`` on average, a shift that accumulates through
MobileNet's depthwise layers (few taps, so little averaging). Knowing TFLite's rounding rule and the mean input
per channel on the calibration images, we subtract the expected shift from the bias (Nagel et al., "Data-Free
Quantization", 2019, analytic bias correction with empirical input means).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekit.convert.equalize import CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, opcode, set_weights, weights

logger = logging.getLogger(__name__)


def int8_error(kernel: np.ndarray, axis_out: int) -> np.ndarray:
    """W_q - W for TFLite's per-channel symmetric int8 (scale = max|w| / 127 per output channel)."""
    moved = np.moveaxis(kernel.astype(np.float64), axis_out, -1)
    peak = np.abs(moved).reshape(-1, moved.shape[-1]).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.round(moved / scale), -127, 127) * scale
    return np.moveaxis(q - moved, -1, axis_out)


def weight_ops(model: Any) -> list[int]:
    """Operators whose float weights and bias are constants: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED."""
    sub = model.subgraphs[0]
    return [
        k
        for k, op in enumerate(sub.operators)
        if opcode(model, op) in (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)
        and len(op.inputs) >= 3
        and int(op.inputs[2]) >= 0
        and weights(model, int(op.inputs[1])) is not None
        and weights(model, int(op.inputs[2])) is not None
    ]


def correct_biases(model: Any, channel_mean: dict[int, np.ndarray]) -> int:
    """Adjust the biases of ``model`` (a flatbuffer object) in place for its int8 weight rounding.

    Args:
        model: a calibrate-only TFLite model as a flatbuffer object (float weights).
        channel_mean: tensor index -> per-channel (last axis) mean over the calibration images.

    Returns:
        How many operators were corrected.
    """
    sub = model.subgraphs[0]
    done = 0
    for k in weight_ops(model):
        op = sub.operators[k]
        x, w_id, b_id = (int(i) for i in op.inputs[:3])
        mean_in = channel_mean.get(x)
        w, b = weights(model, w_id), weights(model, b_id)
        if mean_in is None or w is None or b is None:
            continue
        code = opcode(model, op)
        if code == DEPTHWISE_CONV_2D:  # (1, h, w, in * multiplier): output channel j reads input j // multiplier
            eps = int8_error(w, 3)
            shift = eps.sum(axis=(0, 1, 2)) * np.repeat(mean_in, w.shape[3] // mean_in.size)
        elif code == CONV_2D:  # (out, h, w, in)
            if w.shape[3] != mean_in.size:
                continue  # grouped convolution
            shift = np.einsum("ohwi,i->o", int8_error(w, 0), mean_in)
        else:  # FULLY_CONNECTED (out, in)
            if w.ndim != 2 or w.shape[1] != mean_in.size:
                continue
            shift = int8_error(w, 0) @ mean_in
        set_weights(model, b_id, b - shift)
        done += 1
    logger.info("bias-corrected %d operators", done)
    return done
