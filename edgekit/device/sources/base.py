"""What a frame source is: something that yields frames and can be closed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is (H, W, 3) uint8 in ``color`` order: OpenCV sources deliver BGR and the preprocessing swaps
    channels after resizing (cheaper than converting the full frame).
    """

    image: np.ndarray
    index: int
    timestamp: float  # time.time() at capture, for the published record
    monotonic: float  # time.monotonic() at capture, for latency measurement
    color: Literal["RGB", "BGR"] = "BGR"


@runtime_checkable
class Source(Protocol):
    """A camera, stream, video file or image folder.

    Optional attributes the pipeline reads when present: ``dropped`` (frames lost, for stats), ``ordered``
    (True for files and folders: every frame in order, so preparing ahead is right), ``interrupt()``
    (wake a waiting iterator; must be safe to call from a signal handler), and ``unbuffered()`` (an iterator
    that decodes in the caller's thread, for parallel streams; instead of iterating the source).
    """

    name: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...
