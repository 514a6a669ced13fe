"""The Raspberry Pi camera through picamera2 (libcamera): frames at the model's aspect, scaled by the ISP."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekit.device.sources.capture import CapturedSource, LatestFrameCapture, ReadFn
from edgekit.errors import MissingExtra, SourceError
from edgekit.plan import SourceSpec

logger = logging.getLogger(__name__)

# Without a model size hint (not expected from `edgekit run`), a common 4:3 preview size.
DEFAULT_SIZE = (480, 640)


def camera_size(model_size: tuple[int, int], minimum: int = 320) -> tuple[int, int]:
    """The (width, height) to ask the ISP for: the model's aspect, at least ``minimum`` on the short side.

    The ISP scales for free, so asking for (about) the model size makes capture nearly free. A little more than
    the model size keeps detection boxes, which are reported in camera pixels, meaningful. Widths are rounded up
    to 32 pixels (libcamera's stride alignment); `align_configuration` may still adjust them.
    """
    h, w = model_size
    scale = max(1.0, minimum / min(h, w))
    width = int(-(-round(w * scale) // 32) * 32)
    height = int(-(-round(h * scale) // 2) * 2)
    return width, height


class PiCamera(CapturedSource):
    """Picamera2 camera N delivering RGB888 frames on a capture thread, newest frame only."""

    def __init__(self, spec: str, number: int, size: tuple[int, int] | None) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise MissingExtra(
                "picamera2 (the Raspberry Pi camera library)",
                "pi",
                "sudo apt install python3-picamera2, and create the venv with --system-site-packages",
            ) from None
        self.name = spec
        self._cls = Picamera2
        self._number = number
        self._size = camera_size(size) if size else (DEFAULT_SIZE[1], DEFAULT_SIZE[0])
        self._camera: Any = None
        self._capture = LatestFrameCapture(spec, self._open, self._release, "BGR")

    def _open(self) -> ReadFn:
        try:
            cameras = self._cls.global_camera_info()
        except Exception as exc:  # libcamera errors are not a documented type
            raise SourceError(f"{self.name}: libcamera cannot list cameras ({exc})") from None
        if self._number >= len(cameras):
            raise SourceError(
                f"{self.name}: no camera {self._number} (libcamera sees {len(cameras)}); check the ribbon cable "
                "and `rpicam-hello --list-cameras`"
            )
        try:
            camera = self._cls(self._number)
            # picamera2's "RGB888" is B, G, R in memory (libcamera's naming is little-endian): we say BGR and
            # the preprocessing swaps channels on the small, resized image.
            config = camera.create_video_configuration(
                main={"size": self._size, "format": "RGB888"}, buffer_count=4, queue=False
            )
            camera.align_configuration(config)
            camera.configure(config)
            camera.start()
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot start the camera ({exc}); is another process using it?") from None
        self._camera = camera
        logger.info("%s: streaming %s", self.name, config["main"]["size"])

        def read() -> np.ndarray | None:
            try:
                image = camera.capture_array("main")
            except Exception as exc:
                raise OSError(f"capture failed ({exc})") from None
            return np.ascontiguousarray(image[:, :, :3])

        return read

    def _release(self) -> None:
        if self._camera is not None:
            try:
                self._camera.stop()
            finally:
                self._camera.close()
                self._camera = None


def create(spec: SourceSpec, size: tuple[int, int] | None = None, **hints: Any) -> PiCamera:
    """``picamera2`` or ``picamera2:N``; ``size`` is the model's (height, width)."""
    return PiCamera(spec.target, spec.index or 0, size)
