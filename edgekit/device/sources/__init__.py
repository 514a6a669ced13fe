"""Frame sources: Pi camera, V4L2, streams, video files, image folders.

A source spec picks a module; only that module is imported (so a Pi without OpenCV's FFmpeg never loads it and
a laptop without picamera2 never notices). Adding a source is a kind in `edgekit.plan`, one module with
``create(spec, **hints)`` and one line in `_REGISTRY`.

=====================  ==========================================================
spec                   source
=====================  ==========================================================
``picamera2[:N]``      Raspberry Pi camera N (default 0) through picamera2
``/dev/videoN``, ``N`` a V4L2 camera (OpenCV)
``rtsp://...``         a network stream (OpenCV + FFmpeg); also rtsps, http(s)
a folder               its images in name order
a video file           its frames in order (``--realtime`` paces them at the file's fps)
=====================  ==========================================================
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.device.sources.base import Frame, Source
from edgekit.plan import SourceSpec

__all__ = ["Frame", "Source", "create"]

_REGISTRY = {
    "picamera2": "edgekit.device.sources.picamera:create",
    "v4l2": "edgekit.device.sources.opencv:create_device",
    "stream": "edgekit.device.sources.opencv:create_stream",
    "video": "edgekit.device.sources.opencv:create_video",
    "folder": "edgekit.device.sources.folder:create",
}


def create(spec: SourceSpec, **hints: Any) -> Source:
    """Open the source a spec of the run plan names (`edgekit.plan.parse_source` chose its kind).

    Args:
        spec: see the module docstring.
        **hints: ``size=(height, width)``, the model input size, for cameras that can scale for free.

    Returns:
        An open source.

    Raises:
        SourceError: it does not exist or cannot be opened.
        MissingExtra: its library is not installed.
    """
    module_name, _, func = _REGISTRY[spec.kind].partition(":")
    factory = getattr(importlib.import_module(module_name), func)
    source: Source = factory(spec, **hints)
    return source
