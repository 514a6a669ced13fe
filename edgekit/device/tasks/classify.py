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
    raw = np.asarray(scores).reshape(-1)
    k = max(0, min(int(top_k), raw.size))
    if k == 0:
        return ()
    # Rank on the raw values (quantization scales are positive, so the order is the same) and dequantize only
    # the k winners: per frame this is the difference between touching 1000 floats and touching 5.
    # A partition finds the k-th best in O(N); ties at that value are filled lowest id first, then only the k
    # winners are sorted (ties by lower id first).
    if k < raw.size:
        kth = np.partition(raw, raw.size - k)[raw.size - k]
        above = np.flatnonzero(raw > kth)
        candidates = np.concatenate((above, np.flatnonzero(raw == kth)[: k - above.size]))
    else:
        candidates = np.arange(raw.size)
    values = dequantize(raw[candidates], scale, zero_point)
    order = np.lexsort((candidates, -values))
    return tuple(Class(int(candidates[j]), float(values[j])) for j in order if values[j] >= threshold)
