"""What a frame source is: something that yields frames and can be closed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np


class Frame(NamedTuple):
    """One captured frame (immutable: the preview keeps a reference, never a copy).

    ``image`` is (H, W, 3) uint8 in ``color`` order: OpenCV sources deliver BGR and the preprocessing swaps
    channels after resizing (cheaper than converting the full frame). A named tuple rather than a frozen
    dataclass: one is made per frame, and a frozen dataclass sets each field through ``object.__setattr__``
    (3x the time, a few microseconds a frame once `invoke()` has pushed that code out of the CPU caches).
    """

    image: np.ndarray
    index: int  # type: ignore[assignment]  # shadows tuple.index(), which nothing calls on a frame
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
