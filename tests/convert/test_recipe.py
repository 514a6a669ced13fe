"""The quantization steps on a small real Keras MobileNetV2: equalization keeps the float function, bias
correction cancels the int8 weight-rounding shift, and the report's fidelity numbers are computed right."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.convert.report import fidelity


@pytest.fixture(scope="module")
def mobilenet() -> object:
    import keras

    keras.utils.set_random_seed(7)
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(64, 64, 3), weights=None, classes=10)
    # random BatchNorm statistics, so channels differ in range as in a trained network
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.2, 3, g.shape), rng.normal(0, 0.5, b.shape), m, v])
    return model


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 64, 64, 3)).astype(np.float32)


def test_equalization_keeps_the_float_function_and_evens_out_channels(mobilenet: object) -> None:
    import keras

    from edgekit.convert.equalize import channel_maxima, equalize, find_pairs

    model = keras.models.clone_model(mobilenet)
    model.set_weights(mobilenet.get_weights())  # type: ignore[attr-defined]
    x = _inputs(16, 1)
    before = np.asarray(model(x))
    pairs = find_pairs(model)
    assert len(pairs) >= 30  # expand->dw and dw->project in every block
    spread_before = [float(m.max() / max(m[m > 0].min(), 1e-9)) for m in channel_maxima(model, pairs, x)]
    assert equalize(model, x)
    spread_after = [float(m.max() / max(m[m > 0].min(), 1e-9)) for m in channel_maxima(model, pairs, x)]
    assert np.median(spread_after) < np.median(spread_before)
    assert np.abs(np.asarray(model(x)) - before).max() < 1e-4
    assert np.abs(np.asarray(model(_inputs(8, 2))) - np.asarray(mobilenet(_inputs(8, 2)))).max() < 1e-4  # type: ignore[operator]


def test_bias_correction_moves_only_biases(mobilenet: object) -> None:
    import keras

    from edgekit.convert.biascorr import correct_biases

    model = keras.models.clone_model(mobilenet)
    model.set_weights(mobilenet.get_weights())  # type: ignore[attr-defined]
    kernels = [w.copy() for layer in model.layers for w in layer.get_weights()[:1] if w.ndim == 4]
    assert correct_biases(model, _inputs(8, 3)) >= 50
    after = [w for layer in model.layers for w in layer.get_weights()[:1] if w.ndim == 4]
    assert all(np.array_equal(a, b) for a, b in zip(kernels, after, strict=True))
    # the float model moved by the expected rounding shift only: small, but not zero
    diff = np.abs(np.asarray(model(_inputs(4, 4))) - np.asarray(mobilenet(_inputs(4, 4)))).max()  # type: ignore[operator]
    assert 0 < diff < 0.05


def test_fidelity_numbers() -> None:
    ref = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    q = np.array([[0.8, 0.1, 0.1], [0.3, 0.45, 0.25], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
    f = fidelity(ref, q, truth=np.array([0, 1, 2, -1]))
    assert f.top1_agreement == 0.75
    assert (f.confident_images, f.confident_agreement) == (2, 1.0)
    assert f.top5_containment == 1.0
    assert f.mean_abs_dp == pytest.approx(np.abs(ref - q).mean())
    assert (f.labelled_images, f.float_accuracy, f.int8_accuracy) == (3, 2 / 3, 1.0)
