"""Sources: spec dispatch, the real video in order, newest-frame capture, reopening, the simulated Pi camera."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from edgekit.device import sources
from edgekit.device.sources.capture import LatestFrameCapture
from edgekit.errors import MissingExtra, SourceError
from edgekit.plan import parse_source


def test_spec_dispatch(tmp_path: Path, video: Path, photos: list[Path]) -> None:
    assert parse_source("picamera2").kind == "picamera2"
    assert parse_source("picamera2:1").kind == "picamera2"
    assert parse_source("0").kind == "v4l2"
    assert parse_source("/dev/video3").kind == "v4l2"
    assert parse_source("rtsp://user:pw@cam.local/stream1").kind == "stream"
    assert parse_source(str(video)).kind == "video"
    assert parse_source(str(photos[0].parent)).kind == "folder"
    assert parse_source(str(photos[0])).kind == "folder"
    with pytest.raises(SourceError, match=r"nope\.mp4: no such camera, file or folder"):
        parse_source(str(tmp_path / "nope.mp4"))


def test_missing_camera_fails_at_open() -> None:
    with pytest.raises(SourceError, match="no such camera"):
        sources.create(parse_source("/dev/video97"))


def test_video_file_in_order_and_complete(video: Path) -> None:
    source = sources.create(parse_source(str(video)))
    try:
        frames = list(source)
    finally:
        source.close()
    assert len(frames) == 270
    assert [f.index for f in frames] == list(range(270))
    assert frames[0].image.shape == (528, 720, 3)
    assert frames[0].color == "BGR"
    assert source.dropped == 0  # type: ignore[attr-defined]
    assert not np.array_equal(frames[0].image, frames[100].image)


def test_not_a_video_fails_at_startup(tmp_path: Path) -> None:
    junk = tmp_path / "clip.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot decode this video"):
        sources.create(parse_source(str(junk)))


def test_realtime_video_drops_what_a_slow_consumer_misses(video: Path) -> None:
    source = sources.create(parse_source(str(video), realtime=True))
    taken = []
    try:
        for frame in source:
            taken.append(frame.index)
            time.sleep(0.1)  # ~10 fps against a 25 fps file
            if len(taken) == 6:
                break
    finally:
        source.close()
    assert source.dropped > 0  # type: ignore[attr-defined]
    assert taken == sorted(taken) and taken[-1] - taken[0] > 5  # newest frames, skipping the stale ones


def test_image_folder_in_name_order(photos: list[Path]) -> None:
    source = sources.create(parse_source(str(photos[0].parent)))
    frames = list(source)
    assert len(frames) == len(photos)
    assert frames[0].image.shape[2] == 3


class FlakyCamera:
    """A stand-in device: produces numbered frames fast; its first session fails after 3 frames."""

    def __init__(self) -> None:
        self.opens = 0
        self.closes = 0

    def open(self):  # type: ignore[no-untyped-def]
        self.opens += 1
        session = self.opens
        count = 0

        def read() -> np.ndarray:
            nonlocal count
            time.sleep(0.002)
            count += 1
            if session == 1 and count > 3:
                raise OSError("device unplugged")
            return np.full((4, 4, 3), count % 256, np.uint8)

        return read

    def close(self) -> None:
        self.closes += 1


def test_live_capture_keeps_the_newest_frame_and_counts_drops() -> None:
    camera = FlakyCamera()
    capture = LatestFrameCapture("flaky", camera.open, camera.close)
    got = []
    try:
        for frame in capture:
            got.append(frame.index)
            time.sleep(0.05)
            if len(got) == 5:
                break
    finally:
        capture.close()
    assert capture.dropped > 0
    assert got == sorted(got)
    # The first session died after 3 frames: it was reopened after a backoff, and closed each time.
    assert camera.opens == 2 and capture.reopens == 1
    assert camera.closes == 2


def test_interrupt_wakes_a_waiting_iterator() -> None:
    block = threading.Event()

    def opener():  # type: ignore[no-untyped-def]
        def read() -> np.ndarray:
            block.wait(10)
            raise OSError("gone")

        return read

    capture = LatestFrameCapture("silent", opener, lambda: None)
    threading.Timer(0.3, capture.interrupt).start()
    t0 = time.monotonic()
    assert list(capture) == []
    assert time.monotonic() - t0 < 2.0
    block.set()
    capture.close()


class FakePicamera2:
    """A simulated picamera2.Picamera2 (the real one needs libcamera and a Pi): records how it is driven."""

    cameras: ClassVar[list[dict]] = [{"Model": "imx708"}]
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.started = False
        self.closed = False
        self.config: dict = {}
        self.frame = 0
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return FakePicamera2.cameras

    def create_video_configuration(self, main: dict, **kwargs: object) -> dict:
        return {"main": dict(main), **kwargs}

    def align_configuration(self, config: dict) -> None:
        w, h = config["main"]["size"]
        config["main"]["size"] = (w + (-w % 64), h)

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        time.sleep(0.01)
        self.frame += 1
        w, h = self.config["main"]["size"]
        return np.full((h, w, 4), self.frame % 256, np.uint8)  # XRGB-like padding to show it is cut to 3

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    return FakePicamera2


@pytest.mark.simulated
def test_picamera2_asks_the_isp_for_the_models_aspect(fake_picamera2: type[FakePicamera2]) -> None:
    source = sources.create(parse_source("picamera2"), size=(224, 224))
    try:
        frame = next(iter(source))
    finally:
        source.close()
    (camera,) = fake_picamera2.instances
    assert camera.config["main"]["format"] == "RGB888"
    assert camera.config["main"]["size"] == (320, 320)
    assert frame.image.shape == (320, 320, 3) and frame.image.flags.c_contiguous
    assert frame.color == "BGR"  # picamera2's RGB888 is B, G, R in memory
    assert camera.closed and not camera.started


@pytest.mark.simulated
def test_picamera2_missing_camera_number(fake_picamera2: type[FakePicamera2]) -> None:
    with pytest.raises(SourceError, match="no camera 1 \\(libcamera sees 1\\)"):
        sources.create(parse_source("picamera2:1"), size=(96, 96))


def test_picamera2_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a machine without it
    with pytest.raises(MissingExtra, match=r"picamera2 .* is not installed; install it with: sudo apt install"):
        sources.create(parse_source("picamera2"))


def test_video_cut_short_ends_cleanly(tmp_path: Path, video: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The header still says 270 frames, the data stops about halfway (a copy interrupted, a full SD card):
    # the reader retries past the hole a few times, then ends the run instead of hanging or raising.
    cut = tmp_path / "cut.avi"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    source = sources.create(parse_source(str(cut)))
    try:
        frames = list(source)
    finally:
        source.close()
    assert 100 < len(frames) < 200
    assert [f.index for f in frames] == list(range(len(frames)))
    assert any("read failed" in r.message or "stopped at frame" in r.message for r in caplog.records)


@pytest.fixture
def http_video(video: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """The real video served over HTTP on loopback (a network camera's stream, as OpenCV/FFmpeg reads it)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(video.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    yield url, stop
    if thread.is_alive():
        stop()


def test_stream_that_ends_is_reopened(http_video: tuple[str, Callable[[], None]]) -> None:
    url, _ = http_video
    source = sources.create(parse_source(url))
    seen = 0
    deadline = time.monotonic() + 30
    try:
        for frame in source:
            seen += 1
            assert frame.image.shape == (528, 720, 3)
            if (source._capture.reopens >= 1 and seen > 5) or time.monotonic() > deadline:  # type: ignore[attr-defined]
                break
    finally:
        source.close()
    # A live stream has no "end": the 270-frame file ran out, was reopened, and frames kept coming.
    assert source._capture.reopens >= 1  # type: ignore[attr-defined]
    assert seen > 5


def test_unreachable_stream_fails_at_startup() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match="cannot open"):
        sources.create(parse_source(f"http://127.0.0.1:{port}/cam.mjpg"))


@pytest.mark.simulated
def test_picamera2_capture_failure_reopens_the_camera(fake_picamera2: type[FakePicamera2]) -> None:
    failures = iter([True, False])

    class Failing(FakePicamera2):
        def capture_array(self, name: str = "main") -> np.ndarray:
            if self.frame == 2 and next(failures, False):
                raise RuntimeError("Dequeue timer of 1000000.00us has expired!")  # what libcamera says
            return super().capture_array(name)

    sys.modules["picamera2"].Picamera2 = Failing  # type: ignore[attr-defined]
    source = sources.create(parse_source("picamera2"), size=(96, 96))
    try:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 4:
                break
    finally:
        source.close()
    first, second = fake_picamera2.instances[:2]
    assert first.closed and second.closed  # the failed camera was released before the new one was opened
    assert source._capture.reopens == 1  # type: ignore[attr-defined]


def test_a_folder_of_ppm_pictures_is_a_source(photos: list[Path], tmp_path: Path) -> None:
    """The one list of picture suffixes: what calibrates (.ppm/.pgm too) is what `edgekit run` reads."""
    import cv2

    for photo in photos[:2]:
        cv2.imwrite(str(tmp_path / f"{photo.stem}.ppm"), cv2.imread(str(photo)))
    spec = parse_source(str(tmp_path))
    assert spec.kind == "folder" and spec.ordered and not spec.live
    source = sources.create(spec)
    frames = list(source)
    source.close()
    assert len(frames) == 2 and frames[0].image.shape == cv2.imread(str(photos[0])).shape
