"""Torch-free recipes shared by the golden-file generator and the tests: photo inputs and seeded weights."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE = 256
CROP = 224


def photo_crop(path: Path) -> np.ndarray:
    """RGB uint8 (224, 224, 3): shorter side resized to 256 (OpenCV bilinear), then the centre 224 crop.

    Sizes and crop offsets follow torchvision's Resize(256) / CenterCrop(224) arithmetic.
    """
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    if h <= w:
        new_h, new_w = RESIZE, int(RESIZE * w / h)
    else:
        new_h, new_w = int(RESIZE * h / w), RESIZE
    resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top = round((new_h - CROP) / 2.0)
    left = round((new_w - CROP) / 2.0)
    return np.ascontiguousarray(resized[top : top + CROP, left : left + CROP])


def normalise(crop: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> float32 NHWC-ready tensor with torchvision's ImageNet mean/std applied."""
    return ((crop.astype(np.float32) / np.float32(255.0)) - MEAN) / STD


def photo_input(path: Path) -> np.ndarray:
    """The exact float32 (224, 224, 3) tensor both torch and the Keras port are fed for ``path``."""
    return normalise(photo_crop(path))


def sha256(array: np.ndarray) -> str:
    """Hash of an array's bytes (C order), to prove both sides saw the same input."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def seeded_state_dict(shapes: Iterable[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, np.ndarray]:
    """Plausible random weights for a MobileNet state dict, identical for a name whatever the order.

    Each tensor draws from its own generator seeded by (seed, crc32(name)). Conv/linear weights are
    He-scaled, BatchNorm statistics are kept in ranges that do not blow activations up.
    """
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("running_mean", "bias")):
            value = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BatchNorm gamma
            value = rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        out[name] = value.astype(np.float32)
    return out


def seeded_inputs(batch: int, size: int, seed: int) -> np.ndarray:
    """Seeded standard-normal NHWC float32 inputs (already 'normalised' images)."""
    return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)
