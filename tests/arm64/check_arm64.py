"""`make test-arm64`: the device side on a Pi's architecture (aarch64, Debian bookworm, emulated) against x86.

Not collected by `make test` (the name is not test_*.py): the Makefile target prepares the emulated root first
(tests/arm64/prepare.sh) and passes its folder in ARM64_WORK. Every emulated process goes through on_aarch64.py,
which exits non-zero unless platform.machine() is aarch64.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TEST_DATA
from tests.device.mqtt_broker import Broker, Subscriber

HERE = Path(__file__).resolve().parent
# The real footage losslessly re-encoded (FFV1, tests/data/NOTICE.md): both OpenCV builds decode it to the same
# pixels, so the runs compare edgekit and not the decoders. The original MPEG-4 file decodes differently on aarch64
# from its second frame on (test_decoding_is_the_same_but_for_the_lossy_video measures by how much).
VIDEO = TEST_DATA / "video" / "Megamind-ffv1.avi"
LOSSY = TEST_DATA / "video" / "Megamind.avi"
VIDEO_FRAMES = 8  # all of VIDEO; an emulated invoke is ~0.7 s
# Pictures for the preprocessing comparison: photos and one of Coral's test images, of sizes that shrink and enlarge.
PICTURES = [TEST_DATA / "photos" / n for n in ("HappyFish.jpg", "smarties.png", "baboon.jpg", "messi5.jpg")] + [
    TEST_DATA / "coral" / "images" / "cat.bmp"
]
# Folders for the runs. Classification: Coral's three test photos, the baboon (pictures the model is sure about)
# and HappyFish, a near tie (two classes at about 0.23) that broke the other way while the kernels disagreed.
CLASSIFY = [TEST_DATA / "coral" / "images" / n for n in ("bird.bmp", "cat.bmp", "grace_hopper.bmp")] + [
    TEST_DATA / "photos" / n for n in ("baboon.jpg", "HappyFish.jpg")
]
# Detection: the two photos the shape detector finds shapes in, both preprocessed to identical bytes.
DETECT = [TEST_DATA / "photos" / n for n in ("HappyFish.jpg", "smarties.png")]
DETECTOR = TEST_DATA / "ssdlite_shapes_int8.tflite"


@pytest.fixture(scope="session")
def emulated() -> list[str]:
    """The command prefix that runs a Python script on the emulated aarch64 Python 3.11 (see prepare.sh)."""
    work = os.environ.get("ARM64_WORK")
    if not work or not (Path(work) / "env").is_file():
        pytest.fail("run these through `make test-arm64` (ARM64_WORK must name a folder made by prepare.sh)")
    env = dict(line.split("=", 1) for line in (Path(work) / "env").read_text().splitlines())
    return [env["PYTHON"], str(HERE / "on_aarch64.py")]


def run(command: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure shows its stderr."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{command[:4]}... exit {done.returncode}:\n{done.stderr[-3000:]}"
    return done


def host(*args: str) -> list[str]:
    """The same `edgekit` command on x86, from this checkout."""
    return [sys.executable, "-m", "edgekit", *args]


def folder(pictures: list[Path], where: Path) -> Path:
    where.mkdir()
    for picture in pictures:
        (where / picture.name).symlink_to(picture)
    return where


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's model: torchvision's ImageNet MobileNetV2 converted by edgekit on x86 (TensorFlow: host only).

    Cached beside the emulated root, keyed by the converter's and the model package's sources.
    """
    sources = sorted((REPO / "edgekit").glob("convert/**/*.py")) + sorted((REPO / "edgekit" / "model").glob("*.py"))
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    cache = Path(os.environ.get("EDGEKIT_ARM64_CACHE", Path.home() / ".cache" / "edgekit-arm64"))
    model = cache / f"mobilenet_v2-{key}"
    if not (model / "edgekit.json").is_file():
        calib = tmp_path_factory.mktemp("calib")
        for photo in sorted((TEST_DATA / "photos").iterdir()):
            (calib / photo.name).symlink_to(photo)
        out = tmp_path_factory.mktemp("convert") / "mobilenet_v2"
        run(host("convert", "mobilenet_v2", "--weights", "torchvision-imagenet", "--input-size", "224", "--calib",
                 str(calib), "--num-calib", "32", "--out", str(out)), REPO, timeout=600)  # fmt: skip
        model.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, model) if not model.exists() else None
    return model


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on the host's loopback: the emulated run connects to it like a Pi to its broker."""
    started = Broker(tmp_path / "broker").start()
    yield started
    started.stop()


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def schema(value: Any, path: str = "") -> set[str]:
    """Every key path of a record with the type found there (list items merged)."""
    if isinstance(value, dict):
        return {f"{path}.{k}" for k in value} | {p for k, v in value.items() for p in schema(v, f"{path}.{k}")}
    if isinstance(value, list):
        return {p for item in value for p in schema(item, f"{path}[]")}
    return {f"{path}:{type(value).__name__}"}


def output_step(model: Path) -> float:
    """One quantization step of the scores, from `edgekit inspect --json` (the scale of the uint8 scores output)."""
    info = json.loads(run(host("inspect", str(model), "--json"), REPO).stdout)
    scales = [o["quantization"]["scale"] for o in info["outputs"] if o.get("quantization", {}).get("scale")]
    return max(scales) if scales else 1 / 256


def test_version_and_doctor_run_as_aarch64(emulated: list[str]) -> None:
    version = run([*emulated, "edgekit", "--version"], REPO).stdout
    assert version == run(host("--version"), REPO).stdout
    doctor = subprocess.run([*emulated, "edgekit", "doctor", "--json"], cwd=REPO, capture_output=True, text=True,
                            timeout=240, check=False)  # fmt: skip
    report = json.loads(doctor.stdout)  # a Pi without camera or Coral has findings: the exit code may say so
    assert "on aarch64" in json.dumps(report), doctor.stdout[:2000]


def test_inspect_of_a_converted_model_is_the_same(emulated: list[str], converted: Path) -> None:
    ours = json.loads(run([*emulated, "edgekit", "inspect", str(converted), "--json"], REPO).stdout)
    assert ours == json.loads(run(host("inspect", str(converted), "--json"), REPO).stdout)


@pytest.fixture(scope="session")
def preprocessed(emulated: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    folder = tmp_path_factory.mktemp("preprocess")
    frames = folder / "frames.npz"
    args = [str(LOSSY), str(VIDEO), "3", *map(str, PICTURES)]
    script = str(HERE / "preprocess_dump.py")
    run([sys.executable, script, str(folder / "x86.json"), str(frames), "save", *args], REPO)
    run([*emulated, script, str(folder / "arm.json"), str(frames), "load", *args], REPO)
    x86, arm = (json.loads((folder / name).read_text()) for name in ("x86.json", "arm.json"))
    assert (x86["machine"], arm["machine"]) == ("x86_64", "aarch64")
    return x86, arm


def test_decoding_is_the_same_but_for_the_lossy_video(preprocessed: tuple[dict, dict]) -> None:
    # imread and the FFV1 copy decode to identical bytes. The MPEG-4 original is a measured difference of OpenCV's
    # bundled FFmpeg, not of edgekit: its first frame is the same, later ones are off by at most 2 grey levels in
    # about 64% of the values (README, "Tested on"); the preprocessing tests feed both architectures x86's frames.
    x86, arm = preprocessed
    for name in [*map(str, PICTURES), *(f"{VIDEO}#{i}" for i in range(3))]:
        assert x86["decoded"][name] == arm["decoded"][name], name
    assert arm["off"][f"{LOSSY}#0"] == [0, 0.0]
    assert all(arm["off"][f"{LOSSY}#{i}"][0] <= 2 for i in (1, 2)), arm["off"]


def differing(preprocessed: tuple[dict, dict], downscale: str) -> list[str]:
    x86, arm = preprocessed
    keys = [k for k in x86["prepared"] if k.split("|")[1] == downscale]
    assert len(keys) == (3 + len(PICTURES)) * 3 * 4
    return [k for k in keys if x86["prepared"][k] != arm["prepared"][k]]


def test_pyramid_preprocessing_gives_identical_bytes(preprocessed: tuple[dict, dict]) -> None:
    assert differing(preprocessed, "pyramid") == []


def test_bilinear_preprocessing_gives_identical_bytes(preprocessed: tuple[dict, dict]) -> None:
    """A plain .tflite's default (INTER_LINEAR_EXACT, fixed point): the same bytes on a Pi."""
    assert differing(preprocessed, "bilinear") == []


def test_area_preprocessing_gives_identical_bytes(preprocessed: tuple[dict, dict]) -> None:
    assert differing(preprocessed, "area") == []


CORAL = TEST_DATA / "coral" / "mobilenet_v2_1.0_224_quant.tflite"


class ScoreDrift(AssertionError):
    """Scores further apart than the tolerance, with the same top-1 and schema on every frame."""


def compare_classify(x86: list[dict[str, Any]], arm: list[dict[str, Any]], step: float, steps: int) -> None:
    """Same schema and top-1 on every frame (AssertionError), and every score shared by both within ``steps`` of
    ``step`` (ScoreDrift, raised only once the rest held on every frame)."""
    assert len(x86) == len(arm) > 0
    worst: tuple[float, Any] = (0.0, None)
    for a, b in zip(x86, arm, strict=True):
        assert schema(a) - {".timing_ms"} == schema(b) - {".timing_ms"}
        assert a["frame"] == b["frame"]
        assert a["classes"][0]["id"] == b["classes"][0]["id"], (a["frame"], a["classes"], b["classes"])
        scores = {c["id"]: c["score"] for c in b["classes"]}
        for c in a["classes"]:
            if c["id"] in scores and abs(c["score"] - scores[c["id"]]) > worst[0]:
                worst = (abs(c["score"] - scores[c["id"]]), (a["frame"], a["classes"], b["classes"]))
    if worst[0] > steps * step + 1e-4:
        raise ScoreDrift(f"{worst[0] / step:.1f} steps apart (tolerance {steps}): {worst[1]}")


# Score tolerance in output steps, with identical input: one, the issue's. edgekit's conversion meets it (measured:
# every layer's output identical). It used to be up to 9: its baked normalisation was an int8 MUL, the one op
# XNNPACK rounds differently on aarch64; it is a 1x1 depthwise convolution now (edgekit/convert/quantize.py).
# Coral's model, which edgekit did not make, runs on XNNPACK's uint8 kernels and does not: with the bilinear
# stretch a plain .tflite gets, byte-identical input gave scores 7 steps apart on the pictures and 3 on the video
# (CI run of 2026-12-02; 1-2 with area input). Same top-1 everywhere, asserted; the drift is a known failure.
TOLERANCE = {"coral": 1, "converted": 1}
CORAL_DRIFT = pytest.mark.xfail(
    strict=True, raises=ScoreDrift, reason="Coral's uint8 model under XNNPACK: up to 7 steps apart on aarch64"
)
RUNS = [
    pytest.param(model, source, marks=[CORAL_DRIFT] if model == "coral" else [])
    for model in TOLERANCE
    for source in ("pictures", "video")
]


@pytest.mark.parametrize(("model", "source"), RUNS)
def test_run_classifies_like_x86_to_stdout_and_mqtt(
    emulated: list[str], converted: Path, model: str, source: str, broker: Broker, tmp_path: Path
) -> None:
    sub = Subscriber(broker.port, "cams/#", client_id="arm64-watcher")
    if source == "video":
        where, frames = str(VIDEO), VIDEO_FRAMES
    else:
        where, frames = str(folder(CLASSIFY, tmp_path / "p")), len(CLASSIFY)
    path = CORAL if model == "coral" else converted
    labels = ["--labels", str(CORAL.parent / "imagenet_labels.txt")] if model == "coral" else []
    args = ["run", "--model", str(path), *labels, "--source", where, "--frames", str(frames), "--top-k", "3",
            "--camera", "pi", "--stats-interval", "0", "--sink", "stdout"]  # fmt: skip
    arm = records(run([*emulated, "edgekit", *args, "--sink", f"mqtt://127.0.0.1:{broker.port}/cams"], REPO).stdout)
    x86 = [r for r in records(run(host(*args), REPO).stdout) if r["type"] == "result"]
    results = [r for r in arm if r["type"] == "result"]
    assert sub.wait_for(lambda: len(sub.payloads("cams/pi/result")) == len(results), 20)
    sub.close()
    assert sub.payloads("cams/pi/result") == results  # the MQTT sink published what stdout printed
    compare_classify(x86, results, output_step(path), TOLERANCE[model])


def test_run_detects_like_x86(emulated: list[str], tmp_path: Path) -> None:
    where = str(folder(DETECT, tmp_path / "p"))
    args = ["run", "--model", str(DETECTOR), "--source", where, "--top-k", "5", "--threshold", "0.05",
            "--stats-interval", "0"]  # fmt: skip
    arm = records(run([*emulated, "edgekit", *args], REPO).stdout)
    x86 = records(run(host(*args), REPO).stdout)
    step = output_step(DETECTOR)
    found = 0
    assert len(x86) == len(arm) == len(DETECT)
    for a, b in zip(x86, arm, strict=True):
        assert schema(a) - {".timing_ms"} == schema(b) - {".timing_ms"} or not (a["detections"] and b["detections"])
        # A detection within one step of the threshold may be missing on one side; any other must be on both.
        sure_a = [d for d in a["detections"] if d["score"] >= 0.05 + step]
        for d in sure_a:
            match = [e for e in b["detections"] if e.get("id") == d.get("id")
                     and all(abs(e["box"][k] - d["box"][k]) <= 1.0 for k in d["box"])]  # fmt: skip
            assert match and abs(match[0]["score"] - d["score"]) <= step + 1e-4, (a["frame"], a, b)
            found += 1
        assert len([d for d in b["detections"] if d["score"] >= 0.05 + step]) <= len(a["detections"])
    assert found >= 2  # the comparison compared boxes
