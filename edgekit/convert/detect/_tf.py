"""The one place the detector code imports TensorFlow and tf_keras (legacy Keras 2)."""

from __future__ import annotations

from typing import Any

from edgekit.errors import MissingExtra


def import_tf() -> tuple[Any, Any]:
    """Import TensorFlow and tf_keras for the detector.

    The SSD exporter needs legacy Keras: a Keras 3 model inside a ``tf.Module`` fails int8 calibration of the
    fused postprocess (READ_VARIABLE). Importing ``tf_keras`` by name gives legacy Keras whatever
    ``TF_USE_LEGACY_KERAS`` says, so the detector works in a process where TensorFlow was already imported
    with Keras 3 (tested: conversion fuses and calibrates with ``TF_USE_LEGACY_KERAS=0``). The variable is
    deliberately not set here: it would silently switch ``tf.keras`` for the classification converter
    sharing the process.

    Returns:
        (tensorflow module, tf_keras module).

    Raises:
        MissingExtra: TensorFlow or tf-keras is not installed.
    """
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError:
        raise MissingExtra("TensorFlow with tf-keras", "convert") from None
    return tf, tf_keras
