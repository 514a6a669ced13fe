"""The one place the detector code imports TensorFlow and tf_keras (legacy Keras 2)."""

from __future__ import annotations

import os
import sys
from typing import Any

from edgekit.errors import MissingExtra


def import_tf() -> tuple[Any, Any]:
    """Import TensorFlow and tf_keras for the detector.

    The SSD exporter needs legacy Keras: a Keras 3 model inside a ``tf.Module`` fails int8 calibration of the
    fused postprocess (READ_VARIABLE). We import ``tf_keras`` by name, which is legacy Keras whatever
    ``TF_USE_LEGACY_KERAS`` says, and set that variable only when TensorFlow is not loaded yet so that
    ``tf.keras`` in this process agrees with it; a process that already chose Keras 3 keeps working.

    Returns:
        (tensorflow module, tf_keras module).

    Raises:
        MissingExtra: TensorFlow or tf-keras is not installed.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError:
        raise MissingExtra("TensorFlow with tf-keras", "convert") from None
    return tf, tf_keras
