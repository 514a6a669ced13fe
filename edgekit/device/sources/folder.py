"""A folder of images (or one image), read in name order: for testing a model on photos, or time-lapses."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.device.sources.base import Frame, SourceBase
from edgekit.errors import SourceError
from edgekit.plan import IMAGE_SUFFIXES, SourceSpec

logger = logging.getLogger(__name__)


class ImageFolder(SourceBase):
    """Every image in a folder, in name order; unreadable files are skipped and counted in ``dropped``."""

    def __init__(self, path: str) -> None:
        import cv2

        self.name = path
        self._dropped = 0
        self._cv2 = cv2
        root = Path(path)
        files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images here ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.files = files
        self._closed = False
        self.ordered = True
        self._next = 0  # kept across iterations: a config reload continues where the last run stopped

    def __iter__(self) -> Iterator[Frame]:
        while self._next < len(self.files):
            if self._closed:
                return
            index, file = self._next, self.files[self._next]
            self._next += 1
            image = self._cv2.imread(str(file), self._cv2.IMREAD_COLOR)
            if image is None:
                logger.warning("%s: not a readable image; skipped", file)
                self._dropped += 1
                continue
            yield Frame(np.asarray(image), index, time.time(), time.monotonic(), "BGR")

    @property
    def dropped(self) -> int:
        return self._dropped

    def interrupt(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True


def create(spec: SourceSpec, **hints: Any) -> ImageFolder:
    """A folder of images, or a single image file."""
    return ImageFolder(spec.target)
