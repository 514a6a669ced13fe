"""Classification: top-k classes above a threshold from a scores vector."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    return tuple(Class(i, score) for i, score in _top_scores(raw, top_k, threshold, scale, zero_point))


def _top_scores(
    raw: np.ndarray, top_k: int, threshold: float, scale: float, zero_point: int
) -> list[tuple[int, float]]:
    """(id, dequantized score) of the ``top_k`` best at least ``threshold``, best first (``raw``: 1-D)."""
    quantized = raw.dtype.kind in "iu" and scale != 0
    found = []
    for i in _ranked(raw, top_k):
        value = raw.item(i)
        score = scale * (value - zero_point) if quantized else float(value)
        if score >= threshold:  # not a break: a float NaN ranks first and fails, the rest may pass
            found.append((i, score))
    return found


def _ranked(raw: np.ndarray, top_k: int) -> list[int]:
    """Ids of the ``top_k`` largest raw values, best first, the lower id first among equals (``raw``: 1-D)."""
    k = max(0, min(int(top_k), raw.size))
    if k == 0:
        return []
    # Rank on the raw values (quantization scales are positive, so the order is the same) and dequantize only
    # the k winners. This runs right after invoke(), when the interpreter has pushed Python's and numpy's code out
    # of the CPU caches, so each distinct numpy call costs several microseconds: a few argmax calls (each gives
    # the lowest id among equal maxima) beat any sort for the usual k; a stable sort (ties in id order; a radix
    # sort on 8-bit data) takes over for large k.
    return _top_by_argmax(raw, k) if k <= _ARGMAX_K else _top_by_sort(raw, k)


_ARGMAX_K = 8
_INT16_MIN = -(2**15)


def _top_by_sort(raw: np.ndarray, k: int) -> list[int]:
    """Ids of the k largest values, best first, lower id first among equals (any k: a stable sort)."""
    return np.argsort(~raw if raw.dtype.kind in "iu" else -raw, kind="stable")[:k].tolist()


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


class Classifier:
    """The frame loop's classification: raw scores to published items, with everything per-run worked out once.

    Gives what `get_classes` gives, as the record's ``{"id", "label", "score"}`` dicts (score rounded to 4
    places). A quantized 8-bit output has only 256 possible values, so each value's rounded score, or None when
    it is below the threshold, is a table lookup, and each class's label a list lookup: after `invoke()` every
    distinct call costs microseconds (see `get_classes`), and dequantizing, rounding and looking up three labels
    cost about as much as the ranking itself.

    Args:
        num_classes: the size of the scores output.
        label: the label of a class id (the model's, with its fallback).
        top_k: how many classes at most.
        threshold: minimum (dequantized) score.
        scale: output quantization scale (0 when the output is float).
        zero_point: output quantization zero point.
        dtype: the output's dtype name (``uint8``, ``int8``, ``float32``...).
    """

    def __init__(
        self,
        num_classes: int,
        label: Callable[[int], str],
        top_k: int,
        threshold: float,
        scale: float,
        zero_point: int,
        dtype: str,
    ) -> None:
        self.k = max(0, min(int(top_k), num_classes))
        self.threshold = threshold
        self.labels = [label(i) for i in range(num_classes)]
        self.scale, self.zero_point = scale, zero_point
        self.table: list[float | None] | None = None
        if scale != 0 and dtype in ("uint8", "int8"):
            # Indexed by the raw value; an int8 value v < 0 lands on table[v], i.e. table[256 + v], so the table
            # is laid out in the unsigned order of the same bytes.
            values = [u - 256 if dtype == "int8" and u >= 128 else u for u in range(256)]
            scores = [scale * (v - zero_point) for v in values]
            self.table = [round(s, 4) if s >= threshold else None for s in scores]

    def items(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """The top classes of one output, best first, as result items."""
        raw, labels, table = scores.reshape(-1), self.labels, self.table
        if table is None:
            found = _top_scores(raw, self.k, self.threshold, self.scale, self.zero_point)
            return [{"id": i, "label": labels[i], "score": round(score, 4)} for i, score in found]
        items = []
        for i in _ranked(raw, self.k):
            score = table[raw.item(i)]
            if score is None:  # ranked best first: every later one is below the threshold too
                break
            items.append({"id": i, "label": labels[i], "score": score})
        return items
