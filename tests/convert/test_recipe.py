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


def test_wilson_interval_and_small_counts() -> None:
    from edgekit.convert.report import rate, wilson

    lo, hi = wilson(0, 1)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (1 + 1.96**2))
    lo, hi = wilson(90, 100)
    assert (round(lo, 3), round(hi, 3)) == (0.826, 0.945)  # the textbook Wilson 95% interval of 90/100
    assert rate(0, 1) == "0/1 = 0.0% (95% CI 0.0-79.3%): too few images to judge"
    assert "too few" not in rate(27, 30)
    assert rate(0, 0) == "n/a (no images)"


def _stats(values: np.ndarray, images: int = 4) -> object:
    from edgekit.convert.quantize import TensorStats

    v = np.sort(values.astype(np.float32))
    k = max(1, int(np.ceil(4 * 5e-4 * v.size)))
    return TensorStats(v[:k], v[-k:], v.size, int(np.count_nonzero(v)), v.size // images)


def test_range_choice_clips_a_long_tail_but_not_a_flat_distribution() -> None:
    from edgekit.convert.quantize import chosen_ranges, quantization_mse

    rng = np.random.default_rng(0)
    spiky = np.abs(rng.standard_t(2, 200_000))  # a long tail: min/max would spend most int8 levels on a few values
    flat = rng.uniform(0, 6, 200_000)
    stats = {0: _stats(spiky), 1: _stats(flat), 2: _stats(np.abs(rng.normal(0, 1, 4000)), images=4)}
    ranges = chosen_ranges(stats)  # type: ignore[arg-type]
    assert ranges[0][1] < spiky.max() and quantization_mse(stats[0], *ranges[0]) < quantization_mse(
        stats[0], 0, spiky.max()
    )  # type: ignore[arg-type]
    assert ranges[1][1] == pytest.approx(flat.max(), rel=1e-3)
    assert ranges[2][1] == pytest.approx(stats[2].high[-1])  # type: ignore[attr-defined]  # a vector keeps min/max


def test_search_is_never_worse_than_textbook_on_its_held_out_split(mobilenet: object, photos: list) -> None:
    import cv2

    from edgekit.convert.quantize import search_recipe, selection_split
    from edgekit.convert.tfl import Runner

    pictures = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (64, 64), interpolation=cv2.INTER_AREA) for p in photos]
    flips = [p[:, ::-1] for p in pictures]
    images = np.ascontiguousarray(np.stack(pictures + flips))
    origins = [p.name for p in photos] * 2
    fit, select = selection_split(len(images), origins)
    assert len(select) >= 4 and not {origins[i] for i in fit} & {origins[i] for i in select}

    search = search_recipe(mobilenet, (127.5,) * 3, (127.5,) * 3, images, origins=origins)
    textbook = search.candidates[0]
    assert textbook.name == "textbook" and len(search.candidates) == 4
    assert search.chosen.agree >= textbook.agree and search.chosen.confident_agree >= textbook.confident_agree
    assert search.chosen.key() == max(
        c.key()
        for c in search.candidates
        if c.agree >= textbook.agree and c.confident_agree >= textbook.confident_agree
    )
    # the scores are the chosen model's real agreement on the held-out pictures
    from edgekit.convert.quantize import bake_preprocess

    reference = np.asarray(bake_preprocess(mobilenet, (127.5,) * 3, (127.5,) * 3)(images[select].astype(np.float32)))
    probs = Runner(search.chosen.model)(images[select])
    assert search.chosen.agree == int((probs.argmax(1) == reference.argmax(1)).sum())
    section = search.section()
    assert section["split"] == f"fit on {len(fit)} calibration images, chosen on {len(select)} held out"
    assert sum("(chosen)" in v for v in section.values()) == 1
    assert any(v.startswith(("kept", "dropped")) for v in section.values())
