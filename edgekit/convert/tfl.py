"""Host-side TFLite helpers: quiet converter calls and a batch runner for float/int8 models (TensorFlow's own)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgekit.errors import MissingExtra

logger = logging.getLogger(__name__)


def import_tf() -> Any:
    """TensorFlow, imported on first use (about 7 s and 570 MB: never at module import time).

    Raises:
        MissingExtra: TensorFlow is not installed.
    """
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingExtra("TensorFlow (needed by edgekit convert)", "convert") from None
    return tf


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence what the converter prints (Keras' export summary) or warns about, so ``--json`` stays clean."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        # e.g. "Statistics for quantized inputs were expected": the input range is set on purpose
        warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow\..*")
        yield
    if sink.getvalue():
        logger.debug("converter said: %s", sink.getvalue()[-2000:])


def interpreter(model: bytes, preserve: bool = False) -> Any:
    """A TensorFlow-Lite interpreter for ``model`` (host side; the device uses edgekit.device.runtime).

    Without ``preserve`` it runs TensorFlow's default kernels (XNNPACK, OpResolverType.AUTO): on int8 models
    they give the same bits as ai_edge_litert 2.3.0, the device runtime (measured on Coral's MobileNetV1/V2
    and DeepLab and on edgekit-converted models, 21 photos each), while the builtin reference kernels differ
    from it by up to 33 output steps. So every fidelity figure and every recipe choice is about what the
    device computes. Intermediate tensors exist only in the builtin kernels (XNNPACK fuses them away).

    Args:
        model: flatbuffer bytes.
        preserve: keep every intermediate tensor readable (for activation statistics): builtin kernels.
    """
    tf = import_tf()
    from tensorflow.lite.python.interpreter import Interpreter

    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        # TF warns that tf.lite.Interpreter moves to LiteRT; on the host TF's own copy is the reference.
        warnings.simplefilter("ignore")
        interp = Interpreter(
            model_content=model,
            experimental_preserve_all_tensors=preserve,
            num_threads=2,
            experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES if preserve else resolver.AUTO,
        )
    interp.allocate_tensors()
    return interp


class Runner:
    """Runs a single-input classifier over uint8 images and returns float outputs (dequantized if needed)."""

    def __init__(self, model: bytes) -> None:
        self.interp = interpreter(model)
        self.input = self.interp.get_input_details()[0]
        self.output = self.interp.get_output_details()[0]

    def __call__(self, images: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Outputs for (N, H, W, 3) uint8 RGB images, as float32 (N, classes)."""
        results = []
        in_dtype = self.input["dtype"]
        in_scale, in_zero = self.input["quantization"]
        out_scale, out_zero = self.output["quantization"]
        for image in images:
            if in_dtype == np.float32:
                x = image.astype(np.float32)
            elif in_dtype == np.uint8 and (in_scale, in_zero) == (1.0, 0):
                x = image
            else:
                q = np.round(image.astype(np.float32) / in_scale + in_zero)
                info = np.iinfo(in_dtype)
                x = np.clip(q, info.min, info.max).astype(in_dtype)
            self.interp.set_tensor(self.input["index"], x[None])
            self.interp.invoke()
            y = self.interp.get_tensor(self.output["index"])[0]
            if y.dtype != np.float32:
                # via int64: (q - zero) on int8/uint8 would wrap around
                y = (y.astype(np.int64) - out_zero).astype(np.float32) * out_scale
            results.append(y.reshape(-1))
            if progress is not None:
                progress(1)
        return np.stack(results)
