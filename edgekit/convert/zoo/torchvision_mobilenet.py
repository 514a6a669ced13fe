"""Keras ports of torchvision's MobileNetV2 / V3, with weight loading from torchvision state dicts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.errors import ModelError
from edgekit.model.manifest import Preprocess

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

TORCHVISION_ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")

# torchvision's ImageNet evaluation transform (ImageClassification preset), in 0..1 units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE = 256
IMAGENET_CROP = 224
IMAGENET_CROP_FRACTION = IMAGENET_CROP / IMAGENET_RESIZE  # 0.875
IMAGENET_INTERPOLATION = "bilinear"

# Widths tried when inferring a checkpoint's width multiplier from its tensor shapes.
_CANDIDATE_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.3, 1.4, 0.25, 1.5, 2.0)

# BatchNorm buffers that torchvision saves but inference does not use.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def torchvision_imagenet_preprocess() -> Preprocess:
    """torchvision's ImageNet evaluation transform as a manifest ``Preprocess`` (not yet baked).

    Resize 256 then centre-crop 224 is a centre crop of 0.875 of the shorter side; mean/std are converted
    from 0..1 to 0..255 pixel units.

    Returns:
        ``Preprocess(policy="center_crop", crop_fraction=0.875, mean=(123.675, ...), std=(58.395, ...))``.
    """
    return Preprocess(
        policy="center_crop",
        crop_fraction=IMAGENET_CROP_FRACTION,
        mean=_pixels(IMAGENET_MEAN),
        std=_pixels(IMAGENET_STD),
        baked=False,
    )


def _pixels(values: tuple[float, float, float]) -> tuple[float, float, float]:
    a, b, c = (round(v * 255.0, 6) for v in values)
    return a, b, c


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: rounds a channel count to a multiple of ``divisor``.

    Args:
        value: the scaled channel count.
        divisor: the multiple to round to.
        min_value: lower bound (defaults to ``divisor``).

    Returns:
        The nearest multiple of ``divisor``, never more than 10% below ``value``.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class _Ops(Protocol):
    """What an architecture description needs; implemented once for shapes and once for Keras."""

    def conv_bn(
        self, x: Any, conv: str, bn: str, out: int, kernel: int, stride: int, depthwise: bool, act: str | None
    ) -> Any: ...

    def squeeze_excite(self, x: Any, name: str, squeeze: int) -> Any: ...

    def add(self, x: Any, y: Any) -> Any: ...

    def pool(self, x: Any) -> Any: ...

    def linear(self, x: Any, name: str, out: int, act: str | None) -> Any: ...

    def dropout(self, x: Any, rate: float) -> Any: ...


def _v2(ops: _Ops, x: Any, width: float, num_classes: int) -> Any:
    """torchvision.models.MobileNetV2 (round_nearest=8, the 2018 paper's layout)."""
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    channels = make_divisible(32 * width)
    last_channel = make_divisible(1280 * max(1.0, width))
    x = ops.conv_bn(x, "features.0.0", "features.0.1", channels, 3, 2, False, "relu6")
    index = 1
    for expand, c, repeats, first_stride in settings:
        out = make_divisible(c * width)
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            hidden = round(channels * expand)
            p = f"features.{index}.conv"
            y, j = x, 0
            if expand != 1:
                y = ops.conv_bn(y, f"{p}.0.0", f"{p}.0.1", hidden, 1, 1, False, "relu6")
                j = 1
            y = ops.conv_bn(y, f"{p}.{j}.0", f"{p}.{j}.1", hidden, 3, stride, True, "relu6")
            y = ops.conv_bn(y, f"{p}.{j + 1}", f"{p}.{j + 2}", out, 1, 1, False, None)
            x = ops.add(x, y) if stride == 1 and channels == out else y
            channels = out
            index += 1
    x = ops.conv_bn(x, f"features.{index}.0", f"features.{index}.1", last_channel, 1, 1, False, "relu6")
    x = ops.pool(x)
    x = ops.dropout(x, 0.2)
    return ops.linear(x, "classifier.1", num_classes, None)


# (input, kernel, expanded, out, use_se, activation, stride) as in torchvision's _mobilenet_v3_conf.
_V3_LARGE = [
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
]
_V3_SMALL = [
    (16, 3, 16, 16, True, "relu", 2),
    (16, 3, 72, 24, False, "relu", 2),
    (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hardswish", 2),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 240, 40, True, "hardswish", 1),
    (40, 5, 120, 48, True, "hardswish", 1),
    (48, 5, 144, 48, True, "hardswish", 1),
    (48, 5, 288, 96, True, "hardswish", 2),
    (96, 5, 576, 96, True, "hardswish", 1),
    (96, 5, 576, 96, True, "hardswish", 1),
]


def _v3(ops: _Ops, x: Any, width: float, num_classes: int, large: bool) -> Any:
    """torchvision.models.MobileNetV3 (not reduced_tail, not dilated)."""
    setting = _V3_LARGE if large else _V3_SMALL
    last_channel = make_divisible((1280 if large else 1024) * width)
    x = ops.conv_bn(x, "features.0.0", "features.0.1", make_divisible(setting[0][0] * width), 3, 2, False, "hardswish")
    for index, (cin, kernel, cexp, cout, use_se, act, stride) in enumerate(setting, start=1):
        cin, cexp, cout = (make_divisible(c * width) for c in (cin, cexp, cout))
        p = f"features.{index}.block"
        y, j = x, 0
        if cexp != cin:
            y = ops.conv_bn(y, f"{p}.0.0", f"{p}.0.1", cexp, 1, 1, False, act)
            j = 1
        y = ops.conv_bn(y, f"{p}.{j}.0", f"{p}.{j}.1", cexp, kernel, stride, True, act)
        j += 1
        if use_se:
            y = ops.squeeze_excite(y, f"{p}.{j}", make_divisible(cexp // 4, 8))
            j += 1
        y = ops.conv_bn(y, f"{p}.{j}.0", f"{p}.{j}.1", cout, 1, 1, False, None)
        x = ops.add(x, y) if stride == 1 and cin == cout else y
    last_in = make_divisible(setting[-1][3] * width)
    index = len(setting) + 1
    x = ops.conv_bn(x, f"features.{index}.0", f"features.{index}.1", 6 * last_in, 1, 1, False, "hardswish")
    x = ops.pool(x)
    x = ops.linear(x, "classifier.0", last_channel, "hardswish")
    x = ops.dropout(x, 0.2)
    return ops.linear(x, "classifier.3", num_classes, None)


def _describe(arch: str, ops: _Ops, x: Any, width: float, num_classes: int) -> Any:
    if arch == "mobilenet_v2":
        return _v2(ops, x, width, num_classes)
    if arch in ("mobilenet_v3_small", "mobilenet_v3_large"):
        return _v3(ops, x, width, num_classes, large=arch.endswith("large"))
    raise ModelError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")


def batchnorm_eps(arch: str) -> float:
    """BatchNorm epsilon torchvision uses for ``arch`` (torch default for V2, 0.001 for V3)."""
    return 1e-5 if arch == "mobilenet_v2" else 1e-3


@dataclass
class _ShapeOps:
    """Walks an architecture on channel counts only, collecting the state dict it expects."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def conv_bn(
        self, x: int, conv: str, bn: str, out: int, kernel: int, stride: int, depthwise: bool, act: str | None
    ) -> int:
        self.shapes[f"{conv}.weight"] = (out, 1 if depthwise else x, kernel, kernel)
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            self.shapes[f"{bn}.{suffix}"] = (out,)
        return out

    def squeeze_excite(self, x: int, name: str, squeeze: int) -> int:
        self.shapes[f"{name}.fc1.weight"] = (squeeze, x, 1, 1)
        self.shapes[f"{name}.fc1.bias"] = (squeeze,)
        self.shapes[f"{name}.fc2.weight"] = (x, squeeze, 1, 1)
        self.shapes[f"{name}.fc2.bias"] = (x,)
        return x

    def add(self, x: int, y: int) -> int:
        return y

    def pool(self, x: int) -> int:
        return x

    def linear(self, x: int, name: str, out: int, act: str | None) -> int:
        self.shapes[f"{name}.weight"] = (out, x)
        self.shapes[f"{name}.bias"] = (out,)
        return out

    def dropout(self, x: int, rate: float) -> int:
        return x


def expected_state_dict(arch: str, width: float = 1.0, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of torchvision's ``arch`` state dict (BatchNorm counters left out).

    Args:
        arch: one of ``TORCHVISION_ARCHS``.
        width: width multiplier (torchvision's ``width_mult``).
        num_classes: size of the classifier output.

    Returns:
        Name -> shape, in torchvision's parameter order.
    """
    ops = _ShapeOps()
    _describe(arch, ops, 3, width, num_classes)
    return ops.shapes


def _relevant(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}


def _first_mismatch(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, np.ndarray]) -> str | None:
    for name, shape in expected.items():
        if name not in found:
            return f"tensor '{name}' (shape {shape}) is missing"
        if tuple(found[name].shape) != shape:
            return f"tensor '{name}' has shape {tuple(found[name].shape)}, expected {shape}"
    extra = [name for name in found if name not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        return f"unexpected tensor '{extra[0]}' (shape {tuple(found[extra[0]].shape)}){more}"
    return None


def _num_classes(arch: str, state_dict: Mapping[str, np.ndarray]) -> int | None:
    head = "classifier.1.weight" if arch == "mobilenet_v2" else "classifier.3.weight"
    weight = state_dict.get(head)
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def identify(state_dict: Mapping[str, np.ndarray]) -> tuple[str, float, int] | None:
    """Finds which torchvision MobileNet (architecture, width, classes) a state dict belongs to.

    Args:
        state_dict: tensors read from a checkpoint.

    Returns:
        ``(arch, width, num_classes)`` when one of ``TORCHVISION_ARCHS`` at a common width fits exactly,
        else None.
    """
    found = _relevant(state_dict)
    for arch in TORCHVISION_ARCHS:
        classes = _num_classes(arch, found)
        if classes is None:
            continue
        for width in _CANDIDATE_WIDTHS:
            if _first_mismatch(expected_state_dict(arch, width, classes), found) is None:
                return arch, width, classes
    return None


def check_state_dict(arch: str, state_dict: Mapping[str, np.ndarray], width: float | None = None) -> tuple[float, int]:
    """Checks a state dict against torchvision's ``arch`` and settles width and class count.

    Args:
        arch: one of ``TORCHVISION_ARCHS``.
        state_dict: tensors read from a checkpoint.
        width: the width multiplier the user asked for, or None to infer it from the shapes.

    Returns:
        ``(width, num_classes)`` of the checkpoint.

    Raises:
        ModelError: naming the first tensor that is missing, has another shape, or is not expected.
    """
    found = _relevant(state_dict)
    classes = _num_classes(arch, found) or 1000
    widths = [width] if width is not None else list(_CANDIDATE_WIDTHS)
    for candidate in widths:
        if _first_mismatch(expected_state_dict(arch, candidate, classes), found) is None:
            return candidate, classes
    shown = width if width is not None else 1.0
    problem = _first_mismatch(expected_state_dict(arch, shown, classes), found)
    hint = ""
    match = identify(found)
    if match is not None:
        hint = f"; the checkpoint is a {match[0]} with width {match[1]:g} ({match[2]} classes)"
        hint += (
            f": pass --alpha {match[1]:g}" if match[0] == arch else f": convert it as {match[0]} --alpha {match[1]:g}"
        )
    elif width is None:
        hint = f"; no common width ({', '.join(f'{w:g}' for w in _CANDIDATE_WIDTHS)}) fits"
    raise ModelError(f"weights do not fit {arch} with width {shown:g}: {problem}{hint}")


class _KerasOps:
    """Builds the architecture from Keras layers and remembers which torch tensors feed which layer."""

    def __init__(self, arch: str) -> None:
        import keras

        self.keras = keras
        self.eps = batchnorm_eps(arch)
        # torch's momentum weighs the new batch, Keras' the running value: 0.1 -> 0.9 (V2), 0.01 -> 0.99 (V3).
        self.momentum = 0.9 if arch == "mobilenet_v2" else 0.99
        self.loaders: list[Callable[[Mapping[str, np.ndarray]], None]] = []

    @staticmethod
    def _name(torch_name: str) -> str:
        return torch_name.replace(".", "_")

    def _act(self, x: Any, act: str | None, name: str) -> Any:
        layers = self.keras.layers
        if act is None:
            return x
        if act == "relu6":
            return layers.ReLU(6.0, name=f"{name}_relu6")(x)
        if act == "relu":
            return layers.ReLU(name=f"{name}_relu")(x)
        if act == "hardswish":
            # Keras' hard_swish is x * relu6(x + 3) / 6, torch.nn.Hardswish's definition.
            return layers.Activation("hard_swish", name=f"{name}_hardswish")(x)
        if act == "hardsigmoid":
            # Keras 3's hard_sigmoid is relu6(x + 3) / 6 like torch (Keras 2's was 0.2x + 0.5).
            return layers.Activation("hard_sigmoid", name=f"{name}_hardsigmoid")(x)
        raise ValueError(act)

    def conv_bn(
        self, x: Any, conv: str, bn: str, out: int, kernel: int, stride: int, depthwise: bool, act: str | None
    ) -> Any:
        layers = self.keras.layers
        name = self._name(conv)
        if stride > 1:
            # PyTorch pads (k-1)//2 on every side; TF 'same' pads asymmetrically at stride 2.
            x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same"  # symmetric for odd kernels at stride 1, exactly torch's padding
        if depthwise:
            layer: Any = layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False, name=name)
        else:
            layer = layers.Conv2D(out, kernel, stride, padding=padding, use_bias=False, name=name)
        x = layer(x)
        norm = layers.BatchNormalization(epsilon=self.eps, momentum=self.momentum, name=self._name(bn))
        x = norm(x)

        def load(sd: Mapping[str, np.ndarray]) -> None:
            w = sd[f"{conv}.weight"]
            # OIHW -> HWIO for Conv2D; (C, 1, H, W) -> (H, W, C, 1) for DepthwiseConv2D.
            layer.set_weights([w.transpose(2, 3, 0, 1) if depthwise else w.transpose(2, 3, 1, 0)])
            norm.set_weights([sd[f"{bn}.{s}"] for s in ("weight", "bias", "running_mean", "running_var")])

        self.loaders.append(load)
        return self._act(x, act, name)

    def squeeze_excite(self, x: Any, name: str, squeeze: int) -> Any:
        layers = self.keras.layers
        base = self._name(name)
        channels = int(x.shape[-1])
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{base}_pool")(x)
        fc1 = layers.Conv2D(squeeze, 1, name=f"{base}_fc1")
        fc2 = layers.Conv2D(channels, 1, name=f"{base}_fc2")
        s = layers.ReLU(name=f"{base}_relu")(fc1(s))
        s = self._act(fc2(s), "hardsigmoid", base)

        def load(sd: Mapping[str, np.ndarray]) -> None:
            for layer, fc in ((fc1, "fc1"), (fc2, "fc2")):
                layer.set_weights([sd[f"{name}.{fc}.weight"].transpose(2, 3, 1, 0), sd[f"{name}.{fc}.bias"]])

        self.loaders.append(load)
        return layers.Multiply(name=f"{base}_scale")([x, s])

    def add(self, x: Any, y: Any) -> Any:
        return self.keras.layers.Add()([x, y])

    def pool(self, x: Any) -> Any:
        return self.keras.layers.GlobalAveragePooling2D(name="avgpool")(x)

    def linear(self, x: Any, name: str, out: int, act: str | None) -> Any:
        layer = self.keras.layers.Dense(out, name=self._name(name))
        x = layer(x)

        def load(sd: Mapping[str, np.ndarray]) -> None:
            layer.set_weights([sd[f"{name}.weight"].T, sd[f"{name}.bias"]])

        self.loaders.append(load)
        return self._act(x, act, self._name(name))

    def dropout(self, x: Any, rate: float) -> Any:
        return self.keras.layers.Dropout(rate)(x)


@dataclass(frozen=True)
class TorchvisionPort:
    """A Keras model built to torchvision's layout, and how to fill it from a torchvision state dict."""

    model: keras.Model
    arch: str
    width: float
    num_classes: int
    _loaders: tuple[Callable[[Mapping[str, np.ndarray]], None], ...]

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Copies torchvision weights into the Keras model.

        Args:
            state_dict: tensors read from a checkpoint of the same architecture, width and classes.

        Raises:
            ModelError: naming the first tensor that does not fit.
        """
        _, classes = check_state_dict(self.arch, state_dict, self.width)
        if classes != self.num_classes:
            raise ModelError(f"weights have {classes} classes, the model was built for {self.num_classes}")
        tensors = {k: np.asarray(v, dtype=np.float32) for k, v in _relevant(state_dict).items()}
        for load in self._loaders:
            load(tensors)


def build_torchvision(
    arch: str,
    width: float = 1.0,
    input_size: int = 224,
    num_classes: int = 1000,
    softmax: bool = True,
) -> TorchvisionPort:
    """Builds torchvision's ``arch`` as a Keras model (NHWC, input already normalised by mean/std).

    Args:
        arch: one of ``TORCHVISION_ARCHS``.
        width: width multiplier (torchvision's ``width_mult``).
        input_size: height and width of the square input.
        num_classes: classifier outputs.
        softmax: end with a softmax (probabilities) instead of torchvision's logits.

    Returns:
        The port, with randomly initialised weights until ``load_state_dict`` is called.
    """
    if arch not in TORCHVISION_ARCHS:
        raise ModelError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
    if input_size < 32:
        raise ModelError(f"input size {input_size} is too small for {arch}: use at least 32 pixels")
    import keras

    ops = _KerasOps(arch)
    inputs = keras.Input((input_size, input_size, 3), name="input")
    x = _describe(arch, ops, inputs, width, num_classes)
    if softmax:
        x = keras.layers.Softmax(name="softmax")(x)
    model = keras.Model(inputs, x, name=f"{arch}_{width:g}_{input_size}".replace(".", "_"))
    return TorchvisionPort(model, arch, width, num_classes, tuple(ops.loaders))
