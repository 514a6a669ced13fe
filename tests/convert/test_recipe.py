"""The quantization steps on a small real Keras MobileNetV2: equalization keeps the float function, bias
correction follows the quantizer's own rounding, and the report's fidelity numbers are computed right."""

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


@pytest.fixture(scope="module")
def calibrated(mobilenet: object) -> tuple[bytes, np.ndarray]:
    """The small model baked to pixels, calibrate-only, and real-valued pixel inputs to run it on."""
    from edgekit.convert.quantize import bake_preprocess, calibrate_only

    pixels = np.random.default_rng(1).uniform(0, 255, (16, 64, 64, 3)).astype(np.uint8)
    return calibrate_only(bake_preprocess(mobilenet, (127.5,) * 3, (127.5,) * 3), pixels[:4]), pixels


def _float_outputs(model: bytes, pixels: np.ndarray) -> np.ndarray:
    from edgekit.convert.tfl import Runner

    return Runner(model)(pixels)


def test_equalization_keeps_the_float_function_and_evens_out_channels(calibrated: tuple[bytes, np.ndarray]) -> None:
    import copy

    from edgekit.convert.equalize import equalize, find_pairs
    from edgekit.convert.quantize import _read, _write, activation_stats

    model, pixels = calibrated
    graph = _read(model)
    pairs = find_pairs(graph)
    assert len(pairs) >= 30  # expand->dw and dw->project in every block
    tensors = frozenset(t for p in pairs for t in p.tensors)
    stats = activation_stats(model, pixels, channels=tensors)[0]
    maxima = {i: s.channel_max for i, s in stats.items() if s.channel_max is not None}
    work = copy.deepcopy(graph)
    applied = equalize(work, maxima)
    assert len(applied) >= 30
    equalized = _write(work)
    after = activation_stats(equalized, pixels, channels=tensors)[0]

    def spread(m: np.ndarray) -> float:
        return float(m.max() / max(m[m > 0].min(), 1e-9))

    first = [p.tensors[0] for p in pairs if p.tensors[0] in applied]
    assert np.median([spread(after[t].channel_max) for t in first]) < np.median(  # type: ignore[arg-type]
        [spread(stats[t].channel_max) for t in first]  # type: ignore[arg-type]
    )
    for t in first:  # the predicted statistics of an equalized tensor are the measured ones
        np.testing.assert_allclose(stats[t].scaled(applied[t]).channel_max, after[t].channel_max, rtol=1e-4, atol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_allclose(_float_outputs(equalized, pixels), _float_outputs(model, pixels), atol=1e-4)


def test_bias_correction_uses_the_quantizers_own_rounding_and_moves_only_biases(
    calibrated: tuple[bytes, np.ndarray],
) -> None:
    import copy

    from edgekit.convert.biascorr import correct_biases, int8_error, weight_ops
    from edgekit.convert.equalize import DEPTHWISE_CONV_2D, opcode, weights
    from edgekit.convert.quantize import _read, activation_stats, quantize_calibrated

    model, pixels = calibrated
    graph = _read(model)
    ops = weight_ops(graph)
    assert len(ops) >= 50
    # the rounding error bias correction assumes is the one the real quantizer makes, layer by layer
    quantized = _read(quantize_calibrated(model))
    qsub = quantized.subgraphs[0]
    by_output = {qsub.tensors[int(op.outputs[0])].name: op for op in qsub.operators}
    for k in ops:
        op = graph.subgraphs[0].operators[k]
        qop = by_output[graph.subgraphs[0].tensors[int(op.outputs[0])].name]
        w = weights(graph, int(op.inputs[1]))
        qt = quantized.subgraphs[0].tensors[int(qop.inputs[1])]
        data = np.frombuffer(np.asarray(quantized.buffers[qt.buffer].data, np.uint8).tobytes(), np.int8)
        axis = 3 if opcode(graph, op) == DEPTHWISE_CONV_2D else 0
        shape = [1] * w.ndim  # type: ignore[union-attr]
        shape[axis] = -1
        dequantized = data.reshape(w.shape).astype(np.float64) * qt.quantization.scale.reshape(shape)  # type: ignore[union-attr]
        np.testing.assert_allclose(dequantized - w, int8_error(w, axis), atol=1e-6)  # type: ignore[arg-type]

    inputs = frozenset(int(graph.subgraphs[0].operators[k].inputs[0]) for k in ops)
    stats = activation_stats(model, pixels, channels=inputs)[0]
    work = copy.deepcopy(graph)
    means = {i: s.channel_mean for i, s in stats.items() if s.channel_mean is not None}
    # every operator but the baked normalisation, which reads the model input (no statistics: pixels enter at
    # scale 1) and whose single-tap kernels are exact in int8 (each channel's one weight is its own max)
    (first,) = [k for k in ops if int(graph.subgraphs[0].operators[k].inputs[0]) not in means]
    assert graph.subgraphs[0].tensors[int(graph.subgraphs[0].operators[first].outputs[0])].name.find(b"normalize") >= 0
    assert not int8_error(weights(graph, int(graph.subgraphs[0].operators[first].inputs[1])), 3).any()  # type: ignore[arg-type]
    assert correct_biases(work, means) == len(ops) - 1
    for k in ops:
        w_id = int(graph.subgraphs[0].operators[k].inputs[1])
        assert np.array_equal(weights(work, w_id), weights(graph, w_id))  # type: ignore[arg-type]
    assert any(
        not np.array_equal(weights(work, int(graph.subgraphs[0].operators[k].inputs[2])),  # type: ignore[arg-type]
                           weights(graph, int(graph.subgraphs[0].operators[k].inputs[2])))  # type: ignore[arg-type]
        for k in ops
    )  # fmt: skip


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


def test_search_is_never_worse_than_textbook_out_of_fold(mobilenet: object, photos: list) -> None:
    import cv2

    from edgekit.convert.quantize import _kl_each, _score, bake_preprocess, search_recipe, selection_split
    from edgekit.convert.tfl import Runner

    pictures = [cv2.resize(cv2.imread(str(p))[:, :, ::-1], (64, 64), interpolation=cv2.INTER_AREA) for p in photos]
    flips = [p[:, ::-1] for p in pictures]
    images = np.ascontiguousarray(np.stack(pictures + flips))
    origins = [p.name for p in photos] * 2
    one, two = selection_split(len(images), origins)
    assert len(two) >= 8 and not {origins[i] for i in one} & {origins[i] for i in two}  # a photo and its flip

    search = search_recipe(mobilenet, (127.5,) * 3, (127.5,) * 3, images, origins=origins)
    textbook = search.textbook
    assert textbook.name == "textbook" and [t.step for t in search.trials][:3] == ["percentile", "equalize", "bias"]
    assert textbook.scored == len(images) and not np.isnan(textbook.each).any()  # every image scores once
    assert search.chosen.agree >= textbook.agree and search.chosen.confident_agree >= textbook.confident_agree
    assert all(c.kl >= 0 for c in search.candidates)  # a divergence, not a clipped stand-in
    for trial in search.trials:  # each step is kept exactly when it beats the recipe kept before it
        assert trial.kept == trial.tried.beats(trial.base, textbook)
    reference = np.asarray(bake_preprocess(mobilenet, (127.5,) * 3, (127.5,) * 3)(images.astype(np.float32)))
    folds = [(textbook.models[0], two), (textbook.models[1], one)]  # fold k's build scores the other fold
    for trial in search.trials:  # a candidate stopped early would have lost had it been run on every image
        if trial.tried.stopped:
            assert trial.tried.scored < len(images)
            parts = list(zip(trial.tried.models, (two, one), strict=True))
            full = _score("full", trial.tried.steps, parts, images, reference)
            assert not full.beats(trial.base, textbook)
    kept = [t.tried for t in search.trials if t.kept]
    assert search.chosen is (kept[-1] if kept else textbook)
    # the scores are the fold models' real agreement and KL on the images they were not fitted on
    probs = np.zeros_like(reference)
    for model, idx in folds:
        probs[idx] = Runner(model)(images[idx])
    assert textbook.agree == int((probs.argmax(1) == reference.argmax(1)).sum())
    np.testing.assert_allclose(textbook.each, _kl_each(reference, probs), rtol=1e-3, atol=1e-6)
    section = search.section()
    assert section["split"].startswith(f"{len(images)} calibration images in 2 folds by picture")
    assert sum("(chosen)" in v for v in section.values()) == 1
    assert any(v.startswith(("kept", "dropped")) for v in section.values())


def test_a_step_is_kept_only_for_a_significant_paired_gain() -> None:
    from edgekit.convert.quantize import significant_gain

    rng = np.random.default_rng(5)
    base = rng.gamma(1.0, 0.01, 200)
    assert significant_gain(base, base * 0.9)  # 10 % better on every image
    noise = base * np.exp(rng.normal(0, 0.5, 200))
    assert not significant_gain(base, noise) and not significant_gain(noise, noise)  # noise, or no change
    gain = rng.normal(0, 0.002, 200)
    gain -= gain.mean()
    gain[:3] += 0.004  # a clear gain on 3 images of 200, the rest moving both ways: could be those pictures
    assert (base - gain).mean() < base.mean() and not significant_gain(base, base - gain)
    assert not significant_gain(base[:1], base[:1] * 0.5)  # one image cannot show anything


def test_statistics_of_two_image_sets_merge_into_those_of_both(calibrated: tuple[bytes, np.ndarray]) -> None:
    from edgekit.convert.quantize import activation_stats, chosen_ranges, merge_stats

    model, pixels = calibrated
    every = frozenset(activation_stats(model, pixels[:1])[0])
    whole = activation_stats(model, pixels, channels=every)[0]
    merged = merge_stats(
        activation_stats(model, pixels[:10], channels=every)[0], activation_stats(model, pixels[10:], channels=every)[0]
    )
    assert merged.keys() == whole.keys()
    for i, s in whole.items():
        assert (merged[i].size, merged[i].nonzero) == (s.size, s.nonzero)
        np.testing.assert_allclose(merged[i].channel_mean, s.channel_mean, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
        np.testing.assert_array_equal(merged[i].channel_max, s.channel_max)  # type: ignore[arg-type]
    assert chosen_ranges(merged) == chosen_ranges(whole)  # the range choice reads only what the merge keeps exactly


def test_tails_are_exact_on_channels_last_activations() -> None:
    from edgekit.convert.quantize import _top

    rng = np.random.default_rng(3)
    # (56, 56, 96) channels-last, one loud channel every 32 (a strided sample would see only those), a ReLU6 cap
    x = np.maximum(rng.normal(0, 1, (56, 56, 96)), 0) * np.where(np.arange(96) % 32 == 0, 5.0, 1.0)
    for v in (x.reshape(-1).astype(np.float32), np.minimum(x, 6).reshape(-1).astype(np.float32)):
        for k in (1, 60, 603, 5000):
            np.testing.assert_array_equal(np.sort(_top(v, k)), np.sort(v)[-k:])
            np.testing.assert_array_equal(np.sort(_top(v - 1, k, largest=False)), np.sort(v - 1)[:k])


def test_a_candidate_is_stopped_only_when_it_cannot_win(calibrated: tuple[bytes, np.ndarray]) -> None:
    from edgekit.convert.quantize import _read, _score, _write, activation_stats, quantize_calibrated, set_ranges

    model, pixels = calibrated
    stats, reference = activation_stats(model, pixels)
    good = quantize_calibrated(model)
    graph = _read(model)
    set_ranges(graph, {i: (-0.01, 0.01) for i in stats})  # every activation clipped to nothing: a sure loser
    bad = quantize_calibrated(_write(graph))
    every = np.arange(len(pixels))
    base = _score("textbook", (), [(good, every)], pixels, reference)
    stopped = _score("bad", ("percentile",), [(bad, every)], pixels, reference, (base, base), chunk=2)
    full = _score("bad", ("percentile",), [(bad, every)], pixels, reference)
    assert stopped.stopped and stopped.scored < len(pixels) and not full.beats(base, base)
    same = _score("same", (), [(good, every)], pixels, reference, (base, base), chunk=2)  # ties run to the end
    assert not same.stopped and same.scored == len(pixels) and same.kl == pytest.approx(base.kl)


def test_textbook_ranges_are_the_converters_own(calibrated: tuple[bytes, np.ndarray]) -> None:
    from edgekit.convert.quantize import _read, activation_stats, inplace_inputs, minmax_ranges

    model, pixels = calibrated  # calibrated by the converter on pixels[:4]
    graph = _read(model)
    stats = activation_stats(model, pixels[:4])[0]
    shared = inplace_inputs(graph)
    assert len(shared) >= 10  # the last convolution of every residual block, overwritten by the block's ADD
    ranges = minmax_ranges(stats, shared)
    tensors = graph.subgraphs[0].tensors
    compared = 0
    for i, (lo, hi) in ranges.items():
        q = tensors[i].quantization
        if q.min[0] <= 0:  # not the softmax output, whose range is fixed rather than calibrated
            assert (lo, hi) == pytest.approx((float(q.min[0]), float(q.max[0])), rel=1e-5, abs=1e-6), i
            compared += 1
    assert compared == len(ranges) - 1
    # without the in-place rule those tensors would get ranges narrower than the converter's
    plain = minmax_ranges(stats)
    assert all(plain[i][1] - plain[i][0] < ranges[i][1] - ranges[i][0] for i in shared)


def test_folds_never_split_neighbouring_video_frames() -> None:
    from edgekit.convert.quantize import selection_split

    # a video's frames as edgekit.convert.calibration names them (an augmented crop repeats its frame's origin),
    # beside two photos
    origins = [f"Megamind.avi#{i}" for i in range(0, 100, 5)] + ["Megamind.avi#50", "a.jpg", "b.jpg", "a.jpg"]
    one, two = selection_split(len(origins), origins)
    frames = [[int(origins[i].split("#")[1]) for i in part if "#" in origins[i]] for part in (one, two)]
    assert frames[0] and frames[1]
    early, late = sorted(frames, key=min)
    assert max(early) < min(late)  # each fold holds one contiguous half of the clip, not every other frame
    assert {origins[i] for i in one}.isdisjoint({origins[i] for i in two})
    assert sorted([*one, *two]) == list(range(len(origins)))
