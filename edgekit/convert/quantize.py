"""Full-int8 quantization: the textbook recipe (baseline) and edgekit's per-model choice of steps on top of it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from edgekit.convert.tfl import import_tf, interpreter, quiet

logger = logging.getLogger(__name__)

IoType = Literal["uint8", "int8"]
STEPS = frozenset({"equalize", "bias", "percentile"})
STEP_NAMES = {
    "equalize": "cross-layer equalization",
    "bias": "bias correction",
    "percentile": "per-tensor range choice (least quantization MSE)",
}
VECTOR_SIZE = 4096  # activations with at most this many values per image are not clipped
# Candidate clips per feature map (fraction of values clipped at each end; 0 is min/max). Not tuned: a grid
# spanning "nothing" to "one value in two thousand"; which one a tensor gets is decided by its own statistics.
CLIP_TAILS = (0.0, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4)
# The calibration pictures are split in two folds (by picture); each fold's candidate is fitted on the other
# fold, so every calibration image scores every candidate once, on a recipe it did not help fit.
FOLDS = 2
# A step is kept only when its paired per-image KL gain over the recipe kept so far is significant: one-sided
# 5 % (normal approximation of the paired t-test). Not tuned: the textbook convention for "not noise".
Z_GAIN = 1.645
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


def _read(model: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(model))


def _write(model: Any) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _is_constant(model: Any, tensor: Any) -> bool:
    buf = model.buffers[tensor.buffer]
    return buf is not None and buf.data is not None and len(buf.data) > 0


def set_ranges(model: Any, ranges: dict[int, tuple[float, float]]) -> None:
    """Replace the calibrated min/max of the given tensors of ``model`` (a flatbuffer object) in place."""
    sub = model.subgraphs[0]
    for i, (a, b) in ranges.items():
        q = sub.tensors[i].quantization
        q.min = np.array([a], dtype=np.float32)
        q.max = np.array([b], dtype=np.float32)


def _stats_tensors(model: Any) -> list[int]:
    sub = model.subgraphs[0]
    inputs = {int(i) for i in sub.inputs}
    return [
        i
        for i, t in enumerate(sub.tensors)
        if t.quantization is not None
        and t.quantization.min is not None
        and len(t.quantization.min) == 1
        and not _is_constant(model, t)
        and i not in inputs
    ]


@dataclass(frozen=True)
class TensorStats:
    """What one calibration pass learnt about one activation tensor."""

    low: np.ndarray  # the most negative values, sorted ascending (each image's 4 * max_tail share)
    high: np.ndarray  # the most positive values, sorted ascending
    size: int  # values seen over all images
    nonzero: int  # of which non-zero (zeros are exact in int8, they add no rounding noise)
    per_image: int
    channel_min: np.ndarray | None = None  # per channel (last axis), for the tensors equalization/bias need
    channel_max: np.ndarray | None = None
    channel_mean: np.ndarray | None = None

    def scaled(self, s: np.ndarray) -> TensorStats:
        """The statistics of this tensor with channel c multiplied by ``s_c`` (s > 0): exact extremes and means.

        The stored tails are per tensor, so they cannot be rescaled per channel: the result keeps only the
        tensor's new min and max (a range choice on it falls back to min/max).
        """
        assert self.channel_min is not None and self.channel_max is not None and self.channel_mean is not None
        lo, hi = self.channel_min * s, self.channel_max * s
        return TensorStats(
            np.array([lo.min()]), np.array([hi.max()]), self.size, self.nonzero, self.per_image, lo, hi,
            self.channel_mean * s,
        )  # fmt: skip


def activation_stats(
    calibrated: bytes,
    images: np.ndarray,
    max_tail: float = max(CLIP_TAILS),
    progress: Progress | None = None,
    channels: frozenset[int] = frozenset(),
) -> tuple[dict[int, TensorStats], np.ndarray]:
    """One interpreter pass over ``images`` keeping, per activation, its exact extreme values and counts.

    Each image contributes its ``4 * max_tail`` most negative and most positive values per tensor (exactly,
    see `_top`), so any quantile up to ``max_tail`` over all images is exact unless a single image
    holds more than four times its share of the extremes. Every candidate recipe is then built from these
    statistics alone, without another pass.

    Args:
        calibrated: a calibrate-only model (float, with min/max annotations).
        images: (N, H, W, 3) uint8 inputs in the model's input units.
        max_tail: the largest fraction of values any candidate range will clip at each end.
        progress: called once per image.
        channels: tensors whose per-channel (last axis) min, max and mean are also kept.

    Returns:
        (tensor index -> statistics, the float model's outputs (N, classes): the reference a candidate is scored
        against, without a Keras pass).
    """
    interp = interpreter(calibrated, preserve=True)
    wanted = _stats_tensors(_read(calibrated))
    lows: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    highs: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    sizes = dict.fromkeys(wanted, 0)
    nonzero = dict.fromkeys(wanted, 0)
    cmin: dict[int, np.ndarray] = {}
    cmax: dict[int, np.ndarray] = {}
    csum: dict[int, np.ndarray] = {}
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for image in images:
        interp.set_tensor(inp["index"], image[None].astype(np.float32))
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).reshape(-1).copy())
        for i in wanted:
            try:
                t = interp.get_tensor(i)
            except ValueError:  # freed by the interpreter (not an activation after all)
                continue
            v = t.reshape(-1)
            k = min(v.size - 1, max(1, int(np.ceil(4 * max_tail * v.size))))
            low = v.min()
            # after a ReLU: no negative tail to keep (a range never goes above 0 at the bottom)
            lows[i].append(np.array([low]) if low >= 0 else _top(v, k, largest=False))
            highs[i].append(_top(v, k))
            sizes[i] += v.size
            nonzero[i] += int(np.count_nonzero(v))
            if i in channels:
                per = t.reshape(-1, t.shape[-1])
                # a float32 sum per image (its rounding is far below what bias correction can use), float64 across
                lo, hi, total = per.min(axis=0), per.max(axis=0), per.sum(axis=0).astype(np.float64) / len(per)
                cmin[i] = np.minimum(cmin[i], lo) if i in cmin else lo
                cmax[i] = np.maximum(cmax[i], hi) if i in cmax else hi
                csum[i] = csum[i] + total if i in csum else total
        if progress is not None:
            progress(1)
    stats = {
        i: TensorStats(
            np.sort(np.concatenate(lows[i])),
            np.sort(np.concatenate(highs[i])),
            sizes[i],
            nonzero[i],
            sizes[i] // len(images),
            cmin.get(i),
            cmax.get(i),
            csum[i] / len(images) if i in csum else None,
        )
        for i in wanted
        if sizes[i]
    }
    return stats, np.stack(outputs) if outputs else np.zeros((0, 0), np.float32)


def _top(v: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """The ``k`` largest (or smallest) values of ``v``, in any order, exactly, without partitioning all of ``v``.

    A threshold read off a 1-in-31 sample keeps about ``3k`` candidates (``12k`` on a second try); only when
    both keep fewer than ``k`` is the whole vector partitioned. (31 is prime: a stride of 32 would sample the
    same few channels of a channels-last tensor.) When many values sit at one extreme (a ReLU6 cap), ``k``
    copies of it are the answer. Either way the result is the true top ``k``.
    """
    if v.size >= 31 * 64 and 12 * k < v.size:
        sample = v[::31]
        for share in (3, 12):
            r = min(sample.size - 1, (share * k) // 31)
            if largest:
                kept = v[v >= np.partition(sample, sample.size - 1 - r)[sample.size - 1 - r]]
            else:
                kept = v[v <= np.partition(sample, r)[r]]
            if kept.size < k:
                continue
            if kept.size > 8 * k:
                end = kept.max() if largest else kept.min()
                if np.count_nonzero(kept == end) >= k:
                    return np.full(k, end, dtype=v.dtype)
            return np.partition(kept, kept.size - k)[kept.size - k :] if largest else np.partition(kept, k - 1)[:k]
    return np.partition(v, v.size - k)[v.size - k :].copy() if largest else np.partition(v, k - 1)[:k].copy()


def merge_stats(a: dict[int, TensorStats], b: dict[int, TensorStats]) -> dict[int, TensorStats]:
    """The statistics of two disjoint image sets together (tails, counts and channel extremes/means)."""

    def both(x: np.ndarray | None, y: np.ndarray | None, how: Callable[..., np.ndarray]) -> np.ndarray | None:
        return None if x is None or y is None else how(x, y)

    out = {}
    for i, s in a.items():
        t = b.get(i)
        if t is None:
            out[i] = s
            continue
        n_a, n_b = s.size / max(1, s.per_image), t.size / max(1, t.per_image)
        out[i] = TensorStats(
            np.sort(np.concatenate([s.low, t.low])),
            np.sort(np.concatenate([s.high, t.high])),
            s.size + t.size,
            s.nonzero + t.nonzero,
            s.per_image,
            both(s.channel_min, t.channel_min, np.minimum),
            both(s.channel_max, t.channel_max, np.maximum),
            None
            if s.channel_mean is None or t.channel_mean is None
            else (s.channel_mean * n_a + t.channel_mean * n_b) / (n_a + n_b),
        )
    return out


def _clip_at(stats: TensorStats, tail: float) -> tuple[float, float]:
    rank = max(1, round(tail * stats.size))
    lo = float(stats.low[min(rank, stats.low.size) - 1])
    hi = float(stats.high[max(0, stats.high.size - rank)])
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, max(hi, lo + 1e-6)


def quantization_mse(stats: TensorStats, lo: float, hi: float) -> float:
    """Mean squared int8 error of a tensor quantized to ``[lo, hi]``: clipping error plus rounding noise.

    The clipping part is exact from the stored extremes; the rounding part is the uniform-noise model
    ``step^2 / 12`` for every non-zero value (zero is on the grid).
    """
    low, high = stats.low[stats.low < lo], stats.high[stats.high > hi]
    clipped = float(((low - lo) ** 2).sum() + ((high - hi) ** 2).sum())
    step = (hi - lo) / 255.0
    return (clipped + (stats.nonzero - low.size - high.size) * step * step / 12.0) / stats.size


def chosen_ranges(
    stats: dict[int, TensorStats], tails: tuple[float, ...] = CLIP_TAILS
) -> dict[int, tuple[float, float]]:
    """Per tensor, the candidate clip (min/max or a tail quantile) with the least quantization MSE.

    Vectors (pooled features, logits) keep min/max: every value there is signal, and clipping the logits would
    saturate exactly the confident predictions.
    """
    ranges = {}
    for i, s in stats.items():
        options = [_clip_at(s, t) for t in (tails if s.per_image > VECTOR_SIZE else (0.0,))]
        ranges[i] = min(options, key=lambda r: quantization_mse(s, *r))
    return ranges


def minmax_ranges(
    stats: dict[int, TensorStats], shared: dict[int, int] | None = None
) -> dict[int, tuple[float, float]]:
    """The textbook ranges, exactly as the converter's calibration computes them, from the same statistics.

    That is min and max over the calibration images, except for a tensor an elementwise op overwrote in place
    (``shared``: tensor -> the op's output, see `inplace_inputs`): the converter's calibration reads it after
    the op ran, so its range is the union of its own and the op's output's (on MobileNetV2, the last
    convolution of every residual block gets the range of the block's sum).
    """
    ranges = chosen_ranges(stats, (0.0,))
    for i, out in (shared or {}).items():
        if i in ranges and out in ranges:
            ranges[i] = (min(ranges[i][0], ranges[out][0]), max(ranges[i][1], ranges[out][1]))
    return ranges


INPLACE_OPS = frozenset({"ADD", "MUL"})


def inplace_inputs(model: Any) -> dict[int, int]:
    """Tensors that TFLite's elementwise ADD / MUL overwrite with their output (input -> output tensor).

    An input can share the output's memory when that op is its only reader, it has the output's shape and it
    is not a graph output; of two such inputs the first is shared.
    """
    from edgekit.convert.equalize import opcode
    from edgekit.model.tflite import BUILTIN_OPS

    sub = model.subgraphs[0]
    readers: dict[int, int] = {}
    for op in sub.operators:
        for i in op.inputs:
            readers[int(i)] = readers.get(int(i), 0) + 1
    outputs = {int(i) for i in sub.outputs}
    shared = {}
    for op in sub.operators:
        builtin = opcode(model, op)
        if builtin >= len(BUILTIN_OPS) or BUILTIN_OPS[builtin] not in INPLACE_OPS or len(op.outputs) != 1:
            continue
        out = int(op.outputs[0])
        for i in (int(x) for x in op.inputs):
            t = sub.tensors[i]
            same_shape = t.shape is not None and list(t.shape) == list(sub.tensors[out].shape)
            if readers.get(i) == 1 and i not in outputs and not _is_constant(model, t) and same_shape:
                shared[i] = out
                break
    return shared


def selection_split(
    count: int, origins: Sequence[str] | None = None, fraction: float = 1 / FOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint parts of the calibration images (by default the search's two folds).

    Images that share an origin (a photo and its augmented crops) stay on one side, so the second part
    judges on pictures the ranges were not fitted to. Frames of one video (origins ``clip.mp4#123``, as
    `edgekit.convert.calibration` names them) are near-duplicates of their neighbours: each video counts as
    two pictures, its earlier and its later half, which fall in different parts. Deterministic: every
    ``1 / fraction``-th picture in sorted order goes to the second part.
    """
    names = list(origins) if origins is not None and len(origins) == count else [str(i) for i in range(count)]
    names = _video_halves(names)
    distinct = sorted(set(names))
    every = max(2, round(1 / fraction))
    held = {o for k, o in enumerate(distinct) if k % every == every // 2}
    if not held or len(held) == len(distinct):
        held = {distinct[len(distinct) // 2]} if len(distinct) > 1 else set()
    select = np.array([i for i, o in enumerate(names) if o in held], dtype=int)
    fit = np.array([i for i, o in enumerate(names) if o not in held], dtype=int)
    return fit, select


def _video_halves(origins: list[str]) -> list[str]:
    """``origins`` with each video frame (``clip.mp4#123``) renamed to its video's earlier or later half."""
    frames: dict[str, list[int]] = {}
    parsed = [re.fullmatch(r"(.+)#(\d+)", o) for o in origins]
    for m in parsed:
        if m:
            frames.setdefault(m[1], []).append(int(m[2]))
    cut = {video: sorted(set(index))[len(set(index)) // 2] for video, index in frames.items()}
    return [
        o if m is None else f"{m[1]}#{'later' if int(m[2]) >= cut[m[1]] else 'earlier'}"
        for o, m in zip(origins, parsed, strict=True)
    ]


@dataclass(frozen=True)
class Candidate:
    """One recipe tried, scored out of fold on the calibration images."""

    name: str
    steps: tuple[str, ...]  # of STEPS ("percentile" meaning the per-tensor range choice)
    agree: int  # top-1 agreement with the float model, images
    confident: int  # float top-1 probability above 0.5, images
    confident_agree: int
    mean_abs_dp: float
    kl: float  # mean KL divergence of the int8 outputs from the float ones (nats): the fine-grained score
    each: np.ndarray = field(repr=False)  # KL per calibration image (NaN where not scored)
    models: tuple[bytes, ...] = field(repr=False)  # one per fold, fitted without the images it scores
    scored: int = 0  # images scored; fewer than all when it was stopped as certain to lose
    stopped: str = ""  # why it was stopped early

    def beats(self, other: Candidate, floor: Candidate) -> bool:
        """Significantly closer to the float model than ``other``, and not below ``floor``'s agreement counts.

        "Significantly": the mean of the paired per-image KL gains over ``other`` is more than ``Z_GAIN``
        standard errors above zero (one-sided 5 %). A lower mean alone is not enough: on a model whose
        quantization error is already small, a gain of a few per cent of the KL is within what the choice of
        pictures moves, and taking it traded one model's noise for a real loss on new pictures (issue 16's
        Keras V3 models). The counts are the guarantee. A candidate stopped early was certain to fail one of
        these on the images it was not run on.
        """
        return (
            not self.stopped
            and significant_gain(other.each, self.each)
            and self.agree >= floor.agree
            and self.confident_agree >= floor.confident_agree
        )


def significant_gain(base: np.ndarray, tried: np.ndarray, z: float = Z_GAIN) -> bool:
    """Whether per-image KL values ``tried`` are lower than ``base`` beyond noise (paired, one-sided).

    The mean gain ``base - tried`` must exceed ``z`` standard errors; with no spread at all, any gain counts.
    """
    return gain_z(base, tried) > z


def gain_z(base: np.ndarray, tried: np.ndarray) -> float:
    """The mean paired gain ``base - tried`` in standard errors (inf for a gain with no spread; 0 when fewer
    than two images, or an unscored one, leave nothing to judge)."""
    d = np.asarray(base, np.float64) - np.asarray(tried, np.float64)
    if d.size < 2 or np.isnan(d).any():
        return 0.0
    mean, error = float(d.mean()), float(d.std(ddof=1)) / np.sqrt(d.size)
    if error == 0:
        return float("inf") if mean > 0 else 0.0
    return mean / error


@dataclass(frozen=True)
class Trial:
    """One step tried on top of the recipe kept so far."""

    step: str
    tried: Candidate
    base: Candidate
    kept: bool


@dataclass(frozen=True)
class Search:
    """The per-model recipe choice: the textbook candidate, each step's trial, and the recipe kept."""

    chosen: Candidate
    textbook: Candidate
    trials: tuple[Trial, ...]
    images: int  # calibration images, each scored once per candidate (by the fold it was not fitted on)
    folds: int
    model: bytes = field(repr=False)  # the chosen recipe rebuilt from every calibration image: the int8 model

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return (self.textbook, *(t.tried for t in self.trials))

    def gains(self) -> dict[str, str]:
        """Per step tried: kept or dropped, and what it changed out of fold over the recipe before it."""
        out = {}
        for t in self.trials:
            label = "all steps together" if t.step == "together" else STEP_NAMES[t.step]
            if t.tried.stopped:
                out[f"step: {label}"] = f"dropped: {t.tried.stopped} after {t.tried.scored} of {self.images}"
                continue
            z = gain_z(t.base.each, t.tried.each)
            out[f"step: {label}"] = (
                f"{'kept' if t.kept else 'dropped'}: {_signed(t.tried.agree - t.base.agree)} top-1, "
                f"{_signed(t.tried.confident_agree - t.base.confident_agree)} confident "
                f"of {self.images}, KL {t.base.kl:.5f} -> {t.tried.kl:.5f} (gain {z:.1f} standard errors, "
                f"{Z_GAIN:g} needed; over {t.base.name})"
            )
        return out

    def steps_text(self) -> list[str]:
        """The recipe as the report lists it."""
        c, n = self.chosen, self.images
        if c is self.textbook:
            return [f"textbook min/max calibration (no step beat it, out of fold, on {n} calibration images)"]
        names = [STEP_NAMES[s] for s in STEP_NAMES if s in c.steps]
        if "percentile" not in c.steps:
            names.append("min/max activation ranges")
        return [*names, "exact uint8 input"]

    def section(self) -> dict[str, str]:
        """The report section: the folds, each candidate's out-of-fold score, each step's gain."""
        rows = {
            "split": f"{self.images} calibration images in {self.folds} folds by picture; each candidate is "
            "fitted on one fold and scored on the other, so every image scores it once"
        }
        for c in self.candidates:
            mark = " (chosen)" if c is self.chosen else ""
            seen = f"{c.scored} of {self.images}" if c.stopped else str(self.images)
            rows[f"candidate: {c.name}"] = (
                f"top-1 {c.agree}/{seen}, confident {c.confident_agree}/{c.confident}, "
                f"KL {c.kl:.5f}, mean |dp| {c.mean_abs_dp:.5f}{mark}"
                + (f" (stopped: {c.stopped}, it cannot win)" if c.stopped else "")
            )
        rows.update(self.gains())
        return rows


def _signed(n: int) -> str:
    return f"{n:+d}"


def _score(
    name: str,
    steps: tuple[str, ...],
    parts: Sequence[tuple[bytes, np.ndarray]],
    images: np.ndarray,
    reference: np.ndarray,
    against: tuple[Candidate, Candidate] | None = None,
    order: np.ndarray | None = None,
    chunk: int = 8,
) -> Candidate:
    """Score a candidate: each ``(model, indices)`` part runs ``model`` on ``images[indices]``.

    With ``against=(base, floor)`` it stops once it cannot beat them. A candidate must gain significantly on
    ``base``'s per-image KL (a positive mean gain at least) and keep ``floor``'s agreement counts. Each image's
    KL is >= 0 and each disagreement is final, so once the KL summed so far exceeds ``base``'s total, or the
    disagreements exceed ``floor``'s, the remaining images cannot change the verdict: stopping there gives the
    same choice as scoring every image, in less time. ``order`` runs the images the textbook found hardest first,
    where a losing candidate shows it soonest.
    """
    from edgekit.convert.tfl import Runner

    n = len(images)
    order = np.arange(n) if order is None else order
    owner = np.full(n, -1)
    for k, (_, idx) in enumerate(parts):
        owner[idx] = k
    runners = [Runner(model) for model, _ in parts]
    confident = reference.max(axis=1) > 0.5
    probs = np.zeros(reference.shape, np.float32)
    each = np.full(n, np.nan)
    done: list[np.ndarray] = []
    stopped = ""
    for start in range(0, n, chunk):
        idx = order[start : start + chunk]
        for k, runner in enumerate(runners):
            mine = idx[owner[idx] == k]
            if len(mine):
                probs[mine] = runner(images[mine])
        each[idx] = _kl_each(reference[idx], probs[idx])
        done.append(idx)
        if against is None or start + chunk >= n:
            continue
        base, floor = against
        seen = np.concatenate(done)
        wrong = probs[seen].argmax(axis=1) != reference[seen].argmax(axis=1)
        if wrong.sum() > n - floor.agree:
            stopped = f"more disagreements than {floor.name}"
        elif (wrong & confident[seen]).sum() > floor.confident - floor.confident_agree:
            stopped = f"more confident disagreements than {floor.name}"
        elif each[seen].sum() > base.kl * n * (1 + 1e-9):
            stopped = f"KL already above {base.name}'s"
        if stopped:
            break
    seen = np.concatenate(done)
    ref, got = reference[seen], probs[seen]
    same = got.argmax(axis=1) == ref.argmax(axis=1)
    conf = confident[seen]
    return Candidate(
        name,
        steps,
        int(same.sum()),
        int(conf.sum()),
        int(same[conf].sum()),
        float(np.abs(got - ref).mean()),
        float(each[seen].mean()),
        each,
        tuple(model for model, _ in parts),
        len(seen),
        stopped,
    )


def _kl_each(reference: np.ndarray, probs: np.ndarray) -> np.ndarray:
    # int8 softmax outputs hit exact zeros: a small floor (then renormalised) keeps the log finite
    p = np.clip(reference, 1e-12, 1.0)
    q = np.clip(probs, 1e-6, 1.0)
    q = q / q.sum(axis=1, keepdims=True)
    return np.sum(p * (np.log(p) - np.log(q)), axis=1)


ORDER = ("percentile", "equalize", "bias")  # each step is tried on top of the ones kept before it


def search_recipe(
    model: Any,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    images: np.ndarray,
    io: IoType = "uint8",
    progress: Progress | None = None,
    steps: frozenset[str] = STEPS,
    origins: Sequence[str] | None = None,
) -> Search:
    """Choose this model's recipe by cross-validation on its calibration images; the textbook recipe competes.

    The images are split (by origin) into two folds. One converter call and one interpreter pass per fold
    collect every activation's statistics; every candidate is then built from them by editing the calibrated
    graph (ranges, equalized weights, corrected biases) and quantizing it, once per fold, with no further
    calibration. Each fold's build is scored on the other fold, with the device's kernels (see
    ``tfl.interpreter``), so every calibration image scores every candidate once on a recipe it did not fit.
    The first candidate is the textbook recipe (min/max, which is what the plain converter computes). Then, in
    ``ORDER``, each step of ``steps`` is tried on top of the recipe kept so far and kept only if its per-image
    KL divergence from the float model improves significantly on the recipe kept so far (``Candidate.beats``)
    and it agrees with the float model on at least as many images as the textbook recipe, overall and where
    the float model is confident. So the chosen recipe is never worse than the textbook one on the calibration
    pictures, scored out of fold, by construction. Once chosen, the recipe is rebuilt from all images.

    Args:
        model: float Keras classifier taking normalised input (not modified).
        mean: per-channel mean, pixel units.
        std: per-channel std, pixel units.
        images: (N, H, W, 3) uint8 calibration images.
        io: integer type of the model's input and output.
        progress: called once per calibration image (first fold, then second).
        steps: which of ``STEPS`` may be tried.
        origins: source of each image (augmented crops share their photo's), to split by picture.

    Returns:
        The search; ``search.model`` is the int8 model (``candidate.models`` the per-fold builds it scored).
    """
    import copy

    from edgekit.convert.biascorr import correct_biases, weight_ops
    from edgekit.convert.equalize import equalize, find_pairs

    one, two = selection_split(len(images), origins)
    if not len(two):  # a single source picture: split images, not pictures
        one, two = selection_split(len(images))
    folds = (one, two)
    baked = bake_preprocess(model, mean, std)
    # The converter's own min/max are replaced below, so a few images are enough for its calibration pass.
    calibrated = calibrate_only(baked, images[one][:: max(1, len(one) // 8)])
    graph = _read(calibrated)
    sub = graph.subgraphs[0]
    pairs = find_pairs(graph) if "equalize" in steps else []
    channels = {t for p in pairs for t in p.tensors}
    if "bias" in steps:
        channels |= {int(sub.operators[k].inputs[0]) for k in weight_ops(graph)}
    fold_stats = []
    reference = np.zeros((0, 0), np.float32)
    for k, idx in enumerate(folds):
        # each pass also gives the float outputs its fold's images are scored against
        stats, outputs = activation_stats(calibrated, images[idx], progress=progress, channels=frozenset(channels))
        fold_stats.append(stats)
        if not k:
            reference = np.zeros((len(images), outputs.shape[1]), np.float32)
        reference[idx] = outputs
    inputs = [int(i) for i in sub.inputs]
    shared = inplace_inputs(graph)

    def quantized(kept: tuple[str, ...], stats: dict[int, TensorStats], pixels: np.ndarray) -> bytes:
        work, current = copy.deepcopy(graph), stats
        if "equalize" in kept:
            maxima = {i: s.channel_max for i, s in stats.items() if s.channel_max is not None}
            applied = equalize(work, maxima)
            current = {i: s.scaled(applied[i]) if i in applied else s for i, s in stats.items()}
        if "bias" in kept:
            correct_biases(work, {i: s.channel_mean for i, s in current.items() if s.channel_mean is not None})
        ranges = chosen_ranges(current) if "percentile" in kept else minmax_ranges(current, shared)
        for i in inputs:
            # textbook: the pixels' min/max as the converter sees them; else exact 0..255 (uint8 in at scale 1)
            ranges[i] = (0.0, 255.0) if kept else (float(pixels.min()), float(pixels.max()))
        set_ranges(work, ranges)
        return quantize_calibrated(_write(work), io)

    def parts(kept: tuple[str, ...]) -> list[tuple[bytes, np.ndarray]]:
        # fold k's build scores the other fold
        return [(quantized(kept, fold_stats[k], images[folds[k]]), folds[1 - k]) for k in range(FOLDS)]

    textbook = _score("textbook", (), parts(()), images, reference)
    hardest = np.argsort(-textbook.each, kind="stable")
    best = textbook

    def build(kept: tuple[str, ...]) -> Candidate:
        name = " + ".join(STEP_NAMES[s] for s in kept)
        return _score(name, kept, parts(kept), images, reference, (best, textbook), hardest)

    trials = []
    for step in ORDER:
        if step not in steps or (step == "equalize" and not pairs):
            continue
        tried = build((*best.steps, step))
        keep = tried.beats(best, textbook)
        trials.append(Trial(step, tried, best, keep))
        best = tried if keep else best
    together = tuple(s for s in ORDER if any(t.step == s for t in trials))
    if len(together) > 1 and all(t.tried.steps != together for t in trials):
        # Steps interact (equalization changes which ranges fit, bias correction what equalization leaves):
        # one that did not help alone may help with the others, so all of them together is one more candidate.
        tried = build(together)
        keep = tried.beats(best, textbook)
        trials.append(Trial("together", tried, best, keep))
        best = tried if keep else best
    logger.info("recipe chosen out of fold on %d calibration images: %s", len(images), best.name)
    # The recipe is chosen; its final ranges and weight statistics use every calibration image.
    both = merge_stats(fold_stats[0], fold_stats[1])
    return Search(best, textbook, tuple(trials), len(images), FOLDS, quantized(best.steps, both, images))


def quantize_classifier(
    model: Any,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    images: np.ndarray,
    io: IoType = "uint8",
    recipe: str = "edgekit",
    progress: Progress | None = None,
    steps: frozenset[str] = STEPS,
    origins: Sequence[str] | None = None,
) -> tuple[bytes, list[str]]:
    """Full-int8 TFLite of a float classifier, with its preprocessing baked in.

    The ``edgekit`` recipe is chosen per model by ``search_recipe``: starting from the textbook recipe, a
    per-tensor range choice (least quantization MSE over candidate clips), cross-layer equalization and bias
    correction of the int8 weight rounding are each kept only when they help this model significantly on
    calibration images it was not fitted on (two folds); every non-textbook recipe pins the input range to
    0..255 (uint8 pixels enter at scale 1, zero point 0).

    Args:
        model: float Keras classifier taking normalised input (not modified).
        mean: per-channel mean, pixel units.
        std: per-channel std, pixel units.
        images: (N, H, W, 3) uint8 calibration images.
        io: integer type of the model's input and output.
        recipe: ``edgekit`` or ``textbook`` (plain TFLiteConverter, the baseline).
        progress: called once per calibration image processed in the activation pass.
        steps: which of ``STEPS`` may be tried (all by default).
        origins: source of each image, so that the two folds never share a picture.

    Returns:
        (int8 model bytes, names of the steps applied). ``search_recipe`` gives the full search.
    """
    if recipe == "textbook":
        baked = bake_preprocess(model, mean, std)
        return textbook_int8(baked, images, io, progress), ["textbook min/max calibration"]
    search = search_recipe(model, mean, std, images, io, progress, steps, origins)
    return search.model, search.steps_text()
