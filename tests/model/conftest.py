"""Fixtures for model/ tests: tiny real TFLite conversions, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real TFLite files converted by TensorFlow (see tests/model/tiny_models.py for what each one is)."""
    from tests.model.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny_models"))
