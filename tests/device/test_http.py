"""The preview server (`edgekit run --http`): the page in headless Chromium, the stream, /metrics, auth, bad input."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import Config, HttpConfig, load_config
from edgekit.device import daemon, http
from edgekit.device.pipeline import Pipeline
from edgekit.device.sources.base import Frame
from edgekit.errors import ConfigError
from edgekit.plan import HttpSpec, build_plan, parse_listen
from tests.conftest import REPO
from tests.tools import cdp


def _http(**section: Any) -> HttpSpec:
    """The preview server's spec as the run plan builds it from an [http] section."""
    spec = build_plan(Config(http=HttpConfig(**section))).http
    assert spec is not None
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, auth: tuple[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def _wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


# --- pure parts ----------------------------------------------------------------------------------------------


def test_listen_addresses() -> None:
    assert parse_listen("8080") == ("127.0.0.1", 8080)
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ConfigError, match=re.escape("key 'http.listen' must be HOST:PORT")):
        parse_listen("localhost")
    with pytest.raises(ConfigError, match=re.escape("got '1.2.3.4:99999'")):
        parse_listen("1.2.3.4:99999")
    assert http.is_loopback("127.0.0.1") and http.is_loopback("::1") and http.is_loopback("localhost")
    assert not http.is_loopback("0.0.0.0") and not http.is_loopback("192.168.1.4")


def test_http_config_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "edgekit.toml"
    path.write_text('[http]\nlisten = "127.0.0.1:8080"\nfps = 2\n')
    assert load_config(path).http == HttpConfig(listen="127.0.0.1:8080", fps=2.0)
    path.write_text("[http]\nport = 8080\n")
    with pytest.raises(ConfigError, match=re.escape("unknown key 'http.port'")):
        load_config(path)
    with pytest.raises(ConfigError, match=re.escape("key 'http.fps' must be above 0")):
        load_config(None, {"http.listen": "8080", "http.fps": 0})
    with pytest.raises(ConfigError, match=re.escape("key 'http.jpeg_quality'")):
        load_config(None, {"http.jpeg_quality": 0})


def test_drawing_boxes_and_labels_leaves_the_frame_alone() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    record = {
        "detections": [
            {"id": 3, "label": "cat", "score": 0.9, "box": {"xmin": 50.0, "ymin": 60.0, "xmax": 150.0, "ymax": 180.0}}
        ]
    }
    decoded = cv2.imdecode(np.frombuffer(http.render_jpeg(image, "BGR", record), np.uint8), cv2.IMREAD_COLOR)
    assert not image.any(), "the pipeline's frame must not be drawn on"
    assert decoded.shape == image.shape
    assert decoded[120, 50].max() > 100 and decoded[120, 150].max() > 100  # the box's left and right edges
    assert decoded[120, 100].max() < 30  # its inside stays as it was
    assert decoded[150:200, 200:300].max() < 30  # nothing far from the box
    classes = {"classes": [{"id": 1, "label": "tabby", "score": 0.5}]}
    decoded = cv2.imdecode(np.frombuffer(http.render_jpeg(image, "RGB", classes), np.uint8), cv2.IMREAD_COLOR)
    assert decoded[:30, :100].max() > 100 and decoded[100:, :].max() < 30  # the label, top left, and only there


def test_offer_keeps_references_and_counts() -> None:
    preview = http.Preview()
    image = np.zeros((48, 64, 3), np.uint8)
    for i, ms in enumerate([0.5, 3.0, 3.0, 700.0, 5000.0]):
        record = {"seq": i + 1, "classes": [], "timing_ms": {"inference": ms}}
        preview.offer(Frame(image, i, 0.0, time.monotonic()), record, None)  # type: ignore[arg-type]
    assert preview._latest is not None and preview._latest[1].image is image  # a reference, not a copy
    cumulative, total = preview.latency_histogram()
    assert dict(zip(http.LATENCY_BOUNDS_MS, cumulative, strict=False))[1.0] == 1
    assert dict(zip(http.LATENCY_BOUNDS_MS, cumulative, strict=False))[5.0] == 3
    assert cumulative[-2:] == [4, 5] and total == pytest.approx(5706.5)
    assert preview.encoded == 0  # nothing is encoded until someone asks
    first = preview.jpeg()
    assert first is not None and preview.jpeg() is first and preview.encoded == 1  # once per frame


def test_basic_auth_refuses_without_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "http_password"
    secret.write_text("s3cret\n")
    port = _free_port()
    _, server = http.start(_http(listen=f"127.0.0.1:{port}", password_file=str(secret)))
    try:
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/api/status", "/metrics", "/snapshot.jpg", "/stream.mjpg"):
            code, headers, _ = _get(base + path)
            assert code == 401, path
            assert headers["WWW-Authenticate"].startswith('Basic realm="edgekit"')
        assert _get(base + "/", ("edgekit", "wrong"))[0] == 401
        assert _get(base + "/", ("admin", "s3cret"))[0] == 401
        code, _, body = _get(base + "/", ("edgekit", "s3cret"))
        assert code == 200 and b"<title>edgekit preview</title>" in body
        code, _, body = _get(base + "/api/status", ("edgekit", "s3cret"))
        assert code == 200 and json.loads(body)["result"] is None  # no pipeline yet: still answers
        assert _get(base + "/snapshot.jpg", ("edgekit", "s3cret"))[0] == 503
        assert _get(base + "/nope", ("edgekit", "s3cret"))[0] == 404
    finally:
        server.close()


def test_credential_directory_wins_over_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "http_password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    port = _free_port()
    _, server = http.start(_http(listen=str(port)))
    try:
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/metrics", ("edgekit", "from-systemd"))[0] == 200
    finally:
        server.close()


# --- with a real pipeline ------------------------------------------------------------------------------------


@pytest.fixture
def running(classifier_dir: Path, video: Path) -> Iterator[tuple[str, Pipeline]]:
    """`daemon.serve` with the preview on, in a thread, over the real video at 15 fps (about 18 s of frames)."""
    port = _free_port()
    started: list[Pipeline] = []
    overrides = {
        "run.model": str(classifier_dir),
        "run.source": str(video),
        "run.sinks": ["file:" + os.devnull],
        "run.max_fps": 15.0,
        "run.stats_interval": 0.0,
        "http.listen": f"127.0.0.1:{port}",
        "http.fps": 10.0,
    }
    thread = threading.Thread(target=daemon.serve, args=(None, overrides, started.append), daemon=True)
    thread.start()
    _wait_for(lambda: started, what="the pipeline")
    try:
        yield f"http://127.0.0.1:{port}", started[0]
    finally:
        started[-1].stop()  # the newest: a test may have reloaded
        thread.join(timeout=15)
    assert not thread.is_alive()
    with pytest.raises(OSError):  # the server is gone with the run
        _get(f"http://127.0.0.1:{port}/", timeout=2)


def test_metrics_parse_and_move_and_nothing_is_encoded_without_a_viewer(running: tuple[str, Pipeline]) -> None:
    base, _ = running
    _wait_for(lambda: _samples(_get(base + "/metrics")[2].decode()).get("edgekit_frames_total", 0) >= 3, what="frames")
    first = _samples(_get(base + "/metrics")[2].decode())
    time.sleep(1.0)
    code, headers, body = _get(base + "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=")
    second = _samples(body.decode())
    assert second["edgekit_frames_total"] >= first["edgekit_frames_total"] + 5  # 15 fps for a second
    assert second["edgekit_inference_seconds_count"] > first["edgekit_inference_seconds_count"]
    assert second["edgekit_inference_seconds_sum"] > first["edgekit_inference_seconds_sum"] > 0
    assert second["edgekit_inference_seconds_bucket{le=+Inf}"] == second["edgekit_inference_seconds_count"]
    assert second["edgekit_sink_records_total{sink=file:/dev/null}"] >= second["edgekit_frames_total"] - 1
    assert second["edgekit_sink_queue_depth{sink=file:/dev/null}"] == 0
    assert second["edgekit_source_dropped_frames_total"] == 0
    assert second["edgekit_edgetpu_state{state=none}"] == 1
    assert second["edgekit_fps"] == pytest.approx(15, rel=0.3)
    assert second["process_resident_memory_bytes"] > 0
    # Zero cost when nobody looks: frames flowed, none was drawn or encoded.
    assert second["edgekit_preview_encoded_frames_total"] == 0
    status = json.loads(_get(base + "/api/status")[2])
    assert status["model"]["task"] == "classify" and status["model"]["input"] == [96, 96, 3]
    assert status["result"]["classes"] and status["inference_ms"]["p50"] > 0
    # A viewer: about http.fps frames a second, each encoded once.
    deadline = time.monotonic() + 2.0
    with urllib.request.urlopen(base + "/stream.mjpg", timeout=10) as stream:
        assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgekit-frame"
        data = b""
        while time.monotonic() < deadline:
            data += stream.read1(65536)
    parts = data.count(b"--edgekit-frame\r\nContent-Type: image/jpeg")
    assert 10 <= parts <= 24, parts  # 10 fps for 2 s, give or take the first frame and scheduling
    jpeg = data[data.index(b"\xff\xd8") : data.index(b"\xff\xd9") + 2]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (528, 720, 3)
    third = _samples(_get(base + "/metrics")[2].decode())
    assert third["edgekit_preview_encoded_frames_total"] >= parts - 1


def test_counters_keep_counting_across_a_reload(running: tuple[str, Pipeline], classifier_dir: Path) -> None:
    base, first = running
    _wait_for(lambda: first.seq >= 3, what="frames")
    first.stop("reload", interrupt=False)  # what SIGHUP does
    before = _samples(_get(base + "/metrics")[2].decode())["edgekit_frames_total"]
    _wait_for(lambda: json.loads(_get(base + "/api/status")[2])["frames"] >= before + 5, what="frames after reload")
    after = _samples(_get(base + "/metrics")[2].decode())
    assert after["edgekit_frames_total"] >= before + 5  # not reset to the new pipeline's count
    assert after["edgekit_inference_seconds_count"] == after["edgekit_frames_total"]
    assert json.loads(_get(base + "/api/status")[2])["result"]["seq"] < after["edgekit_frames_total"]


@contextlib.contextmanager
def preview_in_chromium(command: list[str], port: int) -> Iterator[cdp.Browser]:
    """Start `edgekit run` (``command``, serving --http on ``port``), open its page in headless chromium; at the
    end close the browser, stop the run with SIGTERM and check it exited 0. Skips without chromium."""
    binary = cdp.find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    base = f"http://127.0.0.1:{port}/"
    run = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE)
    browser = None
    try:
        _wait_for(lambda: _reachable(base), what="the preview server")
        browser = cdp.Browser(binary)
        browser.call("Page.navigate", url=base)
        yield browser
    finally:
        if browser is not None:
            browser.close()
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=20)
    assert run.returncode == 0, stderr.decode()[-2000:]


def test_page_in_headless_chromium(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    port = _free_port()
    # The real command line, as a user starts it.
    command = [sys.executable, "-m", "edgekit", "run", "--model", str(classifier_dir), "--source", str(video)]
    command += ["--max-fps", "12", "--sink", "file:" + os.devnull, "--http", f"127.0.0.1:{port}", "--http-fps", "5"]
    with preview_in_chromium(command, port) as browser:
        stream_loaded = "document.getElementById('stream').complete && document.getElementById('stream').naturalWidth"
        assert _wait_for(lambda: browser.evaluate(stream_loaded), what="the stream") == 720
        frame_text = "document.getElementById('frame').textContent"
        first = _wait_for(lambda: (t := browser.evaluate(frame_text)) != "-" and t, what="a result")
        labels = browser.evaluate("[...document.querySelectorAll('#labels li.label')].map(li => li.textContent)")
        assert 1 <= len(labels) <= 3 and all("%" in text for text in labels)
        _wait_for(lambda: browser.evaluate(frame_text) != first, what="the label text to update")
        assert float(browser.evaluate("document.getElementById('fps').textContent").split()[0]) > 0
        assert "ms" in browser.evaluate("document.getElementById('inference').textContent")
        assert browser.evaluate("document.getElementById('state').textContent") == "live"
        rect = browser.evaluate(
            "(() => { const r = document.getElementById('stream').getBoundingClientRect();"
            " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
        )
        shots = [_png(browser.screenshot(rect))]
        time.sleep(0.6)  # three stream frames at 5 fps
        shots.append(_png(browser.screenshot(rect)))
        assert np.abs(shots[0].astype(int) - shots[1].astype(int)).mean() > 1.0, "the stream did not move"
        page = browser.screenshot()
        (tmp_path / "preview.png").write_bytes(page)
        if os.environ.get("EDGEKIT_KEEP_SCREENSHOT"):
            Path(os.environ["EDGEKIT_KEEP_SCREENSHOT"]).write_bytes(page)
        image = _png(page)
        assert image.shape[1] == 1280 and image.shape[0] > 500
        assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1000, "blank screenshot"
        assert browser.errors == [], browser.errors


def _reachable(url: str) -> bool:
    try:
        return _get(url, timeout=2)[0] == 200
    except OSError:
        return False


def _png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


# --- bad input -----------------------------------------------------------------------------------------------


def test_bad_http_options_are_one_line_errors(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["run", "--model", str(classifier_dir), "--source", str(video), "--frames", "1"]
    result = runner.invoke(cli, [*base, "--http", "nowhere"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: command line: key 'http.listen' must be HOST:PORT or PORT (e.g. 127.0.0.1:8080), got 'nowhere'"
    ]
    result = runner.invoke(cli, [*base, "--http", "8080", "--http-fps", "0"])
    assert result.exit_code == 2 and "key 'http.fps' must be above 0" in result.output
    missing = tmp_path / "missing"
    config = tmp_path / "edgekit.toml"
    config.write_text(f'[http]\nlisten = "127.0.0.1:{_free_port()}"\npassword_file = "{missing}"\n')
    result = runner.invoke(cli, [*base, "--config", str(config)])
    assert result.exit_code == 2 and result.output.strip() == f"Error: {missing}: http password file not found"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(cli, [*base, "--http", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: command line: key 'http.listen': cannot listen on 127.0.0.1:{port} (Address already in use); "
        "pick another address or port"
    )
