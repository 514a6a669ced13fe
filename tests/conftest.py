"""Shared fixtures: paths to the real test data, and an isolated CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the repository: real photos and a real video (see its NOTICE.md)."""
    if not (SHARED_DATA / "photos").is_dir():
        pytest.fail(f"test data missing: {SHARED_DATA} (CI lays ../shared beside the clone)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def photos(shared_data: Path) -> list[Path]:
    """The real photographs, sorted by name."""
    return sorted(p for p in (shared_data / "photos").iterdir() if p.suffix.lower() in {".jpg", ".png"})


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real TFLite conversions (int8, float, dynamic shape, unsupported op, MobileNetV2 0.35/96 px).

    See tests/model/tiny_models.py for what each one is. Converting imports TensorFlow into the test process.
    """
    from tests.model.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny_models"))
