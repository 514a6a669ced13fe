"""`convert_detector` end to end on a real (briefly trained, cached) SSDLite detector, and its bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.convert.detect.demo import Recipe, trained_shape_detector
from edgekit.convert.detect.pipeline import DetectReport, convert_detector, render_report
from edgekit.convert.detect.scenes import SHAPE_CLASSES, load_photos, make_scenes, write_eval_folder
from edgekit.errors import InputError, ModelError

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGEKIT_CACHE_DIR", REPO / ".edgekit-cache"))
# Small and quick: trains in about two minutes on two cores the first time, then comes from the cache.
TEST_RECIPE = Recipe(input_size=160, alpha=0.35, train_scenes=1000, steps=300)


@pytest.fixture(scope="session")
def shape_detector(data_dir: Path) -> Path:
    return trained_shape_detector(data_dir / "photos", CACHE, TEST_RECIPE)


@pytest.fixture(scope="session")
def scene_folders(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    photos = load_photos(data_dir / "photos")
    root = tmp_path_factory.mktemp("detect-scenes")
    # Seeds differ from training (seed + 1 = 1): calibration and evaluation scenes are unseen.
    calib = write_eval_folder(make_scenes(photos, 40, 160, seed=101), root / "calib")
    evaluation = write_eval_folder(make_scenes(photos, 60, 200, seed=202), root / "eval")
    return calib, evaluation


@pytest.fixture(scope="session")
def converted(
    shape_detector: Path, scene_folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> DetectReport:
    calib, evaluation = scene_folders
    out = tmp_path_factory.mktemp("detect-out") / "model"
    return convert_detector(
        shape_detector, calib, out, labels=shape_detector.parent / "labels.txt", eval_dir=evaluation, num_calib=40
    )


def test_int8_model_ends_in_the_fused_postprocess(converted: DetectReport) -> None:
    from edgekit.convert.detect.tflite import describe

    info = describe((converted.out_dir / "model.tflite").read_bytes())
    assert info.ops["TFLite_Detection_PostProcess"] == 1
    assert info.postprocess["num_classes"] == 3
    assert info.postprocess["max_detections"] == info.max_detections == 20
    assert [o.name for o in info.outputs] == [
        "TFLite_Detection_PostProcess",
        "TFLite_Detection_PostProcess:1",
        "TFLite_Detection_PostProcess:2",
        "TFLite_Detection_PostProcess:3",
    ]
    assert [o.shape for o in info.outputs] == [(1, 20, 4), (1, 20), (1, 20), (1,)]
    assert all(o.dtype == "float32" for o in info.outputs)
    # uint8 pixels go straight in: the input quantization is the model's (p - 127.5) / 127.5.
    assert info.input.dtype == "uint8"
    assert info.input.scale == pytest.approx(2 / 255, rel=1e-3)
    assert info.input.zero_point in (127, 128)
    # Full int8: one QUANTIZE (the input) and the float tensors only where the fused op reads them.
    assert info.ops.get("QUANTIZE", 0) == 1
    assert info.ops.get("DEQUANTIZE", 0) <= 2
    assert converted.int8_bytes < 0.5 * converted.float_bytes


def test_outputs_run_in_standard_order(converted: DetectReport, scene_folders: tuple[Path, Path]) -> None:
    import cv2

    from edgekit.convert.detect.tflite import TfliteDetector
    from edgekit.model.manifest import load_manifest
    from edgekit.model.preprocess import prepare

    manifest = load_manifest(converted.out_dir)
    detector = TfliteDetector((converted.out_dir / "model.tflite").read_bytes())
    frame = cv2.imread(str(scene_folders[1] / "scene_00000.png"))
    assert frame is not None
    image, _ = prepare(frame, (manifest.input.height, manifest.input.width), manifest.preprocess, color="BGR")
    result = detector.detect(image)
    assert detector.output_shapes == [(1, 20, 4), (1, 20), (1, 20), (1,)]
    assert 0 < len(result.scores) <= 20
    assert np.all(np.diff(result.scores) <= 1e-6)  # scores come sorted: the third output really is scores
    assert set(result.classes.tolist()) <= {0, 1, 2}
    assert np.all(result.boxes[:, 2:] >= result.boxes[:, :2])


def test_int8_map_is_close_to_float(converted: DetectReport) -> None:
    assert converted.float_map is not None and converted.int8_map is not None
    assert converted.eval_images == 60
    # A detector that actually detects, so the comparison means something.
    assert converted.float_map.map50 > 0.3
    assert abs(converted.int8_map.map50 - converted.float_map.map50) < 0.03
    assert abs(converted.int8_map.map50_95 - converted.float_map.map50_95) < 0.03


def test_manifest_and_report(converted: DetectReport) -> None:
    import json

    from edgekit.model.manifest import load_manifest

    manifest = load_manifest(converted.out_dir)
    assert manifest.task == "detect"
    assert [o.role for o in manifest.outputs] == ["boxes", "classes", "scores", "count"]
    assert manifest.box_format == "ymin,xmin,ymax,xmax normalized"
    assert manifest.num_classes == 3
    assert manifest.input.dtype == "uint8" and (manifest.input.height, manifest.input.width) == (160, 160)
    assert manifest.preprocess.baked and manifest.preprocess.mean == (127.5,) * 3
    assert (converted.out_dir / "labels.txt").read_text().split() == list(SHAPE_CLASSES)
    report = json.loads((converted.out_dir / "report.json").read_text())
    assert report["int8_map"]["map50"] == pytest.approx(converted.int8_map.map50)  # type: ignore[union-attr]
    assert report["calib_images"] == 40 and report["calib_skipped"] == 0
    text = render_report(converted)
    assert "mAP@0.5:0.95" in text and "TFLite_Detection_PostProcess 1" in text
    assert f"{converted.int8_map.map50:12.4f}" in text  # type: ignore[union-attr]


def test_trained_detector_is_recognised(shape_detector: Path) -> None:
    from edgekit.convert.detect.savedmodel import is_detector_saved_model

    assert is_detector_saved_model(shape_detector)


def test_detector_is_built_with_legacy_keras() -> None:
    from edgekit.convert.detect.ssdlite import build_ssdlite

    det = build_ssdlite(2, input_size=96, alpha=0.35)
    assert type(det.model).__module__.startswith("tf_keras")
    assert det.anchors.shape[0] == int(det.model.outputs[0].shape[1])


# --- bad input: one-line errors, nothing written -------------------------------------------------------


def _assert_nothing_written(parent: Path) -> None:
    assert [p.name for p in parent.iterdir() if p.name != "keep"] == []


def test_classifier_saved_model_points_to_classify(tmp_path: Path, scene_folders: tuple[Path, Path]) -> None:
    import tf_keras

    inputs = tf_keras.Input((32, 32, 3), batch_size=1)
    x = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(5, activation="softmax", name="predictions")(x))
    model.save(tmp_path / "classifier", save_format="tf")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelError) as err:
        convert_detector(tmp_path / "classifier", scene_folders[0], out / "model")
    message = str(err.value)
    assert "no TFLite_Detection_PostProcess function" in message
    assert "serving_default takes" in message and "[1, 32, 32, 3]" in message and "[1, 5]" in message
    assert "use --task classify" in message and "\n" not in message
    _assert_nothing_written(out)
    from edgekit.convert.detect.savedmodel import is_detector_saved_model

    assert not is_detector_saved_model(tmp_path / "classifier")
    assert not is_detector_saved_model(tmp_path)


def test_label_count_mismatch_names_file_and_counts(
    tmp_path: Path, shape_detector: Path, scene_folders: tuple[Path, Path]
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("circle\nsquare\n")
    with pytest.raises(InputError, match=r"labels\.txt: no label for output 2 \(labels for 2 of 3 outputs\)"):
        convert_detector(shape_detector, scene_folders[0], tmp_path / "model", labels=labels)
    assert not (tmp_path / "model").exists()


def test_unreadable_calibration_folder(tmp_path: Path, shape_detector: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(12):
        (calib / f"img_{i}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match=r"calib: 0 usable calibration images \(12 image files unreadable\)"):
        convert_detector(shape_detector, calib, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path, shape_detector: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.txt").write_text("do not delete")
    with pytest.raises(InputError, match="exists and is not an edgekit model folder"):
        convert_detector(shape_detector, tmp_path, out)
    assert (out / "thesis.txt").read_text() == "do not delete"


def test_not_a_saved_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a SavedModel directory"):
        convert_detector(tmp_path, tmp_path, tmp_path / "model")


def test_od_api_style_reversed_returns_still_give_standard_order(tmp_path: Path) -> None:
    """The OD API's exporter returns the postprocess outputs reversed; the model must still come out in op order."""
    from edgekit.convert.detect._tf import import_tf
    from edgekit.convert.detect.export import PostprocessParams
    from edgekit.convert.detect.savedmodel import read_detector_saved_model
    from edgekit.convert.detect.tflite import convert_saved_model, describe

    tf, keras = import_tf()
    # A tiny stand-in for an SSD: 8x8 cells, one anchor each, 4 classes plus background.
    image = keras.Input((32, 32, 3), batch_size=1)
    features = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(image)
    boxes = keras.layers.Reshape((64, 4))(keras.layers.Conv2D(4, 1)(features))
    logits = keras.layers.Reshape((64, 5))(keras.layers.Conv2D(5, 1)(features))
    model = keras.Model(image, [boxes, logits])
    centres = (np.arange(8, dtype=np.float32) + 0.5) / 8
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    anchors = np.stack([cy.ravel(), cx.ravel(), np.full(64, 0.25), np.full(64, 0.25)], axis=1).astype(np.float32)
    params = PostprocessParams(num_classes=4, max_detections=7)

    @tf.function(experimental_implements=params.implements_signature())
    def postprocess(box_encodings: object, class_predictions: object, anchors: object) -> object:
        zero = tf.constant(0.0, dtype=tf.float32)
        return zero, zero, zero, zero

    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32, name="input")])
    def serve(x: object) -> object:
        b, c = module.model(x, training=False)
        return postprocess(b, tf.nn.sigmoid(c), tf.constant(anchors))[::-1]

    tf.saved_model.save(module, str(tmp_path / "sm"), signatures=serve.get_concrete_function())
    spec = read_detector_saved_model(tmp_path / "sm")
    assert spec.num_classes == 4 and spec.input_size == (32, 32)
    assert spec.postprocess["max_detections"] == 7 and spec.postprocess["y_scale"] == 10.0
    info = describe(convert_saved_model(str(tmp_path / "sm"), None))
    assert [o.shape for o in info.outputs] == [(1, 7, 4), (1, 7), (1, 7), (1,)]


def test_cli_converts_a_detector_saved_model_by_itself(
    shape_detector: Path, scene_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli
    from edgekit.model.manifest import load_manifest

    calib, evaluation = scene_folders
    out = tmp_path / "ssd"
    args = ["convert", str(shape_detector), "--calib", str(calib), "--num-calib", "20", "--out", str(out)]
    labels = ["--labels", str(shape_detector.parent / "labels.txt"), "--eval", str(evaluation), "--json"]
    result = CliRunner().invoke(cli, [*args, *labels])  # no --task: the fused postprocess says "detect"
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ops"]["TFLite_Detection_PostProcess"] == 1
    assert report["int8_map"]["map50"] > 0.0
    # every conversion carries the Edge TPU preflight; the postprocess op is expected on the CPU
    assert "preflight" in report["sections"]["Edge TPU"]
    assert load_manifest(out).task == "detect"
    assert json.loads((out / "report.json").read_text()) == report


def test_cli_refuses_classifier_options_for_a_detector(
    shape_detector: Path, scene_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    out = tmp_path / "ssd"
    args = ["convert", str(shape_detector), "--task", "detect", "--calib", str(scene_folders[0]), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--alpha", "0.5"])
    assert result.exit_code == 2
    assert result.output == "Error: --alpha: applies to classifiers only; drop it for --task detect\n"
    assert not out.exists()
