"""``edgekit sweep build``: a grid of MobileNet variants converted to full int8 for timing, in one bundle folder."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.errors import InputError
from edgekit.model.sweep import (
    ARCHS,
    BUNDLE_FORMAT,
    BUNDLE_NAME,
    VERSION,
    WEIGHTS_NOTE,
    variant_name,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

DEFAULT_ARCHS = ("mobilenet_v2",)
DEFAULT_ALPHAS = (0.35, 0.5, 0.75, 1.0)
DEFAULT_SIZES = (96, 128, 160)
CALIB_IMAGES = 8  # random images only set activation ranges; latency does not depend on them


@dataclass(frozen=True)
class Grid:
    """The variants to build: every arch x alpha x input size."""

    archs: tuple[str, ...] = DEFAULT_ARCHS
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    seed: int = 0

    def check(self) -> None:
        """Raises InputError on an unknown arch, a width outside (0, 2] or a size outside 32..512."""
        for a in self.archs:
            if a not in ARCHS:
                raise InputError(f"--arch {a!r}: choose one of {', '.join(ARCHS)}")
        for w in self.alphas:
            if not 0 < w <= 2:
                raise InputError(f"--alpha {w:g}: a width multiplier must be in (0, 2], e.g. 0.35, 0.5, 0.75, 1.0")
        for s in self.sizes:
            if not 32 <= s <= 512:
                raise InputError(f"--size {s}: the input size must be 32..512 pixels (Keras' MobileNets need >= 32)")

    def variants(self) -> list[tuple[str, float, int]]:
        return [(a, w, s) for a in self.archs for w in self.alphas for s in self.sizes]


def _build_one(arch: str, alpha: float, size: int, seed: int, folder: Path) -> dict[str, Any]:
    import keras

    from edgekit.convert.edgetpu import compile_for_edgetpu, find_compiler
    from edgekit.convert.quantize import bake_preprocess, textbook_int8
    from edgekit.convert.zoo.keras_apps import build_keras_application, keras_preprocessing
    from edgekit.convert.zoo.macs import count_macs
    from edgekit.model.edgetpu import preflight

    name = variant_name(arch, alpha, size)
    keras.utils.set_random_seed(seed)
    model = build_keras_application(arch, alpha, size, weights=None)
    params, macs = count_macs(model)
    _, pre = keras_preprocessing(arch)
    pixels = bake_preprocess(model, pre.mean, pre.std)
    images = np.random.default_rng(seed).integers(0, 256, (CALIB_IMAGES, size, size, 3), dtype=np.uint8)
    tflite = folder / f"{name}.tflite"
    tflite.write_bytes(textbook_int8(pixels, images, io="uint8"))
    keras.backend.clear_session()
    pf = preflight(tflite)
    entry: dict[str, Any] = {
        "name": name,
        "arch": arch,
        "alpha": alpha,
        "input_size": size,
        "params": params,
        "macs": macs,
        "model": tflite.name,
        "size_bytes": tflite.stat().st_size,
        "edgetpu_model": None,
        "preflight": {k: pf.to_dict()[k] for k in ("compiles", "full_tpu", "ops_total", "ops_mapped", "ops_cpu")},
        "preflight_summary": pf.summary().splitlines()[0],
    }
    if find_compiler() is not None:
        result = compile_for_edgetpu(tflite, folder)
        entry["edgetpu_compile"] = {"status": result.status, "message": result.message}
        if result.compiled and result.model is not None:
            entry["edgetpu_model"] = result.model.name
    return entry


def build_bundle(
    grid: Grid, out: str | Path, progress: Callable[[str, int], Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Convert every variant of ``grid`` to full-int8 TFLite (uint8 I/O) with seeded random weights.

    Args:
        grid: the variants.
        out: the bundle folder; written under a temporary name and renamed into place (an older bundle there
            is replaced; any other existing folder is refused).
        progress: optional ``(label, total) -> context manager yielding tick(n)`` (the CLI's progress bars).

    Returns:
        The bundle folder and its ``sweep.json`` content.

    Raises:
        InputError: bad grid, or ``out`` is something other than a bundle.
    """
    grid.check()
    out = Path(out)
    if out.exists() and not (out / BUNDLE_NAME).is_file():
        raise InputError(f"--out {out}: exists and is not a sweep bundle; give a new folder")
    from edgekit.convert.edgetpu import INSTALL_HINT, find_compiler

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        variants = []
        todo = grid.variants()
        bar = progress("building variants", len(todo)) if progress else contextlib.nullcontext(lambda _n: None)
        with bar as tick:
            for arch, alpha, size in todo:
                logger.info("building %s", variant_name(arch, alpha, size))
                variants.append(_build_one(arch, alpha, size, grid.seed, work))
                tick(1)
        data = {
            "format": BUNDLE_FORMAT,
            "version": VERSION,
            "edgekit": __version__,
            "weights": f"{WEIGHTS_NOTE} (seed {grid.seed}, {CALIB_IMAGES} calibration images)",
            "edgetpu_compiler": "present" if find_compiler() else f"absent: {INSTALL_HINT}",
            "variants": variants,
        }
        write_json_atomic(work / BUNDLE_NAME, data)
        os.chmod(work, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(work, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out, data
