"""OpenCV sources: V4L2 cameras, network streams (FFmpeg) and video files."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekit.device.sources.base import Frame
from edgekit.device.sources.capture import CapturedSource, LatestFrameCapture, OrderedCapture, ReadFn
from edgekit.errors import MissingExtra, SourceError
from edgekit.plan import SourceSpec

logger = logging.getLogger(__name__)

# Reopening a file that stopped early: how many times, for a damaged region, before giving up.
_FILE_RETRIES = 3


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise MissingExtra("OpenCV (for cameras, streams and video files)", "device") from None
    return cv2


class LiveSource(CapturedSource):
    """A V4L2 camera or network stream through OpenCV, newest frame only (see `LatestFrameCapture`)."""

    def __init__(self, spec: str, target: int | str, backend: int, stall_timeout: float = 5.0) -> None:
        self.name = spec
        self._cv2 = _cv2()
        self._target, self._backend = target, backend
        self._cap: Any = None
        self._capture = LatestFrameCapture(spec, self._open, self._release, "BGR", stall_timeout)

    def _open(self) -> ReadFn:
        cv2 = self._cv2
        cap = cv2.VideoCapture(self._target, self._backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open (is the camera connected / the stream up?)")
        # The driver's own queue would hand us old frames after a slow inference; we keep our own newest one.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

        def read() -> np.ndarray | None:
            ok, image = cap.read()
            if not ok:
                raise OSError("read failed")
            return np.asarray(image)

        return read

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def create_device(spec: SourceSpec, **hints: Any) -> LiveSource:
    """A V4L2 camera: ``/dev/videoN`` or ``N`` (or another device node, opened by its path)."""
    cv2 = _cv2()
    if spec.index is None:
        return LiveSource(spec.target, spec.target, cv2.CAP_V4L2)
    if not os.path.exists(f"/dev/video{spec.index}"):
        raise SourceError(
            f"{spec.target}: no such camera (/dev/video{spec.index} does not exist); see `v4l2-ctl --list-devices`"
        )
    return LiveSource(spec.target, spec.index, cv2.CAP_V4L2)


def create_stream(spec: SourceSpec, **hints: Any) -> LiveSource:
    """A network stream (RTSP/HTTP) decoded by OpenCV's FFmpeg backend."""
    cv2 = _cv2()
    # TCP for RTSP: UDP loses packets on Wi-Fi and smears frames; the timeouts make a dead camera a read error.
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|stimeout;5000000|timeout;5000000")
    return LiveSource(_redact(spec.target), spec.target, cv2.CAP_FFMPEG)


def _redact(url: str) -> str:
    """The stream URL without a password, for logs and records."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.split("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


class VideoFile(CapturedSource):
    """A video file, in order and complete; or paced at the file's frame rate with ``realtime``.

    A read that fails before the last frame (a damaged region, a file still being copied) reopens the file and
    seeks past it, a few times; the real end of the file ends the iteration.
    """

    def __init__(self, path: str, realtime: bool = False) -> None:
        self.name = path
        self._cv2 = _cv2()
        self._path = path
        self._cap = self._open_cap()
        self.fps = float(self._cap.get(self._cv2.CAP_PROP_FPS)) or 25.0
        self.frame_count = int(self._cap.get(self._cv2.CAP_PROP_FRAME_COUNT))
        self._position = 0
        self._retries = 0
        self._pace_start: float | None = None
        self.ordered = not realtime  # every frame matters, in order: the pipeline may prepare ahead
        self._capture: LatestFrameCapture | OrderedCapture
        if realtime:
            self._capture = LatestFrameCapture(path, lambda: self._paced, self._release, "BGR", finite=True)
        else:
            self._capture = OrderedCapture(path, self._read, self._release, "BGR")

    def unbuffered(self) -> Iterator[Frame]:
        """The frames decoded in the caller's thread (see `OrderedCapture.unbuffered`); in real time, as usual."""
        if isinstance(self._capture, OrderedCapture):
            return self._capture.unbuffered()
        return iter(self)

    def _open_cap(self) -> Any:
        cv2 = self._cv2
        # One FFmpeg thread: decoding already runs beside inference (a capture thread or a stream worker), where
        # more decoder threads would only take cores from the interpreter (0.52 ms of CPU per 720x528 MPEG-4
        # frame with one thread, 0.86 ms with two).
        params = [cv2.CAP_PROP_N_THREADS, 1] if hasattr(cv2, "CAP_PROP_N_THREADS") else []
        cap = cv2.VideoCapture(self._path, cv2.CAP_ANY, params)
        if params and not cap.isOpened():  # a backend that does not take the setting: open it as it comes
            cap = cv2.VideoCapture(self._path)
        ok = cap.isOpened()
        if ok:
            ok, first = cap.read()  # a file OpenCV "opens" but cannot decode fails here, at startup
            ok = ok and first is not None
            cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
        if not ok:
            cap.release()
            raise SourceError(f"{self._path}: cannot decode this video (not a video, or a codec OpenCV lacks)")
        return cap

    def _read(self) -> np.ndarray | None:
        while True:
            ok, image = self._cap.read()
            if ok:
                self._position += 1
                return np.asarray(image)
            if self.frame_count <= 0 or self._position >= self.frame_count - 1 or self._retries >= _FILE_RETRIES:
                if 0 < self._position < self.frame_count - 1:
                    logger.warning("%s: stopped at frame %d of %d", self._path, self._position, self.frame_count)
                return None
            self._retries += 1
            logger.warning("%s: read failed at frame %d; reopening", self._path, self._position)
            self._cap.release()
            time.sleep(0.1 * self._retries)
            self._cap = self._open_cap()
            self._position += 1  # skip the frame that failed
            self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, self._position)

    def _paced(self) -> np.ndarray | None:
        now = time.monotonic()
        if self._pace_start is None:
            self._pace_start = now
        due = self._pace_start + self._position / self.fps
        if due > now:
            time.sleep(due - now)
        return self._read()

    def _release(self) -> None:
        self._cap.release()


def create_video(spec: SourceSpec, **hints: Any) -> VideoFile:
    """A video file (``run.realtime`` paces it at its own frame rate)."""
    return VideoFile(spec.target, realtime=spec.realtime)
