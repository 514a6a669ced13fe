"""Shared fixtures: paths to the real test data, and an isolated CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`tests/data`: real photos, a real video and Coral's models, in the repository (see tests/data/NOTICE.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def photos(data_dir: Path) -> list[Path]:
    """The real photographs, sorted by name."""
    return sorted(p for p in (data_dir / "photos").iterdir() if p.suffix.lower() in {".jpg", ".png"})


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real TFLite conversions (int8, float, dynamic shape, unsupported op, MobileNetV2 0.35/96 px).

    See tests/model/tiny_models.py for what each one is. Converting imports TensorFlow into the test process.
    """
    from tests.model.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def stand_in_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the stand-in `edgetpu_compiler` (tests/tools/edgetpu_stand_in.py, not Coral's) first on PATH."""
    import os

    from tests.tools.edgetpu_stand_in import install_compiler

    bin_dir = tmp_path / "bin"
    script = install_compiler(bin_dir, REPO)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("EDGETPU_STANDIN_FAIL", raising=False)
    monkeypatch.delenv("EDGETPU_STANDIN_CPU_OPS", raising=False)
    return script
