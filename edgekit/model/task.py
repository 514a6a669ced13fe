"""What a plain .tflite is, from its outputs alone: a classifier, an SSD detector, or something edgekit refuses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgekit.errors import ModelError

RUNS = (
    "edgekit runs classifiers (one [1, N] scores output) and SSD detectors "
    "(the four TFLite_Detection_PostProcess outputs)"
)
# Coral's and TF-slim's ImageNet classifiers have 1000 classes plus a background class at output 0.
IMAGENET_WITH_BACKGROUND = 1001


@dataclass(frozen=True)
class TaskGuess:
    """The task the outputs show, or None with a description of what they look like instead."""

    task: str | None  # "classify", "detect" or None
    what: str  # e.g. "a classifier's scores (1001 classes)", "a segmentation map [1, 513, 513]"
    num_classes: int = 0  # classifiers only

    @property
    def background_first(self) -> bool:
        """True when class 0 looks like a background class (1000 ImageNet classes plus one)."""
        return self.task == "classify" and self.num_classes == IMAGENET_WITH_BACKGROUND

    def describe(self) -> str:
        """For `edgekit inspect`: ``classify (1001 classes, class 0 looks like a background class)``."""
        if self.task == "classify":
            extra = ", class 0 looks like a background class" if self.background_first else ""
            return f"classify ({self.num_classes} classes{extra})"
        if self.task == "detect":
            return "detect (SSD postprocess outputs)"
        return f"not runnable by edgekit: {self.what}"

    def require(self, name: str) -> str:
        """The task, or a ModelError naming what the model looks like.

        Raises:
            ModelError: neither a classifier nor an SSD detector.
        """
        if self.task is None:
            raise ModelError(f"{name}: its output is {self.what}, not a classifier or a detector; {RUNS}")
        return self.task


def is_ssd_outputs(shapes: Sequence[Sequence[int]]) -> bool:
    """Four outputs, one [1, N, 4] boxes and one single-element count: what TFLite_Detection_PostProcess gives."""
    if len(shapes) != 4:
        return False
    boxes = [s for s in shapes if len(s) == 3 and s[-1] == 4]
    counts = [s for s in shapes if _size(s) == 1]
    return len(boxes) == 1 and len(counts) == 1


def guess_task(shapes: Sequence[Sequence[int]]) -> TaskGuess:
    """Classify only a [1, N] or [N] scores output; detect only the SSD postprocess's four outputs.

    Args:
        shapes: the output tensors' shapes, in output order.

    Returns:
        The guess; ``task`` is None for anything else (segmentation maps, keypoints, embeddings of other shapes).
    """
    given = [tuple(int(d) for d in s) for s in shapes]
    if is_ssd_outputs(given):
        return TaskGuess("detect", "an SSD detector's boxes, classes, scores and count")
    if len(given) == 1:
        shape = given[0]
        if (len(shape) == 1 and shape[0] > 1) or (len(shape) == 2 and shape[0] == 1 and shape[1] > 1):
            return TaskGuess("classify", f"a classifier's scores ({shape[-1]} classes)", shape[-1])
        return TaskGuess(None, _looks_like(shape))
    listed = ", ".join(str(list(s)) for s in given)
    return TaskGuess(None, f"{len(given)} tensors {listed}")


def _looks_like(shape: tuple[int, ...]) -> str:
    dims = list(shape)
    # [1, H, W] (class ids per pixel, DeepLab with its ARG_MAX) or [1, H, W, C] with a real image grid.
    if len(shape) in (3, 4) and shape[0] == 1 and min(shape[1:3]) > 1:
        return f"a segmentation map {dims}"
    # [1, 1, K, 2|3]: K keypoints of (y, x[, score]), e.g. MoveNet.
    if len(shape) >= 2 and shape[-1] in (2, 3) and shape[-2] > 1:
        return f"keypoints {dims}"
    return f"a tensor {dims}"


def _size(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
