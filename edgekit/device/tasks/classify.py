"""Classification: top-k classes above a threshold from a scores vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.device.tasks import dequantize


@dataclass(frozen=True)
class Class:
    """One class of a classification result."""

    id: int
    score: float


def get_classes(
    scores: np.ndarray, top_k: int = 1, threshold: float = 0.0, scale: float = 0.0, zero_point: int = 0
) -> tuple[Class, ...]:
    """The ``top_k`` best classes scoring at least ``threshold``, best first.

    Args:
        scores: the model's output, shape (N,) or (1, N), raw (quantized) or float.
        top_k: how many to return at most.
        threshold: minimum dequantized score.
        scale: output quantization scale (0 when the output is float).
        zero_point: output quantization zero point.

    Returns:
        The classes, highest score first; ties keep the lower id first.
    """
    values = dequantize(np.asarray(scores).reshape(-1), scale, zero_point)
    k = max(0, min(int(top_k), values.size))
    if k == 0:
        return ()
    # argpartition finds the k best in O(N); only those k are sorted. Stable sort on -score keeps low ids first.
    candidates = np.argpartition(-values, k - 1)[:k] if k < values.size else np.arange(values.size)
    order = candidates[np.lexsort((candidates, -values[candidates]))]
    return tuple(Class(int(i), float(values[i])) for i in order if values[i] >= threshold)
