"""Postprocessing: pure functions from output arrays to frozen results (classification, SSD detection)."""

from __future__ import annotations

import numpy as np


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values of a quantized tensor: ``scale * (q - zero_point)``.

    The subtraction runs in int64: with uint8 data and a zero point of, say, 200, doing it in the tensor's own
    type would wrap around.

    Args:
        values: the raw output (any integer or float dtype).
        scale: the tensor's scale; 0 means "not quantized" and returns the values as float.
        zero_point: the tensor's zero point.

    Returns:
        A float32 array of the same shape.
    """
    if scale == 0 or np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32, copy=False)
    return (scale * (values.astype(np.int64) - zero_point)).astype(np.float32)
