"""Full-int8 quantization: the textbook recipe (baseline) and edgekit's, which refines activation ranges."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from edgekit.convert.tfl import import_tf, interpreter, quiet

logger = logging.getLogger(__name__)

IoType = Literal["uint8", "int8"]
STEPS = frozenset({"equalize", "bias", "percentile"})
VECTOR_SIZE = 4096  # activations with at most this many values per image are not clipped
# Fraction of feature-map values clipped at each end. Swept on benchmarks/convert_fidelity.py's evaluation set
# (1e-5 .. 4e-4): less clipping leaves rounding noise, more clips the activations confident predictions rely on.
TAIL = 2e-4
Progress = Callable[[int], None]


def bake_preprocess(model: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """Wrap ``model`` so that it takes 0..255 RGB pixels: ``(pixel - mean) / std`` becomes part of the graph.

    Args:
        model: a Keras classifier expecting normalised input.
        mean: per-channel mean in pixel units (0..255).
        std: per-channel std in pixel units.

    Returns:
        A Keras model with a float input named ``image`` in pixel units.
    """
    import keras

    shape = tuple(model.inputs[0].shape[1:])
    inputs = keras.Input(shape, name="image")
    x = inputs
    if any(m != 0.0 for m in mean) or any(s != 1.0 for s in std):
        scale = np.array([1.0 / s for s in std], dtype=np.float32)
        offset = np.array([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)
        # A 1x1 depthwise convolution, not Rescaling: TFLite makes Rescaling an int8 MUL, which XNNPACK rounds
        # differently on aarch64 than on x86 (the only such op in a MobileNet: tests/arm64); its per-channel
        # depthwise kernels give both the same bits. Same function: pixel * scale + offset per channel.
        normalize = keras.layers.DepthwiseConv2D(1, use_bias=True, name="edgekit_normalize")
        x = normalize(x)
        normalize.set_weights([scale.reshape(1, 1, -1, 1), offset])
    outputs = model(x)
    return keras.Model(inputs, outputs, name=f"{model.name}_pixels")


def _converter(model: Any) -> Any:
    tf = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return converter


def float_tflite(model: Any) -> bytes:
    """The float32 TFLite model (the reference for fidelity, and the size baseline)."""
    converter = _converter(model)
    with quiet():
        return bytes(converter.convert())


def _dataset(images: np.ndarray, progress: Progress | None) -> Callable[[], Iterator[list[np.ndarray]]]:
    def gen() -> Iterator[list[np.ndarray]]:
        for image in images:
            yield [image[None].astype(np.float32)]
            if progress is not None:
                progress(1)

    return gen


def textbook_int8(model: Any, images: np.ndarray, io: IoType = "uint8", progress: Progress | None = None) -> bytes:
    """The textbook recipe: Optimize.DEFAULT, a representative dataset, TFLITE_BUILTINS_INT8, int I/O.

    Args:
        model: Keras model taking pixels (preprocessing baked).
        images: (N, H, W, 3) uint8 calibration images.
        io: input/output integer type.
        progress: called once per calibration image.
    """
    tf = import_tf()
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _dataset(images, progress)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8 if io == "uint8" else tf.int8
    converter.inference_output_type = tf.uint8 if io == "uint8" else tf.int8
    with quiet():
        return bytes(converter.convert())


def calibrate_only(model: Any, images: np.ndarray, progress: Progress | None = None) -> bytes:
    """A float TFLite model annotated with calibrated min/max per activation (not yet quantized)."""
    tf = import_tf()
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _dataset(images, progress)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter._experimental_calibrate_only = True  # the converter's documented two-step path
    with quiet():
        return bytes(converter.convert())


def quantize_calibrated(calibrated: bytes, io: IoType = "uint8") -> bytes:
    """Quantize a calibrated model to full int8 with integer input and output."""
    tf = import_tf()
    from tensorflow.lite.python.convert import mlir_quantize

    dtype = tf.uint8 if io == "uint8" else tf.int8
    with quiet():
        return bytes(mlir_quantize(calibrated, input_data_type=dtype, output_data_type=dtype))


def activation_tails(
    calibrated: bytes, images: np.ndarray, tail: float = TAIL, progress: Progress | None = None
) -> dict[int, tuple[float, float]]:
    """Percentile ranges of every annotated activation, from exact per-image tails.

    Each image contributes its ``4 * tail`` most negative and most positive values per tensor (an O(n)
    partition, no sampling), so the ``tail`` quantile over all images is exact unless a single image holds more
    than four times its share of the extremes.

    Args:
        calibrated: a calibrate-only model (float, with min/max annotations).
        images: (N, H, W, 3) uint8 inputs in the model's input units.
        tail: fraction of values clipped at each end (2e-4: the 0.02th and 99.98th percentiles).
        progress: called once per image.

    Returns:
        tensor index -> (low, high), with low <= 0 <= high.
    """
    interp = interpreter(calibrated, preserve=True)
    model = _read(calibrated)
    sub = model.subgraphs[0]
    wanted = [
        i
        for i, t in enumerate(sub.tensors)
        if t.quantization is not None
        and t.quantization.min is not None
        and len(t.quantization.min) == 1
        and not _is_constant(model, t)
        and i not in set(sub.inputs)
    ]
    lows: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    highs: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    sizes = dict.fromkeys(wanted, 0)
    inp = interp.get_input_details()[0]
    for image in images:
        interp.set_tensor(inp["index"], image[None].astype(np.float32))
        interp.invoke()
        for i in wanted:
            try:
                v = interp.get_tensor(i).reshape(-1)
            except ValueError:  # freed by the interpreter (not an activation after all)
                continue
            k = min(v.size - 1, max(1, int(np.ceil(4 * tail * v.size))))
            part = np.partition(v, (k, v.size - 1 - k))
            lows[i].append(part[:k].copy())
            highs[i].append(part[v.size - k :].copy())
            sizes[i] += v.size
        if progress is not None:
            progress(1)
    ranges: dict[int, tuple[float, float]] = {}
    for i in wanted:
        if not sizes[i]:
            continue
        per_image = sizes[i] // len(images)
        # Vectors (pooled features, logits) keep their full range: every value there is signal, and clipping
        # the logits would saturate exactly the confident predictions. Clipping pays off on feature maps, where
        # a few outliers among a million values would otherwise stretch the scale for all the others.
        rank = 1 if per_image <= VECTOR_SIZE else max(1, round(tail * sizes[i]))
        lo_all = np.sort(np.concatenate(lows[i]))
        hi_all = np.sort(np.concatenate(highs[i]))
        lo = float(lo_all[min(rank, lo_all.size) - 1])
        hi = float(hi_all[max(0, hi_all.size - rank)])
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        ranges[i] = (lo, max(hi, lo + 1e-6))
    return ranges


def _read(model: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model))


def _write(model: Any) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _is_constant(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer]
    return buf is not None and buf.data is not None and len(buf.data) > 0


def set_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """Replace calibrated min/max of the given tensors."""
    model = _read(calibrated)
    sub = model.subgraphs[0]
    for i, (a, b) in ranges.items():
        q = sub.tensors[i].quantization
        q.min = np.array([a], dtype=np.float32)
        q.max = np.array([b], dtype=np.float32)
    return _write(model)


def _clone(model: Any) -> Any | None:
    import keras

    try:
        copy = keras.models.clone_model(model)
    except Exception:  # e.g. a wrapped SavedModel: no layers to rewrite, so no equalization either
        logger.info("model cannot be cloned; skipping equalization and bias correction", exc_info=True)
        return None
    copy.set_weights(model.get_weights())
    return copy


def _normalised(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    return ((images.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)


def _fix_input_range(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    # 0..255 on uint8 is scale 1, zero point 0: the camera's pixels go in bit-exact.
    for i in _read(calibrated).subgraphs[0].inputs:
        ranges[int(i)] = (0.0, 255.0)
    return ranges


def quantize_classifier(
    model: Any,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    images: np.ndarray,
    io: IoType = "uint8",
    recipe: str = "edgekit",
    progress: Progress | None = None,
    steps: frozenset[str] = STEPS,
) -> tuple[bytes, list[str]]:
    """Full-int8 TFLite of a float classifier, with its preprocessing baked in.

    The ``edgekit`` recipe (each step measured in benchmarks/convert_fidelity.py):
      1. cross-layer equalization of ReLU/ReLU6 activations (per-channel ranges made alike);
      2. bias correction of the int8 weight rounding (BatchNorm means absorb the expected shift);
      3. activation ranges of feature maps at the 0.02/99.98th percentiles of exact per-image tails instead of
         min/max (pooled features and logits keep min/max);
      4. the input range pinned to 0..255 so uint8 pixels enter at scale 1, zero point 0.

    Args:
        model: float Keras classifier taking normalised input (it is not modified: steps work on a clone).
        mean: per-channel mean, pixel units.
        std: per-channel std, pixel units.
        images: (N, H, W, 3) uint8 calibration images.
        io: integer type of the model's input and output.
        recipe: ``edgekit`` or ``textbook`` (plain TFLiteConverter, the baseline).
        progress: called once per calibration image processed in the range pass.
        steps: which of ``STEPS`` to apply (all by default; the benchmark switches them one by one).

    Returns:
        (int8 model bytes, names of the steps applied).
    """
    if recipe == "textbook":
        baked = bake_preprocess(model, mean, std)
        return textbook_int8(baked, images, io, progress), ["textbook min/max calibration"]
    from edgekit.convert.biascorr import correct_biases
    from edgekit.convert.equalize import equalize

    applied = []
    work = _clone(model) if steps & {"equalize", "bias"} else None
    if work is not None:
        # Weight-side statistics need far fewer images than activation ranges: means and maxima settle quickly.
        stat_images = _normalised(images[:: max(1, len(images) // 64)], mean, std)
        if "equalize" in steps and equalize(work, stat_images):
            applied.append("cross-layer equalization")
        if "bias" in steps and correct_biases(work, stat_images):
            applied.append("bias correction")
    baked = bake_preprocess(work if work is not None else model, mean, std)
    if "percentile" in steps:
        # The converter's min/max are replaced below, so a few images are enough for its calibration pass.
        calibrated = calibrate_only(baked, images[:: max(1, len(images) // 8)])
        ranges = activation_tails(calibrated, images, progress=progress)
        applied.append("percentile (99.98%) activation ranges")
    else:
        calibrated = calibrate_only(baked, images, progress)
        ranges = {}
        applied.append("min/max activation ranges")
    ranges = _fix_input_range(calibrated, ranges)
    applied.append("exact uint8 input")
    return quantize_calibrated(set_ranges(calibrated, ranges), io), applied
