"""Small real TFLite models for the device tests, built with TensorFlow in the test process (never on the device side).

Each builder writes a `.tflite` (and, for the classifier, an edgekit manifest) and returns its path. They are
called once per session from `conftest.py`; the benchmark reuses `build_classifier` at 224 px.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekit.model.manifest import InputSpec, Manifest, OutputSpec, Preprocess, Quantization
from edgekit.model.preprocess import prepare


def _tf():  # type: ignore[no-untyped-def]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _convert(converter) -> bytes:  # type: ignore[no-untyped-def]
    # The converter warns about its own internals (quantization statistics, deprecated paths); pytest turns
    # warnings into errors, and these are not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def _calibration(photos: Sequence[Path], size: int, preprocess: Preprocess) -> list[np.ndarray]:
    import cv2

    images = []
    for path in photos:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        rgb, _ = prepare(bgr, (size, size), preprocess, color="BGR")
        images.append(rgb)
    return images


def build_classifier(
    out_dir: Path, photos: Sequence[Path], size: int = 96, num_classes: int = 10, input_type: str = "uint8"
) -> Path:
    """A full-int8 MobileNet-style classifier (random weights, calibrated on real photos), uint8 in/out + manifest.

    Not keras' MobileNetV2: untrained, its features collapse to ~1e-11 and every class scores the same, so tests
    could not tell frames apart. This is the same ops (conv, depthwise, pointwise, batch norm, ReLU6) with batch
    norm statistics taken from the photos (one training-mode call, momentum 0), so answers differ from photo to
    photo. Normalisation (x / 127.5 - 1) is baked into the graph, as `edgekit convert` does.
    """
    tf = _tf()
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers

    def bn_relu(t):  # type: ignore[no-untyped-def]
        return layers.ReLU(6.0)(layers.BatchNormalization(momentum=0.0)(t))

    inputs = tf.keras.Input((size, size, 3))
    x = bn_relu(layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs / 127.5 - 1.0))
    for filters in (24, 32, 64):
        x = bn_relu(layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x))
        x = bn_relu(layers.Conv2D(filters, 1, use_bias=False)(x))
    x = layers.BatchNormalization(momentum=0.0)(layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
    preprocess = Preprocess(policy="center_crop", crop_fraction=0.875, mean=(127.5,) * 3, std=(127.5,) * 3)
    calib = _calibration(photos, size, preprocess)
    model(np.stack(calib).astype(np.float32), training=True)  # batch norm statistics from real photos

    def representative():  # type: ignore[no-untyped-def]
        for image in calib:
            yield [image[None].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8 if input_type == "int8" else tf.uint8
    converter.inference_output_type = tf.uint8
    blob = _convert(converter)
    (out_dir / "model.tflite").write_bytes(blob)
    (out_dir / "labels.txt").write_text("".join(f"class_{i}\n" for i in range(num_classes)))

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    manifest = Manifest(
        task="classify",
        input=InputSpec(
            height=size,
            width=size,
            dtype=input_type,  # type: ignore[arg-type]
            quantization=Quantization(float(inp["quantization"][0]), int(inp["quantization"][1])),
        ),
        preprocess=preprocess,
        outputs=(
            OutputSpec(
                role="scores",
                shape=tuple(int(d) for d in out["shape"]),
                dtype="uint8",
                quantization=Quantization(float(out["quantization"][0]), int(out["quantization"][1])),
            ),
        ),
        labels="labels.txt",
        num_classes=num_classes,
        converter={"tool": "tests/device/models.py"},
    )
    manifest.write(out_dir)
    return out_dir / "model.tflite"


def build_float_classifier(out_dir: Path, size: int = 32, num_classes: int = 5) -> Path:
    """A float32-input classifier (what `--device edgetpu` must refuse)."""
    tf = _tf()
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((size, size, 3)),
            tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    path = out_dir / "float.tflite"
    path.write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))
    return path


def build_vector_model(out_dir: Path) -> Path:
    """A model whose input is a (1, 10) vector, not an image."""
    tf = _tf()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = tf.keras.Sequential([tf.keras.Input((10,)), tf.keras.layers.Dense(3, activation="softmax")])
    path = out_dir / "vector.tflite"
    path.write_bytes(_convert(tf.lite.TFLiteConverter.from_keras_model(model)))
    return path


def build_ssd_layout(out_dir: Path, photos: Sequence[Path], size: int = 64, max_detections: int = 5) -> Path:
    """A tiny int8 model with uint8 input and the four float outputs of an SSD postprocess op.

    Not a detector: it exists to carry the pipeline plumbing (input feeding, output roles, box mapping) through
    a real interpreter. Boxes are valid (ymin < ymax, xmin < xmax, in 0..1) and scores in 0..1, derived from
    the image so that they change with the frame. The postprocessing math itself is tested on arrays.
    """
    tf = _tf()
    out_dir.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(2)
    n = max_detections
    inputs = tf.keras.Input((size, size, 3))
    x = inputs / 255.0
    x = tf.keras.layers.Conv2D(8, 3, strides=4, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    raw = tf.keras.layers.Dense(n * 4, activation="sigmoid")(x)
    raw = tf.keras.layers.Reshape((n, 2, 2))(raw)
    # ymin,xmin in [0, 0.5), ymax,xmax = ymin,xmin + [0.1, 0.5): always a proper box inside the frame.
    starts = raw[:, :, 0, :] * 0.5
    sizes = raw[:, :, 1, :] * 0.4 + 0.1
    boxes = tf.keras.layers.Concatenate(axis=-1, name="boxes")([starts, starts + sizes])
    scores = tf.keras.layers.Dense(n, activation="sigmoid", name="scores")(x)
    classes = tf.keras.layers.Lambda(lambda t: tf.round(t * 3.0), name="classes")(
        tf.keras.layers.Dense(n, activation="sigmoid")(x)
    )
    count = tf.keras.layers.Lambda(lambda t: tf.reduce_sum(tf.ones_like(t), axis=-1), name="count")(scores)
    model = tf.keras.Model(inputs, [boxes, classes, scores, count])
    calib = [
        np.asarray(tf.image.resize(tf.io.decode_image(p.read_bytes(), channels=3), (size, size)), np.float32)
        for p in photos
    ]

    def representative():  # type: ignore[no-untyped-def]
        for image in calib:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.inference_input_type = tf.uint8
    path = out_dir / "ssd_layout.tflite"
    path.write_bytes(_convert(converter))
    return path
