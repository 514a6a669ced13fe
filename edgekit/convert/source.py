"""The model to convert: a user's .keras/.h5/SavedModel or a built-in MobileNet, as a float Keras classifier."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import InputError, ModelError
from edgekit.model.manifest import Downscale, Preprocess, ResizePolicy, SourceModel

logger = logging.getLogger(__name__)

BUILTIN_ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")

# --preprocess presets, in 0..255 pixel units: what the network expects to see after (pixel - mean) / std.
PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "tf": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),  # x / 127.5 - 1: Keras/TF-slim MobileNets
    "torch": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),  # torchvision
    "raw": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # the model takes 0..255 itself (Keras' MobileNetV3)
}


@dataclass(frozen=True)
class Loaded:
    """A float Keras classifier with a fixed (1, H, W, 3) input, and what is known about it."""

    model: Any
    size: tuple[int, int]
    preprocess: Preprocess  # mean/std the network expects (not baked yet) and the default resize policy
    preprocess_known: bool  # False: no source said how the network was trained; a default was assumed
    labels: tuple[str, ...] | None
    source: SourceModel
    arch: str = ""
    notes: tuple[str, ...] = ()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and contents, sorted) for a SavedModel."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _fixed_input(model: Any, label: str, input_size: int | None) -> tuple[Any, tuple[int, int]]:
    import keras

    if len(model.inputs) != 1:
        raise InputError(f"{label}: the model has {len(model.inputs)} inputs; edgekit convert needs one image input")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise InputError(
            f"{label}: input shape {_show(shape)} is not an RGB image (batch, height, width, 3); "
            "edgekit convert handles image classifiers"
        )
    h, w = shape[1], shape[2]
    if input_size is not None:
        if input_size < 8:
            raise InputError(f"--input-size {input_size}: too small")
        if h is not None and w is not None and (h, w) != (input_size, input_size):
            raise InputError(f"{label}: the model's input is {h}x{w}, not --input-size {input_size}; drop --input-size")
        h = w = input_size
    if h is None or w is None:
        raise InputError(f"{label}: input shape {_show(shape)} has no fixed height/width; pass --input-size (e.g. 224)")
    if shape[1:3] != (h, w):
        inputs = keras.Input((h, w, 3), name="image")
        model = keras.Model(inputs, model(inputs), name=model.name)
    return model, (int(h), int(w))


def _show(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _with_softmax(model: Any, label: str) -> tuple[Any, list[str]]:
    """Make sure the output is class probabilities (the device reads scores, not logits)."""
    import keras

    out = model.outputs
    if len(out) != 1 or len(out[0].shape) != 2:
        raise InputError(
            f"{label}: output shape {[_show(tuple(o.shape)) for o in out]} is not one (batch, classes) tensor; "
            "edgekit convert handles classifiers"
        )
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "") if activation is not None else ""
    if isinstance(last, keras.layers.Softmax) or name == "softmax":
        return model, []
    probs = keras.layers.Softmax(name="edgekit_softmax")(model.outputs[0])
    return keras.Model(model.inputs, probs, name=model.name), [
        "the model ends in logits: a softmax was appended so the device reads probabilities"
    ]


def _load_file(path: Path) -> Any:
    import keras

    label = str(path)
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InputError(f"{label}: a folder but not a SavedModel (no saved_model.pb)")
        try:
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        except Exception as exc:  # TF raises many types for a broken SavedModel
            raise ModelError(f"{label}: unreadable SavedModel ({type(exc).__name__}: {_first_line(exc)})") from None
        import tensorflow as tf

        fn = tf.saved_model.load(str(path)).signatures["serving_default"]
        specs = list(fn.structured_input_signature[1].values())
        if len(specs) != 1:
            raise InputError(f"{label}: the serving signature has {len(specs)} inputs; one image input is needed")
        spec = specs[0]
        inputs = keras.Input(tuple(spec.shape[1:]), name="image")
        outputs = layer(inputs)
        if isinstance(outputs, dict):
            if len(outputs) != 1:
                raise InputError(f"{label}: the serving signature has {len(outputs)} outputs; a classifier has one")
            outputs = next(iter(outputs.values()))
        return keras.Model(inputs, outputs, name=path.name)
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise InputError(
            f"{label}: not a model file; give a .keras or .h5 file, a SavedModel folder, or one of "
            f"{', '.join(BUILTIN_ARCHS)}"
        )
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # zip/h5py/json errors all mean the same thing to the user
        raise ModelError(f"{label}: not a readable Keras model ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _starts_with_rescaling(model: Any) -> bool:
    import keras

    first = model.layers[:4]
    return any(isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)) for layer in first)


def load_model(
    model: str,
    alpha: float | None = None,
    input_size: int | None = None,
    weights: str | None = None,
) -> Loaded:
    """Load MODEL as given on the command line.

    Args:
        model: a .keras/.h5 path, a SavedModel folder, or a built-in architecture name.
        alpha: width multiplier (built-ins only).
        input_size: square input size (built-ins: default 224; files: only when the input is dynamic).
        weights: built-ins only: ``imagenet``, ``none``, ``torchvision-imagenet`` or a checkpoint path.

    Returns:
        The float classifier with a fixed input size and softmax output.

    Raises:
        InputError: a path that is not a model, a non-image input, options that do not apply.
        ModelError: a model file that cannot be read, weights that do not fit.
    """
    if model in BUILTIN_ARCHS:
        from edgekit.convert.zoo import load_builtin

        zoo = load_builtin(model, alpha, input_size or 224, weights or "imagenet")
        keras_model, notes = _with_softmax(zoo.model, model)
        return Loaded(
            model=keras_model,
            size=(zoo.input_size, zoo.input_size),
            preprocess=zoo.preprocess,
            preprocess_known=True,
            labels=zoo.labels,
            source=zoo.source,
            arch=f"{zoo.arch} alpha {zoo.alpha:g}",
            notes=tuple(notes),
        )
    path = Path(model)
    if alpha is not None or weights is not None:
        raise InputError(f"{model}: --alpha and --weights apply to built-in architectures ({', '.join(BUILTIN_ARCHS)})")
    if not path.exists():
        raise InputError(f"{model}: no such file, and not a built-in architecture ({', '.join(BUILTIN_ARCHS)})")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{model}: empty file, not a model")
    from edgekit.convert.tfl import import_tf

    import_tf()
    keras_model = _load_file(path)
    keras_model, size = _fixed_input(keras_model, str(path), input_size)
    keras_model, notes = _with_softmax(keras_model, str(path))
    raw = _starts_with_rescaling(keras_model)
    mean, std = PRESETS["raw" if raw else "tf"]
    preprocess = Preprocess(policy="stretch", crop_fraction=1.0, mean=mean, std=std, baked=False)
    kind = "savedmodel" if path.is_dir() else path.suffix.lower().lstrip(".")
    return Loaded(
        model=keras_model,
        size=size,
        preprocess=preprocess,
        preprocess_known=raw,
        labels=None,
        source=SourceModel(kind=kind, name=path.name, path=str(path.resolve()), sha256=sha256_path(path)),
        arch=keras_model.name,
        notes=tuple(notes),
    )


def resolve_preprocess(
    loaded: Loaded,
    preset: str | None,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    policy: ResizePolicy | None,
    crop_fraction: float | None,
    downscale: Downscale = "area",
) -> tuple[Preprocess, list[str]]:
    """The preprocessing to bake: --preprocess/--mean/--std over the model source's default.

    Returns:
        (Preprocess with baked=True, notes for the report).

    Raises:
        InputError: conflicting or invalid options.
    """
    notes: list[str] = []
    base = loaded.preprocess
    if preset is not None and (mean is not None or std is not None):
        raise InputError("--preprocess and --mean/--std both given; use one or the other")
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"--preprocess {preset}: choose one of {', '.join(PRESETS)}")
        mean, std = PRESETS[preset]
    elif mean is None and std is None and not loaded.preprocess_known:
        notes.append(
            "the model file does not say how it was trained: assumed --preprocess tf (x / 127.5 - 1); "
            "pass --preprocess or --mean/--std if that is wrong"
        )
    mean = mean if mean is not None else base.mean
    std = std if std is not None else base.std
    if any(s <= 0 for s in std):
        raise InputError(f"--std {','.join(f'{s:g}' for s in std)}: every value must be positive")
    crop = crop_fraction if crop_fraction is not None else base.crop_fraction
    if not 0 < crop <= 1:
        raise InputError(f"--crop-fraction {crop:g}: must be in (0, 1]")
    chosen = Preprocess(
        policy=policy or base.policy,
        crop_fraction=crop,
        mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in std),  # type: ignore[arg-type]
        baked=True,
        downscale=downscale,
    )
    return chosen, notes
