"""Capture threads shared by the sources: newest-frame-only for live cameras, ordered read-ahead for files."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from edgekit.device.backoff import Backoff
from edgekit.device.sources.base import Frame, SourceBase
from edgekit.errors import SourceError

logger = logging.getLogger(__name__)

# What a capture thread calls: returns an image, None at a clean end, or raises OSError on a failed read.
ReadFn = Callable[[], "np.ndarray | None"]


class _CaptureThread:
    """What both capture threads share: stopping them, from the loop or from a signal handler."""

    _stop: threading.Event
    _cond: threading.Condition
    _thread: threading.Thread
    dropped: int
    reopens = 0  # the live capture counts them; a file is reread in place

    def interrupt(self) -> None:
        """Make a waiting iterator return soon; safe from a signal handler (sets a flag, takes no lock)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5.0)


class CapturedSource(SourceBase):
    """A source whose frames come from a capture thread (`self._capture`): the delegation they all share."""

    name: str
    _capture: LatestFrameCapture | OrderedCapture

    @property
    def dropped(self) -> int:
        return self._capture.dropped

    @property
    def reopens(self) -> int:
        return self._capture.reopens

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._capture)

    def interrupt(self) -> None:
        self._capture.interrupt()

    def close(self) -> None:
        self._capture.close()


class EndOfStream(Exception):
    """Raised by a reader when a live source ended unexpectedly (to be reopened)."""


class LatestFrameCapture(_CaptureThread):
    """Reads a live source on its own thread and keeps only the newest frame.

    A camera produces frames whether or not we keep up; queueing them would make every result older than the
    last. The consumer always gets the newest frame; frames replaced before anyone took them are counted in
    ``dropped``. A read that fails or stalls (no frame for ``stall_timeout`` s) closes and reopens the device
    with backoff, forever, until `close`.

    Args:
        name: for logs and records.
        open_reader: opens the device and returns a read function (and raises SourceError when it cannot).
        close_reader: releases what ``open_reader`` opened.
        color: channel order of the images.
        stall_timeout: seconds without a frame before the device is reopened.
        finite: a None from the reader is the real end (a video file played in real time), not a failure.
    """

    def __init__(
        self,
        name: str,
        open_reader: Callable[[], ReadFn],
        close_reader: Callable[[], None],
        color: str = "BGR",
        stall_timeout: float = 5.0,
        finite: bool = False,
    ) -> None:
        self.name = name
        self.dropped = 0
        self.reopens = 0
        self._open, self._close_reader = open_reader, close_reader
        self._color = color
        self._stall = stall_timeout
        self._finite = finite
        self._ended = threading.Event()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._index = 0
        self._stop = threading.Event()
        self._last_frame_at = time.monotonic()
        self._read = open_reader()  # the first open happens here so that a missing device fails at startup
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = Backoff()
        read: ReadFn | None = self._read
        while not self._stop.is_set():
            if read is None:
                try:
                    read = self._open()
                    self.reopens += 1
                    logger.warning("%s: reopened", self.name)
                    self._last_frame_at = time.monotonic()
                except SourceError as exc:
                    delay = backoff.next()
                    logger.warning("%s: %s; retrying in %.1f s", self.name, exc.message, delay)
                    self._stop.wait(delay)
                    continue
            try:
                image = read()
                if image is None and self._finite:
                    self._ended.set()
                    with self._cond:
                        self._cond.notify_all()
                    break
                if image is None:
                    raise EndOfStream("stream ended")
            except (OSError, EndOfStream) as exc:
                if self._stop.is_set():
                    break
                logger.warning("%s: %s; reopening", self.name, exc)
                self._safe_close()
                read = None
                self._stop.wait(backoff.next())
                continue
            backoff.reset()
            now = time.monotonic()
            self._last_frame_at = now
            frame = Frame(image, self._index, time.time(), now, self._color)  # type: ignore[arg-type]
            self._index += 1
            with self._cond:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = frame
                self._cond.notify()
        self._safe_close()

    def _safe_close(self) -> None:
        try:
            self._close_reader()
        except Exception:  # closing a dead device can fail in many ways; it is gone either way
            logger.debug("%s: close failed", self.name, exc_info=True)

    def __iter__(self) -> Iterator[Frame]:
        while not self._stop.is_set():
            with self._cond:
                if self._latest is None and not self._ended.is_set():
                    self._cond.wait(timeout=0.5)
                frame, self._latest = self._latest, None
            if frame is not None:
                yield frame
            elif self._ended.is_set():
                return
            elif time.monotonic() - self._last_frame_at > self._stall and self._thread.is_alive():
                # A read blocked inside the driver cannot be interrupted; say so, the reader will reopen once
                # it returns (OpenCV's FFmpeg backend times out on its own).
                logger.warning("%s: no frame for %.0f s", self.name, time.monotonic() - self._last_frame_at)
                self._last_frame_at = time.monotonic()


class OrderedCapture(_CaptureThread):
    """Reads a file on its own thread, a couple of frames ahead, in order, never dropping.

    Decoding the next frame overlaps with inference on this one; the small bound keeps memory flat when the
    model is slower than the decoder. The thread starts with the first iteration; `unbuffered` reads in the
    caller's thread instead (one or the other, for the life of the capture).

    Args:
        name: for logs and records.
        read: returns the next image, or None at the end.
        release: closes the file.
        color: channel order of the images.
        depth: frames decoded ahead.
    """

    def __init__(
        self, name: str, read: ReadFn, release: Callable[[], None], color: str = "BGR", depth: int = 2
    ) -> None:
        self.name = name
        self.dropped = 0
        self._read, self._release, self._color = read, release, color
        self._queue: deque[Frame | BaseException | None] = deque()
        self._depth = depth
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._index = 0
        self._mode = ""  # "ahead" (the thread) or "inline" (`unbuffered`), fixed by the first use
        self._thread = threading.Thread(target=self._run, name=f"read-{name}", daemon=True)

    def _use(self, mode: str) -> None:
        if self._mode and self._mode != mode:
            raise RuntimeError(f"{self.name}: already read {self._mode}; a capture is read one way only")
        if not self._mode and mode == "ahead":
            self._thread.start()
        self._mode = mode

    def unbuffered(self) -> Iterator[Frame]:
        """The frames decoded in the caller's thread when it asks, with no read-ahead thread.

        For consumers that already overlap decoding with inference (parallel streams: each worker decodes the
        frame it takes), where a read-ahead thread would only add a hand-over per frame.
        """
        self._use("inline")
        while not self._stop.is_set():
            image = self._read()
            if image is None:
                return
            frame = Frame(image, self._index, time.time(), time.monotonic(), self._color)  # type: ignore[arg-type]
            self._index += 1
            yield frame

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                image = self._read()
                index = self._index
                item: Frame | None = (
                    None if image is None else Frame(image, index, time.time(), time.monotonic(), self._color)  # type: ignore[arg-type]
                )
                self._index += 1
                with self._cond:
                    while len(self._queue) >= self._depth and not self._stop.is_set():
                        self._cond.wait(0.5)
                    self._queue.append(item)
                    self._cond.notify_all()
                if item is None:
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in the main thread
            with self._cond:
                self._queue.append(exc)
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        self._use("ahead")
        while True:
            with self._cond:
                while not self._queue:
                    if self._stop.is_set():
                        return
                    self._cond.wait(0.5)
                item = self._queue.popleft()
                self._cond.notify_all()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            # Re-stamp: the frame was decoded ahead, but its latency starts when the loop can take it.
            yield Frame(item.image, item.index, time.time(), time.monotonic(), item.color)

    def close(self) -> None:
        super().close()
        self._release()
