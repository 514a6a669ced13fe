"""The manifest round-trips and refuses what it cannot trust."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import ModelError
from edgekit.model.manifest import (
    InputSpec,
    Manifest,
    OutputSpec,
    Preprocess,
    Quantization,
    SourceModel,
    load_manifest,
    write_atomic,
)


def sample() -> Manifest:
    return Manifest(
        task="classify",
        input=InputSpec(height=224, width=224, quantization=Quantization(1.0, 0)),
        preprocess=Preprocess(policy="center_crop", crop_fraction=0.875, mean=(123.7, 116.3, 103.5)),
        outputs=(OutputSpec("scores", (1, 1000), "uint8", Quantization(0.00390625, 0)),),
        num_classes=1000,
        source=SourceModel(kind="torchvision", name="mobilenet_v2", sha256="ab" * 32),
        converter={"edgekit": "0.1.0"},
    )


def test_roundtrip(tmp_path: Path) -> None:
    path = sample().write(tmp_path)
    assert json.loads(path.read_text())["format"] == "edgekit-model"
    assert load_manifest(tmp_path) == sample()


def test_newer_version_is_refused(tmp_path: Path) -> None:
    data = json.loads(sample().to_json())
    data["version"] = 99
    (tmp_path / "edgekit.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="newer than this edgekit understands"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no manifest"),
        ("{", "unreadable manifest"),
        ('{"format": "x"}', "not an edgekit manifest"),
        ('{"format": "edgekit-model", "version": 1}', "malformed manifest"),
    ],
)
def test_bad_manifests(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "edgekit.json").write_text(content)
    with pytest.raises(ModelError, match=message):
        load_manifest(tmp_path)


def test_write_atomic_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    write_atomic(target, "one")
    write_atomic(target, b"two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
