"""A real small conversion end to end: files, manifest, report, and the int8 model itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgekit.convert.report import to_text
from edgekit.model.manifest import load_manifest
from edgekit.model.preprocess import prepare


def test_output_folder_holds_exactly_the_four_files(converted: tuple[Path, dict]) -> None:
    out, _ = converted
    assert sorted(p.name for p in out.iterdir()) == ["edgekit.json", "labels.txt", "model.tflite", "report.json"]
    # the temp folder was renamed, not copied: nothing else is left beside the output
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_manifest_describes_a_uint8_model_with_baked_preprocessing(converted: tuple[Path, dict]) -> None:
    out, _ = converted
    manifest = load_manifest(out)
    assert manifest.task == "classify"
    assert (manifest.input.height, manifest.input.width, manifest.input.dtype) == (96, 96, "uint8")
    # raw pixels go in unchanged: 0..255 maps to uint8 0..255
    assert manifest.input.quantization.scale == 1.0 and manifest.input.quantization.zero_point == 0
    assert manifest.preprocess.baked
    assert manifest.preprocess.mean == (127.5, 127.5, 127.5)  # assumed tf preprocessing for a .keras file
    assert manifest.num_classes == 5
    assert manifest.outputs[0].shape == (1, 5) and manifest.outputs[0].dtype == "uint8"
    assert manifest.source is not None and len(manifest.source.sha256) == 64
    assert manifest.converter["tensorflow"].startswith("2.")
    assert (out / "labels.txt").read_text().split() == ["a", "b", "c", "d", "e"]


def test_report_counts_calibration_and_measures_fidelity(converted: tuple[Path, dict]) -> None:
    out, report = converted
    assert json.loads((out / "report.json").read_text()) == report
    cal = report["calibration"]
    assert cal["skipped"] == 1  # broken.jpg
    assert cal["augmented"] == 30 - 21
    assert report["eval"]["held_out"] is True
    assert any("held out" in n for n in report["notes"])
    f = report["fidelity"]
    assert f["images"] == report["eval"]["images"] > 0
    assert 0.0 <= f["top1_agreement"] <= 1.0 and 0.0 <= f["top5_containment"] <= 1.0
    assert report["size"]["int8_bytes"] < 0.45 * report["size"]["float_bytes"]  # tiny model: headers weigh more
    assert report["ops"]["CONV_2D"] >= 30 and report["ops"]["DEPTHWISE_CONV_2D"] >= 15
    assert report["model"]["parameters"] > 300_000 and report["model"]["macs"] > 1_000_000
    assert report["timing"]["wall_s"] > 0 and report["timing"]["peak_rss_mb"] > 100
    search = report["sections"]["Recipe search (calibration images, out of fold)"]
    assert search["split"].endswith("so every image scores it once")
    assert search["candidate: textbook"].startswith("top-1 ")
    assert sum("(chosen)" in v for v in search.values()) == 1
    text = to_text(report)
    assert "95% CI" in text and "too few images to judge" in text  # a held-out split of a few photos


def test_int8_model_runs_on_uint8_pixels_and_tracks_the_float_model(
    converted: tuple[Path, dict], small_keras: Path, photos: list[Path]
) -> None:
    import cv2
    import keras

    from edgekit.convert.tfl import Runner

    out, _ = converted
    manifest = load_manifest(out)
    runner = Runner((out / "model.tflite").read_bytes())
    assert runner.input["dtype"] == np.uint8 and runner.output["dtype"] == np.uint8
    images = np.stack(
        [prepare(cv2.imread(str(p))[:, :, ::-1].copy(), (96, 96), manifest.preprocess)[0] for p in photos[:6]]
    )
    q = runner(images)
    ref = np.asarray(keras.models.load_model(small_keras)(images.astype(np.float32) / 127.5 - 1.0))
    # a random-weight net gives near-uniform scores, so compare probabilities, not argmax
    assert np.abs(q - ref).max() < 0.05
    assert np.allclose(q.sum(axis=1), 1.0, atol=0.05)


def test_quality_gate_exits_3_and_replaces_an_edgekit_folder(tmp_path: Path, calib_dir: Path) -> None:
    import keras
    from click.testing import CliRunner

    from edgekit.cli import cli

    # A classifier whose decision hinges on a difference far below int8 resolution: float picks "red" or
    # "blue" by the sign of mean(R) - mean(B); int8 sees two equal scores on every photo.
    inputs = keras.Input((64, 64, 3))
    head = keras.layers.Dense(2, activation="softmax")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(inputs)))
    head.set_weights([np.array([[1e-3, -1e-3], [0.0, 0.0], [-1e-3, 1e-3]], np.float32), np.zeros(2, np.float32)])
    path = tmp_path / "fragile.keras"
    model.save(path)
    out = tmp_path / "fragile-model"
    args = ["convert", str(path), "--calib", str(calib_dir), "--num-calib", "20", "--out", str(out), "--eval",
            str(calib_dir), "--quiet", "--min-agreement", "0.99"]  # fmt: skip
    first = CliRunner().invoke(cli, args)
    before = (out / "model.tflite").stat().st_mtime_ns
    second = CliRunner().invoke(cli, args)  # an existing edgekit folder is replaced without --force
    report = json.loads((out / "report.json").read_text())
    agreement = report["fidelity"]["top1_agreement"]
    assert report["eval"] == {"source": str(calib_dir), "images": 21, "held_out": False}
    assert 0.0 < agreement < 0.99
    for result in (first, second):
        assert result.exit_code == 3
        assert result.output == (
            f"Error: int8 top-1 agreement {agreement:.3f} is below --min-agreement 0.99 "
            f"(model written to {out}; see report.json)\n"
        )
    assert (out / "model.tflite").stat().st_mtime_ns != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_savedmodel_with_logits_gets_a_softmax(tmp_path: Path, calib_dir: Path) -> None:
    import keras
    from click.testing import CliRunner

    from edgekit.cli import cli
    from edgekit.convert.tfl import Runner

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    logits = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, logits).export(str(tmp_path / "saved"), verbose=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["convert", str(tmp_path / "saved"), "--calib", str(calib_dir), "--num-calib", "20", "--out", str(out),
         "--preprocess", "raw", "--downscale", "pyramid", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["notes"][0] == "the model ends in logits: a softmax was appended so the device reads probabilities"
    assert load_manifest(out).source.kind == "savedmodel"  # type: ignore[union-attr]
    assert load_manifest(out).preprocess.mean == (0.0, 0.0, 0.0)
    assert load_manifest(out).preprocess.downscale == "pyramid"  # calibrated with it, so the device uses it
    assert "(pyramid downscale)" in report["model"]["preprocess"]
    probs = Runner((out / "model.tflite").read_bytes())(np.zeros((2, 64, 64, 3), np.uint8))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=0.02)
