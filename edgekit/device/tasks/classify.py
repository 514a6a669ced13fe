"""Classification: top-k classes above a threshold from a scores vector."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    raw = (scores if isinstance(scores, np.ndarray) else np.asarray(scores)).reshape(-1)
    k = max(0, min(int(top_k), raw.size))
    if k == 0:
        return ()
    # Rank on the raw values (quantization scales are positive, so the order is the same) and dequantize only
    # the k winners. This runs right after invoke(), when the interpreter has pushed Python's and numpy's code out
    # of the CPU caches, so each distinct numpy call costs several microseconds: a few argmax calls (each gives
    # the lowest id among equal maxima) beat any sort for the usual k; a stable sort (ties in id order; a radix
    # sort on 8-bit data) takes over for large k.
    if k <= _ARGMAX_K:
        ranked = _top_by_argmax(raw, k)
    else:
        ranked = np.argsort(~raw if raw.dtype.kind in "iu" else -raw, kind="stable")[:k].tolist()
    quantized = raw.dtype.kind in "iu" and scale != 0
    classes = []
    for i in ranked:
        value = raw.item(i)
        score = scale * (value - zero_point) if quantized else float(value)
        if score >= threshold:
            classes.append(Class(i, score))
    return tuple(classes)


_ARGMAX_K = 8
_INT16_MIN = -(2**15)


def _top_by_argmax(raw: np.ndarray, k: int) -> list[int]:
    """Ids of the k largest values, best first, lower id first among equals (k small)."""
    small = raw.dtype.kind in "iu" and raw.itemsize == 1
    work = raw.astype(np.int16 if small else np.float64)  # a copy, wide enough for a value below them all
    floor = _INT16_MIN if small else -np.inf
    ranked = []
    for _ in range(k):
        i = int(work.argmax())
        ranked.append(i)
        work[i] = floor
    return ranked
