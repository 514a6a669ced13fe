"""Keras' own MobileNets (keras.applications) with alpha, input size and optional ImageNet weights."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Any, Literal

from edgekit.errors import InputError, ModelError
from edgekit.model.manifest import Preprocess

logger = logging.getLogger(__name__)

KERAS_ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
_CONSTRUCTORS = {
    "mobilenet_v1": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
}
# TF-slim, where these weights were trained, evaluates on the central 87.5% of the image.
KERAS_CROP_FRACTION = 0.875

InputKind = Literal["normalized", "raw"]


def keras_preprocessing(arch: str) -> tuple[InputKind, Preprocess]:
    """What a keras.applications MobileNet expects in front of it.

    V1/V2 expect ``x / 127.5 - 1`` (mean 127.5, std 127.5 in pixel units); V3 starts with its own Rescaling
    layer and takes raw 0..255 RGB.

    Args:
        arch: one of ``KERAS_ARCHS``.

    Returns:
        ``("normalized" | "raw", Preprocess)`` with mean/std in 0..255 pixel units, not yet baked.
    """
    if arch.startswith("mobilenet_v3"):
        return "raw", Preprocess(policy="center_crop", crop_fraction=KERAS_CROP_FRACTION, baked=False)
    return "normalized", Preprocess(
        policy="center_crop",
        crop_fraction=KERAS_CROP_FRACTION,
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
        baked=False,
    )


def _is_download_failure(exc: BaseException) -> bool:
    import urllib.error

    # keras.utils.get_file wraps every fetch error in a bare Exception with this prefix.
    return isinstance(exc, (urllib.error.URLError, ConnectionError)) or str(exc).startswith("URL fetch failure")


def _short(exc: BaseException) -> str:
    """Keras' weight-loading errors embed whole tensors: keep the layer name and the two shapes."""
    text = " ".join(str(exc).split())
    layer = re.search(r"for object <\w+ name=([^,>]+)", text)
    shapes = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))", text)
    if layer and shapes:
        return f"layer '{layer.group(1)}' expects {shapes.group(1)}, the file has {shapes.group(2)}"
    return text if len(text) <= 300 else text[:300] + "..."


def build_keras_application(
    arch: str, alpha: float, input_size: int, weights: Literal["imagenet"] | Path | None
) -> Any:
    """Builds one of Keras' MobileNets with a 1000-class softmax head.

    Args:
        arch: one of ``KERAS_ARCHS``.
        alpha: width multiplier (ImageNet weights exist for V1/V2 0.25-1.4 and V3 0.75/1.0 only).
        input_size: height and width of the square input.
        weights: ``"imagenet"`` (downloaded once by Keras, then cached in ~/.keras/models), a Keras ``.h5``
            weights file, or None for random initialisation.

    Returns:
        The ``keras.Model``.

    Raises:
        InputError: Keras refuses the alpha / input size combination.
        ModelError: the ImageNet weights cannot be downloaded, or the weights file does not fit.
    """
    if arch not in _CONSTRUCTORS:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(KERAS_ARCHS)}")
    import keras

    constructor = getattr(keras.applications, _CONSTRUCTORS[arch])
    kwargs: dict[str, Any] = {
        "input_shape": (input_size, input_size, 3),
        "alpha": alpha,
        "include_top": True,
        "weights": str(weights) if isinstance(weights, Path) else weights,
        "classes": 1000,
    }
    if arch.startswith("mobilenet_v3"):
        kwargs["include_preprocessing"] = True
    try:
        # Keras prints "Downloading data from ..." on stdout, which belongs to the CLI's own output.
        with contextlib.redirect_stdout(sys.stderr):
            return constructor(**kwargs)
    except ValueError as exc:
        if isinstance(weights, Path):
            raise ModelError(
                f"{weights}: does not fit keras.applications.{constructor.__name__} alpha {alpha:g}: {_short(exc)}"
            ) from None
        raise InputError(f"{arch} alpha {alpha:g} input {input_size}: {exc}") from None
    except Exception as exc:
        if weights == "imagenet" and _is_download_failure(exc):
            reason = str(exc).rsplit(" -- ", 1)[-1]
            raise ModelError(
                f"cannot download Keras' ImageNet weights for {arch} alpha {alpha:g}: the network is unreachable "
                f"({reason}); run once online (Keras caches them in ~/.keras/models) or use "
                "--weights torchvision-imagenet (offline, mobilenet_v2 alpha 1.0)"
            ) from None
        if isinstance(weights, Path):
            raise ModelError(f"{weights}: cannot load into {arch} alpha {alpha:g}: {_short(exc)}") from None
        raise
