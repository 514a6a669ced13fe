"""Session fixtures for convert tests: a small real model, calibration folders, and one real conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli


@pytest.fixture(scope="session")
def small_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keras.applications MobileNetV2 alpha 0.35 at 96 px with 5 classes, saved as .keras (random weights)."""
    import keras

    base = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(96, 96, 3), weights=None, include_top=True, classes=5
    )
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    base.save(path)
    return path


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    """The real photos in nested folders, plus one unreadable file (it must be skipped and counted)."""
    root = tmp_path_factory.mktemp("calib")
    for i, photo in enumerate(photos):
        sub = root / ("a" if i % 2 else "b") / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, sub / photo.name)
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory, small_keras: Path, calib_dir: Path) -> tuple[Path, dict]:
    """One real small conversion through the CLI (30 calibration images, 21 photos + augmented crops)."""
    out = tmp_path_factory.mktemp("out") / "model"
    labels = out.parent / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            str(small_keras),
            "--calib",
            str(calib_dir),
            "--num-calib",
            "30",
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)
