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


def test_the_downscale_is_kept_and_the_version_is_the_lowest_that_reads_it(tmp_path: Path) -> None:
    # "area" (the default, what manifests meant before the field existed) is left out: version 1, as before.
    data = json.loads(sample().to_json())
    assert data["version"] == 1 and "downscale" not in data["preprocess"]
    assert load_manifest(sample().write(tmp_path)).preprocess.downscale == "area"
    # "pyramid" needs an edgekit that knows it: version 2, which an older one refuses with "upgrade".
    pre = Preprocess(policy="center_crop", crop_fraction=0.875, downscale="pyramid")
    pyramid = Manifest(task="classify", input=sample().input, preprocess=pre, outputs=sample().outputs)
    data = json.loads(pyramid.to_json())
    assert data["version"] == 2 and data["preprocess"]["downscale"] == "pyramid"
    assert load_manifest(pyramid.write(tmp_path)) == pyramid
    data["preprocess"]["downscale"] = "nearest"
    (tmp_path / "edgekit.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"malformed manifest .*downscale 'nearest' is not one of area, pyramid"):
        load_manifest(tmp_path)


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
