"""Cross-layer equalization on the calibrated TFLite graph, so one int8 scale per tensor fits all its channels.

MobileNet activations after a depthwise or expansion convolution differ per channel by orders of magnitude,
but TFLite quantizes activations per tensor: small channels get a handful of levels. Scaling output channel
``c`` of the producer convolution (its folded weights and bias) by ``s_c > 1`` and the matching input slice of
the consumer convolution by ``1 / s_c`` leaves the float function unchanged (ReLU is positively homogeneous;
ReLU6's cap moves to ``6 / s_c``, kept ``headroom`` times above what the channel reached on the calibration
images) while every channel uses the tensor's whole int8 range (Nagel et al., "Data-Free Quantization", 2019).
Working on the graph the converter already produced means no second conversion, and the activation statistics
of the unequalized graph give the equalized ones exactly (those tensors are scaled per channel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# TFLite builtin operator codes and fused activations (tensorflow/lite/schema/schema.fbs)
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, PAD = 3, 4, 9, 34
RELU, RELU6 = 1, 3
FLOAT32 = 0


@dataclass(frozen=True)
class Pair:
    """A producer convolution with a fused ReLU/ReLU6, the tensors carrying its channels, and its consumer."""

    producer: int  # operator index
    tensors: tuple[int, ...]  # the producer's output, then a zero PAD's output if one sits in between
    consumer: int  # operator index (CONV_2D or DEPTHWISE_CONV_2D with multiplier 1)
    cap: float | None  # 6.0 for ReLU6, None for ReLU


def opcode(model: Any, op: Any) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def weights(model: Any, tensor: int) -> np.ndarray | None:
    """The float32 constant behind ``tensor`` (a copy), or None if it is not one."""
    t = model.subgraphs[0].tensors[tensor]
    buf = model.buffers[t.buffer]
    if t.type != FLOAT32 or buf is None or buf.data is None or len(buf.data) == 0:
        return None
    return np.frombuffer(np.asarray(buf.data, dtype=np.uint8).tobytes(), dtype=np.float32).reshape(t.shape).copy()


def set_weights(model: Any, tensor: int, values: np.ndarray) -> None:
    t = model.subgraphs[0].tensors[tensor]
    model.buffers[t.buffer].data = np.frombuffer(values.astype(np.float32).tobytes(), dtype=np.uint8)


def _consumers(sub: Any) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, op in enumerate(sub.operators):
        for i in op.inputs:
            out.setdefault(int(i), []).append(k)
    return out


def _buffer_users(sub: Any) -> dict[int, int]:
    users: dict[int, int] = {}
    for t in sub.tensors:
        users[t.buffer] = users.get(t.buffer, 0) + 1
    return users


def find_pairs(model: Any) -> list[Pair]:
    """Conv(+ReLU/ReLU6) -> [PAD] -> Conv/DepthwiseConv chains whose activation has no other consumer."""
    sub = model.subgraphs[0]
    consumers = _consumers(sub)
    users = _buffer_users(sub)
    outputs = {int(i) for i in sub.outputs}

    def own_float(op: Any) -> bool:  # weights and bias are float constants used by this operator alone
        return len(op.inputs) >= 3 and all(
            int(i) >= 0 and weights(model, int(i)) is not None and users[sub.tensors[int(i)].buffer] == 1
            for i in op.inputs[1:3]
        )

    pairs = []
    for k, op in enumerate(sub.operators):
        if opcode(model, op) not in (CONV_2D, DEPTHWISE_CONV_2D) or not own_float(op):
            continue
        act = op.builtinOptions.fusedActivationFunction
        if act not in (RELU, RELU6):
            continue
        tensors = [int(op.outputs[0])]
        nxt = consumers.get(tensors[0], [])
        if len(nxt) == 1 and opcode(model, sub.operators[nxt[0]]) == PAD:
            pad = sub.operators[nxt[0]]
            if len(pad.inputs) > 2:  # PADV2-like constant value: not zero-preserving for sure
                continue
            tensors.append(int(pad.outputs[0]))
            nxt = consumers.get(tensors[-1], [])
        if len(nxt) != 1 or outputs & set(tensors):
            continue
        consumer = sub.operators[nxt[0]]
        code = opcode(model, consumer)
        if int(consumer.inputs[0]) != tensors[-1] or not own_float(consumer):
            continue
        if code == DEPTHWISE_CONV_2D and consumer.builtinOptions.depthMultiplier != 1:
            continue
        if code not in (CONV_2D, DEPTHWISE_CONV_2D):
            continue
        pairs.append(Pair(k, tuple(tensors), nxt[0], 6.0 if act == RELU6 else None))
    return pairs


def scales(pair: Pair, channel_max: np.ndarray, max_scale: float = 16.0, headroom: float = 2.0) -> np.ndarray:
    """Per-channel factors from the channel maxima of the producer's activation on the calibration images."""
    m = channel_max.astype(np.float64)
    top = float(m.max())
    if top <= 0:
        return np.ones_like(m)
    limit = np.full_like(m, max_scale)
    if pair.cap is not None:
        # brighter scenes than the calibration set must not be clipped where the float model would not clip
        limit = np.minimum(limit, pair.cap / (headroom * np.maximum(m, 1e-12)))
    # Dead channels (never positive) keep scale 1: nothing to gain, and 1/s would be meaningless.
    return np.where(m > top * 1e-6, np.clip(top / np.maximum(m, 1e-12), 1.0, np.maximum(limit, 1.0)), 1.0)


def apply(model: Any, pair: Pair, s: np.ndarray) -> None:
    """Rescale ``pair`` in place by ``s`` (producer channel c times s_c, consumer input c divided by s_c)."""
    sub = model.subgraphs[0]
    producer, consumer = sub.operators[pair.producer], sub.operators[pair.consumer]
    w_id, b_id = int(producer.inputs[1]), int(producer.inputs[2])
    w, b = weights(model, w_id), weights(model, b_id)
    assert w is not None and b is not None  # find_pairs checked
    # CONV_2D filters are (out, h, w, in), DEPTHWISE (1, h, w, out): the output axis is 0 or 3.
    w = w * (s[:, None, None, None] if opcode(model, producer) == CONV_2D else s[None, None, None, :])
    set_weights(model, w_id, w)
    set_weights(model, b_id, b * s)
    c_id = int(consumer.inputs[1])
    k = weights(model, c_id)
    assert k is not None
    set_weights(model, c_id, k / s[None, None, None, :])  # the input axis is last in both layouts


def equalize(model: Any, channel_max: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Equalize every pair of the (flatbuffer object) ``model`` in place.

    Args:
        model: a calibrate-only TFLite model as a flatbuffer object (float weights).
        channel_max: tensor index -> per-channel maximum over the calibration images.

    Returns:
        tensor index -> the per-channel factor its values were multiplied by (for every rescaled tensor).
    """
    applied: dict[int, np.ndarray] = {}
    for pair in find_pairs(model):
        if pair.tensors[0] not in channel_max:
            continue
        s = scales(pair, channel_max[pair.tensors[0]])
        if np.all(s == 1.0):
            continue
        apply(model, pair, s)
        for t in pair.tensors:
            applied[t] = s
    logger.info("equalized %d activations", len(applied))
    return applied
