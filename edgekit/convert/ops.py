"""Operator histogram of a .tflite model (builtin op names and versions), read with TensorFlow's schema."""

from __future__ import annotations

from collections import Counter


def op_histogram(model: bytes) -> dict[str, int]:
    """Count the operators of every subgraph by name, e.g. ``{"CONV_2D": 35, "DEPTHWISE_CONV_2D": 17}``.

    Args:
        model: .tflite flatbuffer bytes.

    Returns:
        op name (custom ops by their custom code) -> count.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    counts: Counter[str] = Counter()
    for subgraph in obj.subgraphs:
        for op in subgraph.operators:
            counts[flatbuffer_utils.opcode_to_name(obj, op.opcodeIndex)] += 1
    return dict(sorted(counts.items()))
