"""Whether a frame needs inference: it moved, something is tracked, it is the first, or a keyframe is due.

The check runs on every frame before preprocessing, so it must cost a small fraction of an invoke: the frame is
shrunk to ``width`` pixels, turned grey, blurred (which averages sensor noise away), and compared
with a background that follows the scene slowly (a running average). A pixel "changed" when it differs from the
background by more than ``threshold`` grey levels; the frame has motion when more than ``min_area`` of its pixels
changed. The same steps as Frigate's motion detector (resize, grey, blur, absdiff against a weighted average,
threshold), without its contours: the pipeline only needs yes or no.

Light: before the difference the frame is scaled to the background's mean brightness, so an exposure or dusk drift
(a gain on every pixel) is not motion. A change over more than ``reset_area`` of the frame at once (a light
switched, the camera moved) is new scenery: that frame is inferred and becomes the background at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

_DARK = 8.0  # mean grey level below which a frame is too dark to estimate a gain from


class Busy(Protocol):
    """What the gate asks the tracker: while an object is tracked, every frame is inferred (it may move subtly)."""

    def has_active_objects(self) -> bool: ...


class _NothingTracked:
    """The busy input of a pipeline without a tracker (classification, or detection before one is wired)."""

    def has_active_objects(self) -> bool:
        return False


@dataclass(frozen=True)
class MotionSettings:
    """The ``[motion]`` config of a run (`edgekit.config.MotionConfig`), resolved once.

    Attributes:
        threshold: grey levels (0..255) a pixel must differ from the background by to count as changed.
        min_area: fraction of the frame's pixels that must change for motion.
        keyframe: seconds after which a frame is inferred even without motion (a stationary object is seen
            again; also keeps results, hence the systemd watchdog, flowing on a still scene).
        width: the width the frame is shrunk to before the comparison.
        alpha: how fast the background follows the scene (weight of each new frame).
        reset_area: fraction of changed pixels above which the background is replaced by the frame.
    """

    threshold: float = 25.0
    min_area: float = 0.002
    keyframe: float = 10.0
    width: int = 128
    alpha: float = 0.05
    reset_area: float = 0.5


class MotionDetector:
    """The fraction of a frame's pixels that changed against a slowly updated background (see the module)."""

    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self._background: np.ndarray | None = None
        self._small: np.ndarray | None = None  # reused buffers: the check runs on every frame
        self._gray: np.ndarray | None = None

    def changed(self, image: np.ndarray, color: Literal["RGB", "BGR"] = "BGR") -> float:
        """Compare one frame with the background and update it; 1.0 for the first frame (or a new frame size).

        Args:
            image: the (H, W, 3) uint8 frame.
            color: its channel order.

        Returns:
            The fraction of changed pixels, 0..1.
        """
        import cv2

        s = self.settings
        h, w = image.shape[:2]
        width = min(s.width, w)
        size = (width, max(1, round(h * width / w)))
        if self._small is None or self._small.shape[:2] != size[::-1]:
            self._small = np.empty((size[1], size[0], 3), np.uint8)
            self._gray = np.empty((size[1], size[0]), np.uint8)
            self._background = None
        assert self._gray is not None
        # Linear, not area: area costs ~10x more at ratios like 720 -> 128 (3 ms on the dev machine), and the
        # blur below averages the noise that area would have.
        cv2.resize(image, size, dst=self._small, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY if color == "BGR" else cv2.COLOR_RGB2GRAY, dst=self._gray)
        gray = cv2.GaussianBlur(self._gray, (5, 5), 0).astype(np.float32)
        background = self._background
        if background is None:
            self._background = gray
            return 1.0
        mean, background_mean = float(gray.mean()), float(background.mean())
        # A global gain (exposure, dusk) is not motion. Only a moderate one: from black or to a new scene the
        # ratio means nothing (a black background would scale every frame to black).
        if mean > _DARK and background_mean > _DARK and 0.5 < background_mean / mean < 2.0:
            gray *= background_mean / mean
        diff = cv2.absdiff(gray, background)
        fraction = float(np.count_nonzero(diff > s.threshold)) / diff.size
        if fraction > s.reset_area:
            self._background = gray  # new scenery: compare with it from now on
        else:
            cv2.accumulateWeighted(gray, background, s.alpha)
        return fraction


class MotionGate:
    """Decides per frame whether the pipeline runs inference, and counts the frames it skipped.

    A frame is inferred when it is the first, when it moved (`MotionDetector`), when ``busy`` says an object is
    tracked, or when ``keyframe`` seconds (capture time) passed since the last inferred frame. A skipped frame
    produces no result record: the last result still describes the scene.

    Classification streams are gated the same way, with nothing tracked: a picture that did not change keeps its
    class, and class events hold through skipped frames.

    Args:
        settings: the thresholds.
        busy: the tracker's answer to "is an object tracked now?"; None: nothing is ever tracked.
    """

    def __init__(self, settings: MotionSettings, busy: Busy | None = None) -> None:
        self.settings = settings
        self.detector = MotionDetector(settings)
        self.busy: Busy = busy if busy is not None else _NothingTracked()
        self.skipped = 0
        self._last_inferred = -np.inf

    def wants(self, image: np.ndarray, color: Literal["RGB", "BGR"], monotonic: float) -> bool:
        """Whether this frame needs inference (the background is updated either way).

        Args:
            image: the frame.
            color: its channel order.
            monotonic: its capture time (``Frame.monotonic``), for the keyframe interval.
        """
        moved = self.detector.changed(image, color) > self.settings.min_area
        if moved or monotonic - self._last_inferred >= self.settings.keyframe or self.busy.has_active_objects():
            self._last_inferred = monotonic
            return True
        self.skipped += 1
        return False
