"""The manifest (`edgekit.json`): the contract between `edgekit convert` and `edgekit run`."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.errors import InputError, ModelError

MANIFEST_NAME = "edgekit.json"
FORMAT = "edgekit-model"
VERSION = 3  # the newest this edgekit reads; a manifest says the lowest that reads it right (see to_json)

Task = Literal["classify", "detect"]
ResizePolicy = Literal["stretch", "center_crop", "letterbox"]
Downscale = Literal["area", "pyramid", "bilinear"]
DOWNSCALES = ("area", "pyramid", "bilinear")


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: float = 0.0
    zero_point: int = 0


@dataclass(frozen=True)
class InputSpec:
    """The image tensor the device fills: NHWC, RGB, uint8 unless the model says int8."""

    height: int
    width: int
    channels: int = 3
    dtype: Literal["uint8", "int8", "float32"] = "uint8"
    layout: Literal["NHWC"] = "NHWC"
    color: Literal["RGB"] = "RGB"
    quantization: Quantization = field(default_factory=Quantization)


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes the input tensor.

    ``policy``, ``crop_fraction`` and ``downscale`` are applied on the device (and were applied to calibration
    images by the very same function, `edgekit.model.preprocess.prepare`). ``mean``/``std`` are in 0..255 pixel
    units; when ``baked`` is true the converted graph already applies them, so the device feeds raw pixels.

    ``downscale`` is how a frame is shrunk: ``area`` is the box average of INTER_AREA, computed in integers so
    that every architecture gets the same bytes (up to ~2.4x one INTER_AREA call: README, ``--downscale``),
    ``pyramid`` is 2x2 box halvings then bilinear (faster; as close to an antialiased resize, not the same
    pixels), ``bilinear`` is one bilinear stretch (OpenCV's ``cv2.resize`` as TF Lite's and EdjeElectronics'
    examples do, in its exact fixed-point form; what a plain ``.tflite`` gets, see
    `edgekit.device.model.PLAIN_PREPROCESS`). A model runs with the one it was calibrated with; manifests from
    before this field meant ``area``.
    """

    policy: ResizePolicy = "stretch"
    crop_fraction: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    baked: bool = True
    downscale: Downscale = "area"


@dataclass(frozen=True)
class OutputSpec:
    """One output tensor, named by its role (``scores`` for classifiers; boxes/classes/scores/count for SSD)."""

    role: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization = field(default_factory=Quantization)


@dataclass(frozen=True)
class SourceModel:
    """Where the converted model came from."""

    kind: str
    name: str
    path: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    """Everything the device needs to know about a converted model besides the .tflite itself."""

    task: Task
    input: InputSpec
    preprocess: Preprocess
    outputs: tuple[OutputSpec, ...]
    model: str = "model.tflite"
    edgetpu_model: str | None = None
    labels: str | None = "labels.txt"
    num_classes: int = 0
    box_format: str | None = None
    source: SourceModel | None = None
    converter: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize with the format tag and version first.

        The version is the lowest that reads the manifest right: 1 unless it uses the ``pyramid`` downscale
        (version 2) or ``bilinear`` (version 3), so a device with an older edgekit still runs the models it
        understands, and says "upgrade" for the others instead of preprocessing them the wrong way.
        """
        fields = _plain(dataclasses.asdict(self))
        version = {"area": 1, "pyramid": 2, "bilinear": 3}[self.preprocess.downscale]
        if version == 1:
            del fields["preprocess"]["downscale"]
        body = {"format": FORMAT, "version": version, **fields}
        return json.dumps(body, indent=2, sort_keys=False) + "\n"

    def write(self, directory: str | Path) -> Path:
        """Write ``edgekit.json`` into ``directory`` atomically."""
        path = Path(directory) / MANIFEST_NAME
        write_atomic(path, self.to_json())
        return path


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest from a model directory or a path to ``edgekit.json``.

    Raises:
        ModelError: missing, unreadable, of another format or a newer version, or with wrong fields.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no manifest; is this a folder written by edgekit convert?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgekit manifest (format is not {FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelError(
            f"{path}: manifest version {version!r} is newer than this edgekit understands ({VERSION}); "
            "upgrade edgekit on this device"
        )
    try:
        return _manifest_from_dict({k: v for k, v in data.items() if k not in ("format", "version")})
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: malformed manifest ({exc})") from None


def find_model(path: str | Path, prefer_edgetpu: bool = False) -> tuple[Path, Manifest | None]:
    """The .tflite a model argument means, and its manifest if it has one.

    Args:
        path: a folder written by `edgekit convert`, its ``edgekit.json``, or a .tflite (a manifest beside it, in
            the same folder, is used when it names that file).
        prefer_edgetpu: take the manifest's Edge TPU-compiled model when there is one.

    Returns:
        The .tflite path and the manifest (None for a plain .tflite).

    Raises:
        InputError: a folder (or edgekit.json path) without a manifest.
        ModelError: the manifest is unreadable.
    """
    path = Path(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        folder = path if path.is_dir() else path.parent
        if not (folder / MANIFEST_NAME).is_file():
            raise InputError(
                f"{folder}: no {MANIFEST_NAME} here; give a folder written by edgekit convert or a .tflite"
            )
        manifest = load_manifest(folder)
        name = manifest.edgetpu_model if prefer_edgetpu and manifest.edgetpu_model else manifest.model
        return folder / name, manifest
    if (path.parent / MANIFEST_NAME).is_file():
        beside = load_manifest(path.parent)
        if path.name in (beside.model, beside.edgetpu_model):
            return path, beside
    return path, None


def _manifest_from_dict(data: dict[str, Any]) -> Manifest:
    inp = dict(data["input"])
    inp["quantization"] = Quantization(**inp.get("quantization", {}))
    pre = dict(data["preprocess"])
    pre["mean"] = tuple(float(v) for v in pre.get("mean", (0.0, 0.0, 0.0)))
    pre["std"] = tuple(float(v) for v in pre.get("std", (1.0, 1.0, 1.0)))
    if pre.get("downscale", "area") not in DOWNSCALES:
        raise ValueError(f"preprocess.downscale {pre['downscale']!r} is not one of {', '.join(DOWNSCALES)}")
    outputs = tuple(
        OutputSpec(
            role=o["role"],
            shape=tuple(int(d) for d in o["shape"]),
            dtype=o["dtype"],
            quantization=Quantization(**o.get("quantization", {})),
        )
        for o in data["outputs"]
    )
    source = SourceModel(**data["source"]) if data.get("source") else None
    rest = {k: v for k, v in data.items() if k not in ("input", "preprocess", "outputs", "source")}
    return Manifest(input=InputSpec(**inp), preprocess=Preprocess(**pre), outputs=outputs, source=source, **rest)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write a file so that readers see either the old or the whole new content, never a part."""
    import tempfile  # here: `edgekit run` never writes, and tempfile pulls in shutil, bz2 and lzma (0.7 MB)

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content.encode("utf-8") if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
