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
    (3x the time, a few microseconds a frame with cold caches: `edgekit.device.pipeline`).
    """

    image: np.ndarray
    index: int  # type: ignore[assignment]  # shadows tuple.index(), which nothing calls on a frame
    timestamp: float  # time.time() at capture, for the published record
    monotonic: float  # time.monotonic() at capture, for latency measurement
    color: Literal["RGB", "BGR"] = "BGR"


@runtime_checkable
class Source(Protocol):
    """A camera, stream, video file or image folder, and what the pipeline may rely on it for.

    ``ordered``: every frame counts, in order (files and folders): preparing ahead and parallel streams are right.
    ``dropped`` / ``reopens``: frames lost and reopenings after a stall, for stats and /metrics. ``interrupt()``
    wakes a waiting iterator (which ends it); it must be safe to call from a signal handler. ``unbuffered()``
    is an iterator that decodes in the caller's thread, for parallel streams, or None to iterate the source.
    `SourceBase` gives the defaults of a source that has none of these.
    """

    name: str

    @property
    def ordered(self) -> bool: ...

    @property
    def dropped(self) -> int: ...

    @property
    def reopens(self) -> int: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def interrupt(self) -> None: ...

    def unbuffered(self) -> Iterator[Frame] | None: ...

    def close(self) -> None: ...


class SourceBase:
    """The capabilities of a source that drops nothing, never reopens, cannot be woken and has no unbuffered way."""

    name: str
    ordered = False

    @property
    def dropped(self) -> int:
        return 0

    @property
    def reopens(self) -> int:
        return 0

    def interrupt(self) -> None:
        """Nothing to wake."""

    def unbuffered(self) -> Iterator[Frame] | None:
        return None
