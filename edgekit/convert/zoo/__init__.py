"""Built-in MobileNets for ``edgekit convert``: Keras applications and exact ports of torchvision's models.

Entry point: ``load_builtin(arch, alpha, input_size, weights) -> ZooModel``. Importing this package is light;
TensorFlow/Keras are imported when a model is built.
"""

from edgekit.convert.zoo.builtin import ARCHS, WEIGHT_SOURCES, ZooModel, load_builtin
from edgekit.convert.zoo.keras_apps import keras_preprocessing
from edgekit.convert.zoo.macs import count_macs
from edgekit.convert.zoo.torchcheckpoint import load_checkpoint, load_state_dict
from edgekit.convert.zoo.torchvision_mobilenet import (
    IMAGENET_CROP,
    IMAGENET_CROP_FRACTION,
    IMAGENET_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_RESIZE,
    IMAGENET_STD,
    TORCHVISION_ARCHS,
    torchvision_imagenet_preprocess,
)
from edgekit.convert.zoo.weights import TORCHVISION_IMAGENET, imagenet_labels, torchvision_imagenet_checkpoint

__all__ = [
    "ARCHS",
    "IMAGENET_CROP",
    "IMAGENET_CROP_FRACTION",
    "IMAGENET_INTERPOLATION",
    "IMAGENET_MEAN",
    "IMAGENET_RESIZE",
    "IMAGENET_STD",
    "TORCHVISION_ARCHS",
    "TORCHVISION_IMAGENET",
    "WEIGHT_SOURCES",
    "ZooModel",
    "count_macs",
    "imagenet_labels",
    "keras_preprocessing",
    "load_builtin",
    "load_checkpoint",
    "load_state_dict",
    "torchvision_imagenet_checkpoint",
    "torchvision_imagenet_preprocess",
]
