"""Small real TFLite models converted with TensorFlow, for tests of the .tflite reader and the Edge TPU rules.

Each model is a few Keras layers (or a MobileNetV2 at alpha 0.35, 96 px) converted with the real TFLite converter:
full-integer int8 with uint8 input/output unless said otherwise, calibrated on random images (the rules under test
do not depend on calibration quality). Built once per session by the fixtures in ``tests/model/conftest.py``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tf() -> Any:
    import tensorflow as tf

    return tf


def convert(
    model: Any,
    path: Path,
    *,
    int8: bool = True,
    io_type: str = "uint8",
    shape: tuple[int, ...] | None = None,
    samples: int = 4,
) -> Path:
    """Convert a Keras model to ``path`` (full-integer when ``int8``, else float32) and return the path."""
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        in_shape = shape or tuple(1 if d is None else d for d in model.inputs[0].shape)
        rng = np.random.default_rng(0)

        def representative() -> Iterator[list[np.ndarray]]:
            for _ in range(samples):
                yield [rng.uniform(0.0, 1.0, in_shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io_type]
        converter.inference_input_type = dtype
        converter.inference_output_type = dtype
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the converter's note on uint8 inputs, expected here.
        warnings.simplefilter("ignore", UserWarning)
        path.write_bytes(converter.convert())
    return path


def _classifier(size: int | None = 32, middle: Callable[[Any], Any] | None = None) -> Any:
    keras = _tf().keras
    inp = keras.Input((size, size, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    if middle is not None:
        x = middle(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inp, out)


def build_all(folder: Path) -> dict[str, Path]:
    """Convert every test model into ``folder``; returns {name: path}.

    - ``int8``: conv / depthwise / 1x1 conv / mean / dense / softmax, uint8 in and out: all Edge TPU ops.
    - ``float``: the same network, float32 throughout.
    - ``dynamic``: int8, but with free height and width (shape signature -1): a truly dynamic shape.
    - ``hard_swish``: int8 with a hard-swish activation after the first conv (HARD_SWISH is not on Coral's list).
    - ``mobilenet``: MobileNetV2 alpha 0.35 at 96x96 (random weights), int8 with uint8 input/output.
    """
    tf = _tf()
    keras = tf.keras
    folder.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(0)
    paths = {
        "int8": convert(_classifier(), folder / "int8.tflite"),
        "float": convert(_classifier(), folder / "float.tflite", int8=False),
        "dynamic": convert(_classifier(size=None), folder / "dynamic.tflite", shape=(1, 32, 32, 3)),
        "hard_swish": convert(
            _classifier(middle=keras.layers.Activation(keras.activations.hard_swish)), folder / "hard_swish.tflite"
        ),
    }
    # A fixed batch of 1, as edgekit convert exports; keras.applications alone would leave it free (-1).
    mobilenet = keras.applications.MobileNetV2(
        input_tensor=keras.Input((96, 96, 3), batch_size=1), alpha=0.35, weights=None, classes=10
    )
    paths["mobilenet"] = convert(mobilenet, folder / "mobilenet.tflite", shape=(1, 96, 96, 3), samples=2)
    return paths
