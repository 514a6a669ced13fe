"""Frame sources: Pi camera, V4L2, streams, video files, image folders.

A source spec picks a module; only that module is imported (so a Pi without OpenCV's FFmpeg never loads it and
a laptop without picamera2 never notices). Adding a source is one module with ``create(spec, config, **hints)``
and one line in `_REGISTRY`.

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
import re
from pathlib import Path
from typing import Any

from edgekit.config import Config
from edgekit.device.sources.base import Frame, Source
from edgekit.errors import SourceError

__all__ = ["Frame", "Source", "create", "is_ordered", "kind_of"]

_REGISTRY = {
    "picamera2": "edgekit.device.sources.picamera:create",
    "v4l2": "edgekit.device.sources.opencv:create_device",
    "stream": "edgekit.device.sources.opencv:create_stream",
    "video": "edgekit.device.sources.opencv:create_video",
    "folder": "edgekit.device.sources.folder:create",
}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def kind_of(spec: str) -> str:
    """Which registry entry a source spec selects.

    Raises:
        SourceError: the spec is empty or names a file or folder that does not exist.
    """
    if not spec:
        raise SourceError("no source given; pass --source (a camera, stream, video file or folder)")
    if re.fullmatch(r"picamera2(:\d+)?", spec):
        return "picamera2"
    if re.fullmatch(r"\d+", spec) or re.fullmatch(r"/dev/video\d+", spec):
        return "v4l2"
    if re.match(r"^(rtsps?|https?|rtmp|udp|tcp)://", spec, re.IGNORECASE):
        return "stream"
    path = Path(spec)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "folder" if path.suffix.lower() in IMAGE_SUFFIXES else "video"
    if path.exists():  # a device node or a pipe
        return "v4l2" if spec.startswith("/dev/") else "video"
    raise SourceError(
        f"{spec}: no such camera, file or folder (sources: picamera2[:N], /dev/videoN, rtsp://..., "
        "a video file or an image folder)"
    )


def is_ordered(spec: str, config: Config) -> bool:
    """Whether every frame of a source counts, in order (files and folders, unless paced with ``realtime``).

    For those, throughput is what matters (the pipeline prepares ahead and may run parallel streams); a live
    source is about its newest frame.
    """
    kind = kind_of(spec)
    return kind == "folder" or (kind == "video" and not config.run.realtime)


def create(spec: str, config: Config, **hints: Any) -> Source:
    """Open the source a spec names.

    Args:
        spec: see the module docstring.
        config: the whole configuration (sources read ``config.run``).
        **hints: ``size=(height, width)``, the model input size, for cameras that can scale for free.

    Returns:
        An open source.

    Raises:
        SourceError: it does not exist or cannot be opened.
        MissingExtra: its library is not installed.
    """
    module_name, _, func = _REGISTRY[kind_of(spec)].partition(":")
    factory = getattr(importlib.import_module(module_name), func)
    source: Source = factory(spec, config, **hints)
    return source
