"""Ops-test fixtures: one small real converted model, shared by the service and sandbox tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.device import models


@pytest.fixture(scope="session")
def service_model(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> Path:
    """A converted-model folder (uint8 in, 10 classes, 96 px), as `edgekit convert` writes one."""
    calibration = [p for p in photos if p.suffix == ".jpg"][:4]
    return models.build_classifier(tmp_path_factory.mktemp("service_model") / "cls", calibration).parent
