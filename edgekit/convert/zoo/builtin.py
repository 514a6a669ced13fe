"""The built-in MobileNets behind ``edgekit convert mobilenet_*``: one entry point, one result type."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgekit.convert.zoo.keras_apps import KERAS_ARCHS, InputKind, build_keras_application, keras_preprocessing
from edgekit.convert.zoo.torchcheckpoint import load_state_dict
from edgekit.convert.zoo.torchvision_mobilenet import (
    TORCHVISION_ARCHS,
    build_torchvision,
    check_state_dict,
    torchvision_imagenet_preprocess,
)
from edgekit.convert.zoo.weights import (
    TORCHVISION_IMAGENET,
    imagenet_labels,
    sha256_file,
    torchvision_imagenet_checkpoint,
    verify_torchvision_imagenet,
)
from edgekit.errors import InputError, ModelError
from edgekit.model.manifest import Preprocess, SourceModel

logger = logging.getLogger(__name__)

ARCHS = KERAS_ARCHS
WEIGHT_SOURCES = ("imagenet", "none", TORCHVISION_IMAGENET)
_KERAS_WEIGHT_SUFFIXES = (".h5", ".keras")
# torchvision publishes checkpoints as <arch>-<first 8 hex digits of sha256>.pth.
_OFFICIAL_NAME = re.compile(r"^(mobilenet_v2|mobilenet_v3_small|mobilenet_v3_large)-([0-9a-f]{8})\.pth$")


@dataclass(frozen=True, eq=False)
class ZooModel:
    """A float Keras classifier ready for conversion, and everything the converter must know about it.

    Attributes:
        model: the ``keras.Model`` (NHWC float input, softmax output).
        arch: ``mobilenet_v1`` / ``mobilenet_v2`` / ``mobilenet_v3_small`` / ``mobilenet_v3_large``.
        alpha: width multiplier actually used (inferred from a checkpoint when not given).
        input_size: height and width of the square input.
        input_kind: ``normalized`` - the model expects ``(pixel - mean) / std`` with ``preprocess``'s mean/std;
            ``raw`` - it expects 0..255 RGB (Keras' V3 rescales inside).
        preprocess: resize policy, crop fraction and mean/std in 0..255 pixel units (``baked=False``: baking
            them into the graph is the converter's job).
        labels: class names in output order, or None when the source does not say.
        source: where the weights came from (kind, name, path, sha256).
        output: what the output holds.
    """

    model: Any
    arch: str
    alpha: float
    input_size: int
    input_kind: InputKind
    preprocess: Preprocess
    labels: tuple[str, ...] | None
    source: SourceModel
    output: Literal["probabilities"] = "probabilities"


def _torchvision_model(
    arch: str, alpha: float | None, input_size: int, path: Path, official: bool, description: str
) -> ZooModel:
    if arch not in TORCHVISION_ARCHS:
        raise InputError(
            f"{path}: a PyTorch checkpoint needs a torchvision architecture ({', '.join(TORCHVISION_ARCHS)}), "
            f"not {arch}"
        )
    state_dict = load_state_dict(path)
    try:
        width, classes = check_state_dict(arch, state_dict, alpha)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    digest = sha256_file(path)
    match = _OFFICIAL_NAME.match(path.name)
    official = official or bool(
        match and match.group(1) == arch and digest.startswith(match.group(2)) and classes == 1000
    )
    port = build_torchvision(arch, width, input_size, classes)
    port.load_state_dict(state_dict)
    logger.info("ported %s (width %g, %d classes) from %s", arch, width, classes, path)
    return ZooModel(
        model=port.model,
        arch=arch,
        alpha=width,
        input_size=input_size,
        input_kind="normalized",
        preprocess=torchvision_imagenet_preprocess(),
        labels=imagenet_labels() if official else None,
        source=SourceModel(kind="torchvision", name=f"torchvision {arch} {description}", path=str(path), sha256=digest),
    )


def _keras_model(arch: str, alpha: float, input_size: int, weights: Literal["imagenet"] | Path | None) -> ZooModel:
    model = build_keras_application(arch, alpha, input_size, weights)
    input_kind, preprocess = keras_preprocessing(arch)
    name = f"keras.applications {arch} alpha {alpha:g}"
    if weights is None:
        source = SourceModel(kind="keras.applications", name=f"{name}, random initialisation")
    elif weights == "imagenet":
        source = SourceModel(kind="keras.applications", name=f"{name}, Keras ImageNet weights")
    else:
        source = SourceModel(
            kind="keras.applications", name=f"{name}, {weights.name}", path=str(weights), sha256=sha256_file(weights)
        )
    return ZooModel(
        model=model,
        arch=arch,
        alpha=alpha,
        input_size=input_size,
        input_kind=input_kind,
        preprocess=preprocess,
        labels=imagenet_labels() if weights == "imagenet" else None,
        source=source,
    )


def load_builtin(arch: str, alpha: float | None, input_size: int, weights: str | Path | None) -> ZooModel:
    """Builds a built-in MobileNet with the requested weights.

    Args:
        arch: ``mobilenet_v1``, ``mobilenet_v2``, ``mobilenet_v3_small`` or ``mobilenet_v3_large``.
        alpha: width multiplier; None means 1.0, or for a PyTorch checkpoint: inferred from its shapes.
        input_size: height and width of the square input (at least 32).
        weights: ``"imagenet"`` (Keras' weights, downloaded once), ``"none"``/None (random init),
            ``"torchvision-imagenet"`` (torchvision's MobileNetV2 from the offline weights package), or a path:
            a PyTorch checkpoint (``.pth``/``.pt``: torchvision layout, read without torch) or Keras weights (``.h5``).

    Returns:
        The model and its preprocessing, labels and provenance.

    Raises:
        InputError: unknown architecture / weights name, bad input size, missing file.
        ModelError: a checkpoint that does not fit (names the first mismatching tensor), unreachable network.
        MissingExtra: ``torchvision-imagenet`` without the weights package (names the pip command).
    """
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 32:
        raise InputError(f"--input-size {input_size!r}: MobileNets need a whole number of pixels >= 32")
    if alpha is not None and not alpha > 0:
        raise InputError(f"--alpha {alpha!r}: the width multiplier must be positive")
    if weights is None or weights == "none":
        return _keras_model(arch, alpha or 1.0, input_size, None)
    if weights == "imagenet":
        return _keras_model(arch, alpha or 1.0, input_size, "imagenet")
    if weights == TORCHVISION_IMAGENET:
        if arch != "mobilenet_v2" or alpha not in (None, 1.0):
            raise InputError(
                f"--weights {TORCHVISION_IMAGENET} is torchvision's mobilenet_v2 at alpha 1.0, not {arch} "
                f"alpha {alpha if alpha is not None else 1.0:g}; use --weights imagenet for Keras' weights"
            )
        path = torchvision_imagenet_checkpoint()
        verify_torchvision_imagenet(path)
        return _torchvision_model(arch, alpha, input_size, path, True, "ImageNet (mobilenet_v2-b0353104.pth)")
    path = Path(weights)
    if not path.is_file():
        if path.suffix:
            raise InputError(f"--weights {path}: no such file")
        raise InputError(
            f"--weights {weights}: unknown source; use imagenet, none, {TORCHVISION_IMAGENET} or a .pth/.h5 path"
        )
    if path.name.endswith(_KERAS_WEIGHT_SUFFIXES):
        return _keras_model(arch, alpha or 1.0, input_size, path)
    return _torchvision_model(arch, alpha, input_size, path, False, f"checkpoint {path.name}")
