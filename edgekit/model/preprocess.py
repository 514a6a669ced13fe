"""The one preprocessing function: a frame becomes a model input, the same way at calibration and on device."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from edgekit.model.manifest import Downscale, Preprocess, ResizePolicy

ColorOrder = Literal["RGB", "BGR"]
_UINT8 = np.dtype(np.uint8)


@dataclass(frozen=True)
class Geometry:
    """Which part of the source frame was used, and where it landed in the model input.

    ``crop`` is (x, y, width, height) in source pixels; ``placed`` is (x, y, width, height) in model pixels
    (the whole input except for letterbox padding).
    """

    source_size: tuple[int, int]  # (height, width)
    model_size: tuple[int, int]  # (height, width)
    crop: tuple[int, int, int, int]
    placed: tuple[int, int, int, int]

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map boxes from normalised model coordinates to source-frame pixels.

        Args:
            boxes: (N, 4) array of (ymin, xmin, ymax, xmax) in 0..1 of the model input.

        Returns:
            (N, 4) float array of (ymin, xmin, ymax, xmax) in source pixels, clipped to the frame.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        model_h, model_w = self.model_size
        cx, cy, cw, ch = self.crop
        px, py, pw, ph = self.placed
        ys = (boxes[:, [0, 2]] * model_h - py) / ph * ch + cy
        xs = (boxes[:, [1, 3]] * model_w - px) / pw * cw + cx
        src_h, src_w = self.source_size
        out = np.empty_like(boxes)
        out[:, [0, 2]] = np.clip(ys, 0, src_h)
        out[:, [1, 3]] = np.clip(xs, 0, src_w)
        return out


def plan(
    source_size: tuple[int, int],
    model_size: tuple[int, int],
    policy: ResizePolicy,
    crop_fraction: float = 1.0,
    downscale: Downscale = "area",
) -> Geometry:
    """Work out crop and placement for a frame size (a `Preparer` keeps the result for each size it meets).

    With the ``pyramid`` downscale, a crop that shrinks by 2x or more has its sides trimmed (centred, by fewer
    than ``2**n`` pixels) to multiples of ``2**n`` so that `prepare` can halve it ``n`` times exactly; the
    geometry is always the pixels actually used.

    Args:
        source_size: (height, width) of the frame.
        model_size: (height, width) of the model input.
        policy: ``stretch`` (whole frame, aspect not kept), ``center_crop`` (the largest centred region with the
            model's aspect, times ``crop_fraction``: torchvision's resize-256/crop-224 is 0.875), or
            ``letterbox`` (whole frame, aspect kept, black bars).
        crop_fraction: used by ``center_crop`` only.
        downscale: ``area``, ``pyramid`` or ``bilinear`` (see `edgekit.model.manifest.Preprocess`).
    """
    src_h, src_w = source_size
    dst_h, dst_w = model_size
    trim = downscale == "pyramid"
    if policy == "stretch":
        return _trimmed(source_size, model_size, src_w, src_h, (0, 0, dst_w, dst_h), trim)
    if policy == "center_crop":
        aspect = dst_w / dst_h
        if src_w / src_h > aspect:
            crop_h, crop_w = float(src_h), src_h * aspect
        else:
            crop_w, crop_h = float(src_w), src_w / aspect
        cw = max(1, round(crop_w * crop_fraction))
        ch = max(1, round(crop_h * crop_fraction))
        return _trimmed(source_size, model_size, cw, ch, (0, 0, dst_w, dst_h), trim)
    if policy == "letterbox":
        scale = min(dst_w / src_w, dst_h / src_h)
        pw = max(1, min(dst_w, round(src_w * scale)))
        ph = max(1, min(dst_h, round(src_h * scale)))
        placed = ((dst_w - pw) // 2, (dst_h - ph) // 2, pw, ph)
        return _trimmed(source_size, model_size, src_w, src_h, placed, trim)
    raise ValueError(f"unknown resize policy {policy!r}")


def halvings(crop_w: int, crop_h: int, placed_w: int, placed_h: int) -> int:
    """How many exact 2x2 halvings a crop takes on its way down to the placed size (0 when shrinking < 2x)."""
    n = 0
    while crop_w >= placed_w << (n + 1) and crop_h >= placed_h << (n + 1):
        n += 1
    return n


def _trimmed(
    source_size: tuple[int, int],
    model_size: tuple[int, int],
    cw: int,
    ch: int,
    placed: tuple[int, int, int, int],
    trim: bool,
) -> Geometry:
    """A geometry for a centred ``cw`` x ``ch`` crop; with ``trim``, sides cut to multiples of ``2**halvings``."""
    step = 1 << halvings(cw, ch, placed[2], placed[3]) if trim else 1
    cw, ch = cw - cw % step, ch - ch % step
    src_h, src_w = source_size
    return Geometry(source_size, model_size, ((src_w - cw) // 2, (src_h - ch) // 2, cw, ch), placed)


def prepare(
    image: np.ndarray,
    model_size: tuple[int, int],
    preprocess: Preprocess,
    color: ColorOrder = "RGB",
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, Geometry]:
    """Turn a frame into the model's uint8 RGB input: crop/resize per the manifest, fix the channel order.

    No per-pixel float math: normalisation is baked into the converted model. The channel swap runs after the
    resize, on the small image, so a BGR camera costs almost nothing extra. A frame loop keeps a `Preparer`
    instead (the same work, with the per-frame-size plan looked up once).

    Args:
        image: (H, W, 3) uint8 frame.
        model_size: (height, width) of the model input.
        preprocess: the manifest's preprocessing (policy, crop fraction and downscale are used here).
        color: channel order of ``image``.
        out: optional (height, width, 3) uint8 C-contiguous buffer to write into (e.g. the input tensor's view).

    Returns:
        The (height, width, 3) uint8 RGB image (``out`` when given) and the geometry for mapping boxes back.
    """
    if out is None:
        out = np.empty((*model_size, 3), dtype=np.uint8)
    return out, _preparer(model_size, preprocess)(image, color, out)


@lru_cache(maxsize=8)
def _preparer(model_size: tuple[int, int], preprocess: Preprocess) -> Preparer:
    return Preparer(model_size, preprocess)


_COPY, _RESIZE, _PLACE = range(3)


@dataclass(frozen=True)
class _Recipe:
    """What `Preparer` does with frames of one size: the geometry, the crop as slices, and the kind of step."""

    geometry: Geometry
    rows: slice
    cols: slice
    kind: int  # _COPY (the crop is the model size), _RESIZE (to the whole input), _PLACE (letterboxed)
    placed: tuple[slice, slice]


class Preparer:
    """`prepare` for one model size and preprocessing, for a frame loop.

    The plan for a frame size (crop, placement, which step) is worked out at the first frame of that size and
    kept: right after `invoke()` has pushed Python out of the CPU caches, working it out again (the cached
    `plan` call hashes its arguments) and the checks around it cost ~25 us a frame, several times the copy
    itself for a camera asked for the model's size.
    """

    def __init__(self, model_size: tuple[int, int], preprocess: Preprocess) -> None:
        import cv2  # both halves have OpenCV; imported here so `edgekit --help` stays light

        self._cv2 = cv2
        self.model_size = model_size
        self.preprocess = preprocess
        self._resize = {"pyramid": _pyramid, "bilinear": _bilinear}.get(preprocess.downscale, _area)
        self._recipes: dict[tuple[int, ...], _Recipe] = {}

    def __call__(self, image: np.ndarray, color: ColorOrder, out: np.ndarray) -> Geometry:
        """Crop/resize/reorder ``image`` ((H, W, 3) uint8) into ``out`` ((h, w, 3) uint8 at the model size).

        Returns:
            The geometry, for mapping boxes back to the frame.
        """
        geometry = self.resize(image, out)
        if color == "BGR":
            self._cv2.cvtColor(out, self._cv2.COLOR_BGR2RGB, dst=out)
        return geometry

    def resize(self, image: np.ndarray, out: np.ndarray) -> Geometry:
        """The crop/resize part of the call, channels left in ``image``'s order (`edgekit bench --profile`
        times it apart from the channel swap)."""
        recipe = self._recipes.get(image.shape)
        if recipe is None:
            recipe = self._recipe(image)
        if image.dtype != _UINT8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        region = image[recipe.rows, recipe.cols]
        if recipe.kind == _COPY:
            np.copyto(out, region)
        elif recipe.kind == _RESIZE:
            self._resize(self._cv2, region, out)
        else:
            out.fill(0)
            self._resize(self._cv2, region, out[recipe.placed])
        return recipe.geometry

    def _recipe(self, image: np.ndarray) -> _Recipe:
        shape = image.shape
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {shape} {image.dtype}")
        dst_h, dst_w = self.model_size
        pre = self.preprocess
        geometry = plan((shape[0], shape[1]), (dst_h, dst_w), pre.policy, pre.crop_fraction, pre.downscale)
        cx, cy, cw, ch = geometry.crop
        px, py, pw, ph = geometry.placed
        if (cw, ch) == (pw, ph) == (dst_w, dst_h):  # a camera asked for the model's size: a copy (or a crop of one)
            kind = _COPY
        elif (px, py, pw, ph) == (0, 0, dst_w, dst_h):
            kind = _RESIZE
        else:
            kind = _PLACE
        recipe = _Recipe(
            geometry, slice(cy, cy + ch), slice(cx, cx + cw), kind, (slice(py, py + ph), slice(px, px + pw))
        )
        if len(self._recipes) >= 8:  # a source whose frame size keeps changing: start over, memory stays bounded
            self._recipes.clear()
        self._recipes[shape] = recipe
        return recipe


def _area(cv2: Any, region: np.ndarray, out: np.ndarray) -> None:
    """The ``area`` downscale: each output pixel is the mean of the source area it covers, in integers.

    This is what INTER_AREA computes when shrinking, but OpenCV accumulates a fractional factor in float and
    rounds differently on aarch64 than on x86 (+-1 in up to 0.13% of the pixels of the arm64 check's frames),
    so the Pi would not feed the model the bytes it was calibrated on. Here the overlaps are integers (in units
    of 1/out of a source pixel), the sums are integers and the mean is rounded half up: the same bytes on every
    architecture, within 1 of INTER_AREA (tests/model/test_preprocess.py). An axis that grows (a frame smaller
    than the model) is then enlarged by INTER_LINEAR_EXACT, OpenCV's fixed-point bilinear, exact too.
    """
    ph, pw = out.shape[:2]
    rh, rw = region.shape[:2]
    sh, sw = min(rh, ph), min(rw, pw)
    if (sh, sw) == (rh, rw):
        _into(cv2, region, out, cv2.INTER_LINEAR_EXACT)
        return
    if (sh, sw) == (ph, pw):
        _box_mean(cv2, region, out)
        return
    shrunk = np.empty((sh, sw, region.shape[2]), np.uint8)
    _box_mean(cv2, region, shrunk)
    _into(cv2, shrunk, out, cv2.INTER_LINEAR_EXACT)


@lru_cache(maxsize=32)
def _box_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The area-average weights from ``src`` pixels down to ``dst`` (<= src), as integers.

    Output pixel i covers [i*src, (i+1)*src) and source pixel j covers [j*dst, (j+1)*dst) in units of 1/dst of
    a source pixel; the overlaps (divided by gcd(src, dst)) are the weights, and each output's sum to ``src //
    gcd``. Returns (K, dst) source indices, (K, dst, 1) weights (zero where an output has fewer than K taps) and
    that sum.
    """
    g = math.gcd(src, dst)
    lo = np.arange(dst, dtype=np.int64) * src
    first = lo // dst
    taps = int(((lo + src - 1) // dst - first).max()) + 1
    index = np.minimum(first + np.arange(taps)[:, None], src - 1)
    j = first + np.arange(taps)[:, None]
    overlap = np.minimum(lo + src, (j + 1) * dst) - np.maximum(lo, j * dst)
    weights = (np.maximum(overlap, 0) // g)[:, :, None]
    return index, weights, src // g


def _box_axis0(rows: np.ndarray, dst: int, dtype: type[np.integer[Any]]) -> tuple[np.ndarray, int]:
    """Weighted sums of ``rows`` ((n, m) integers) down to ``dst`` rows (see `_box_taps`), and their divisor."""
    index, weights, total = _box_taps(rows.shape[0], dst)
    acc = np.multiply(rows[index[0]], weights[0], dtype=dtype)
    term = np.empty_like(acc)
    for k in range(1, len(index)):
        np.multiply(rows[index[k]], weights[k], out=term, dtype=dtype)
        acc += term
    return acc, total


def _box_mean(cv2: Any, region: np.ndarray, out: np.ndarray) -> None:
    """Area-average ``region`` ((h, w, 3) uint8) into ``out`` ((oh, ow, 3), oh <= h, ow <= w) in integers."""
    (h, w, c), (oh, ow) = region.shape, out.shape[:2]
    ty, tx = h // math.gcd(h, oh), w // math.gcd(w, ow)
    # The narrowest integer types that cannot overflow (255 times the weights' sum), for speed.
    first = np.int16 if 255 * tx < 2**15 else np.int32
    second = np.int32 if 255 * ty * tx < 2**31 else np.int64
    # Each pass gathers whole rows: the columns first, as the rows of the transposed frame (cv2.transpose is a
    # fast exact copy), then, transposed back, the rows; the result is then already in (oh, ow, 3) order.
    across, _ = _box_axis0(cv2.transpose(region).reshape(w, h * c), ow, first)
    sums, _ = _box_axis0(cv2.transpose(across.reshape(ow, h, c)).reshape(h, ow * c), oh, second)
    sums += ty * tx // 2
    sums //= ty * tx
    np.copyto(out, sums.reshape(oh, ow, c), casting="unsafe")


def _bilinear(cv2: Any, region: np.ndarray, out: np.ndarray) -> None:
    """The ``bilinear`` downscale: one bilinear resize, as ``cv2.resize`` does by default, in its exact form.

    INTER_LINEAR_EXACT is fixed-point integer arithmetic, so an aarch64 Pi gets the same bytes as x86 (plain
    INTER_LINEAR rounds differently there, +-1 in about a fifth of the pixels; see `_pyramid`); it differs from
    INTER_LINEAR by at most one grey level. Measured here for a 720x528 frame (2 shared cores, noisy):
    300 px 0.27 ms INTER_LINEAR, 0.38-0.52 ms INTER_LINEAR_EXACT, 2.7-3.0 ms INTER_AREA.
    """
    _into(cv2, region, out, cv2.INTER_LINEAR_EXACT)


def _pyramid(cv2: Any, region: np.ndarray, out: np.ndarray) -> None:
    """The ``pyramid`` downscale: like ``area``, an average over each output pixel's footprint, but faster.

    One INTER_AREA call averages exactly, but at a fractional factor OpenCV runs it on a slow generic path
    (about 780 us for 462 -> 224 px on a 2 GHz core). This gets within about one grey level of it (and as close
    to Pillow's antialiased resize) for a fraction of the cost, by steps that each run on a fast path:

    1. exact 2x2 box halvings while the crop is still at least twice the output (`plan` trimmed it for this);
    2. the remaining factor r, under 2: bilinear straight to the output up to r = 1.3 (bilinear's two-pixel
       footprint still covers each output pixel's share), otherwise bilinear up to twice the output and one
       more halving (a 640x480 camera's 420 px centre crop: 280 us instead of 610 us).
    Enlarging is bilinear.

    Every step is integer arithmetic in OpenCV (INTER_AREA at a factor of exactly 2, INTER_LINEAR_EXACT's fixed
    point), so an aarch64 Pi gets the same bytes as the x86 laptop that calibrated the model; INTER_LINEAR rounds
    differently there (+-1 in about a fifth of the pixels). tests/arm64 checks it under emulation. The exact
    bilinear costs more: in one A/B here (a loaded machine) 141 -> 210 us for a 720x528 frame and 359 -> 577 us
    for 640x480 (the figures above are from before it).
    """
    ph, pw = out.shape[:2]
    for _ in range(halvings(region.shape[1], region.shape[0], pw, ph)):
        region = cv2.resize(region, (region.shape[1] // 2, region.shape[0] // 2), interpolation=cv2.INTER_AREA)
    rh, rw = region.shape[:2]
    if (rh, rw) == (ph, pw):
        np.copyto(out, region)
        return
    if rw > 1.3 * pw or rh > 1.3 * ph:
        region = cv2.resize(region, (2 * pw, 2 * ph), interpolation=cv2.INTER_LINEAR_EXACT)
        _into(cv2, region, out, cv2.INTER_AREA)  # an exact halving
    else:
        _into(cv2, region, out, cv2.INTER_LINEAR_EXACT)


def _into(cv2: Any, region: np.ndarray, out: np.ndarray, interpolation: int) -> None:
    """``cv2.resize`` of ``region`` to the size of ``out``, written into it."""
    # OpenCV writes into ``dst`` only when it is one contiguous block (a letterbox's inner region is not).
    dst = out if out.flags.c_contiguous else None
    result = cv2.resize(region, (out.shape[1], out.shape[0]), dst=dst, interpolation=interpolation)
    if result is not out:
        np.copyto(out, result)
