"""Device-test fixtures: small real TFLite models built once per session (TensorFlow runs in the test process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.device import models
from tests.device.mqtt_broker import mosquitto  # noqa: F401  (a real broker; a fixture registered by import)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def calibration_photos(photos: list[Path]) -> list[Path]:
    return [p for p in photos if p.suffix == ".jpg"][:6]


@pytest.fixture(scope="session")
def classifier_dir(model_root: Path, calibration_photos: list[Path]) -> Path:
    """A converted-model folder (model.tflite, labels.txt, edgekit.json): uint8 in, 10 classes, 96 px."""
    return models.build_classifier(model_root / "cls", calibration_photos).parent


@pytest.fixture(scope="session")
def int8_classifier_dir(model_root: Path, calibration_photos: list[Path]) -> Path:
    """The same network with an int8 input tensor."""
    return models.build_classifier(model_root / "cls_int8", calibration_photos, input_type="int8").parent


@pytest.fixture(scope="session")
def float_model(model_root: Path) -> Path:
    return models.build_float_classifier(model_root / "float")


@pytest.fixture(scope="session")
def vector_model(model_root: Path) -> Path:
    return models.build_vector_model(model_root / "vector")


@pytest.fixture(scope="session")
def ssd_model(model_root: Path, calibration_photos: list[Path]) -> Path:
    """A plain .tflite in SSD output layout (see `models.build_ssd_layout`: plumbing, not a detector)."""
    return models.build_ssd_layout(model_root / "ssd", calibration_photos)


@pytest.fixture(scope="session")
def shape_detector_dir(data_dir: Path) -> Path:
    """A real converted SSDLite detector of circles, squares and triangles (trained and converted once, cached)."""
    from tests.device.moving_scenes import converted_shape_detector

    return converted_shape_detector(data_dir)


@pytest.fixture(scope="session")
def video(data_dir: Path) -> Path:
    """The real 270-frame 720x528 MJPEG video."""
    return data_dir / "video" / "Megamind.avi"
