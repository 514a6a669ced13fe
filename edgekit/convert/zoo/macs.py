"""Parameters and multiply-accumulates of a Keras model: the seed article's measures of a light model."""

from __future__ import annotations

from typing import Any

from edgekit.errors import ModelError

# BatchNormalization's running statistics are buffers, not parameters (torchvision and the papers agree).
_BUFFERS = ("moving_mean", "moving_variance")


def _leaf_layers(model: Any) -> list[Any]:
    import keras

    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def _size(shape: Any) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total


def _spatial(layer: Any, shape: Any) -> int:
    dims = tuple(shape)[1:-1]
    if any(d is None for d in dims):
        raise ModelError(
            f"layer '{layer.name}' has a dynamic spatial size {tuple(shape)}: multiply-adds need a fixed "
            "input size (pass --input-size)"
        )
    return _size(dims)


def _layer_macs(layer: Any) -> int:
    import keras

    layers = keras.layers
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        out = layer.output.shape
        return _spatial(layer, out) * int(out[-1]) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = int(layer.input.shape[-1])
        out = layer.output.shape
        return _spatial(layer, out) * (cin * layer.depth_multiplier * (kh * kw + int(out[-1])))
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = int(layer.input.shape[-1])
        out = layer.output.shape
        return _spatial(layer, out) * int(out[-1]) * kh * kw * cin // layer.groups
    if isinstance(layer, layers.Dense):
        shape = tuple(layer.input.shape)
        if any(d is None for d in shape[1:]):
            raise ModelError(f"layer '{layer.name}' has a dynamic input shape {shape}")
        return _size(shape[1:]) * layer.units
    return 0


def count_macs(model: Any) -> tuple[int, int]:
    """Counts parameters and multiply-accumulates (one image) of Conv2D, DepthwiseConv2D and Dense layers.

    Args:
        model: a built Keras 3 model with a fixed input size (nested models are walked).

    Returns:
        ``(params, macs)``: parameters exclude BatchNorm's running statistics (the figure papers and
        torchvision quote, e.g. 3,504,872 for MobileNetV2 1.0); MACs count convolutions and fully connected
        layers, as the MobileNet papers do (MobileNetV2 1.0/224: ~300M).

    Raises:
        ModelError: a layer's spatial size is not fixed.
    """
    params = 0
    macs = 0
    for layer in _leaf_layers(model):
        for weight in layer.weights:
            if not weight.path.endswith(_BUFFERS):
                params += _size(weight.shape)
        macs += _layer_macs(layer)
    return params, macs
