"""Conversion of a detector SavedModel to TFLite, and checks and inference on the resulting flatbuffer."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgekit.convert.detect._tf import import_tf
from edgekit.convert.detect.metrics import ImageBoxes
from edgekit.errors import ModelError

logger = logging.getLogger(__name__)

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
OUTPUT_ROLES: tuple[str, str, str, str] = ("boxes", "classes", "scores", "count")


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor of a .tflite model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


@dataclass(frozen=True)
class DetectorTflite:
    """What a converted detector looks like from outside.

    Attributes:
        input: the image input.
        outputs: the four outputs in role order (`OUTPUT_ROLES`).
        ops: operator histogram (builtin names, custom ops by their custom code).
        max_detections: rows of the boxes output.
        postprocess: the fused op's attributes (num_classes, thresholds, scales...).
    """

    input: TensorInfo
    outputs: tuple[TensorInfo, ...]
    ops: dict[str, int]
    max_detections: int
    postprocess: dict[str, Any]


def convert_saved_model(
    saved_model_dir: str,
    representative: Callable[[], Iterator[list[npt.NDArray[np.float32]]]] | None,
) -> bytes:
    """Convert a detector SavedModel; full int8 with uint8 input when ``representative`` is given.

    The postprocess function is fused into ``TFLite_Detection_PostProcess`` by the converter; its outputs
    stay float32 (the op dequantizes), as in Coral's SSD models. The graph outputs are then put in the op's
    own order (boxes, classes, scores, count), which the TF2 converter does not preserve.

    Args:
        saved_model_dir: SavedModel directory with a ``serving_default`` signature.
        representative: calibration generator yielding ``[input]`` batches, or None for a float model.

    Returns:
        The .tflite flatbuffer.

    Raises:
        ModelError: the converter fails or does not produce the fused op.
    """
    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    try:
        flat = bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{saved_model_dir}: TFLite conversion failed: {first}") from None
    return reorder_outputs(flat)


def _read_model(flat: bytes) -> Any:
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(flat))


def _op_names(model: Any) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for code in model.operatorCodes:
        op = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if op == schema.BuiltinOperator.CUSTOM:
            raw = code.customCode
            names.append(raw.decode() if isinstance(raw, bytes) else str(raw))
        else:
            names.append(builtin.get(op, str(op)))
    return names


def postprocess_attrs(op: Any) -> dict[str, Any]:
    """The attributes of a ``TFLite_Detection_PostProcess`` operator (its flexbuffer custom options)."""
    from flatbuffers import flexbuffers

    raw = op.customOptions
    data = flexbuffers.Loads(bytes(bytearray(raw))) if raw is not None and len(raw) else {}
    if not isinstance(data, dict):
        raise ModelError(f"{POSTPROCESS_OP} has unreadable options")
    return dict(data)


def reorder_outputs(flat: bytes) -> bytes:
    """Make the model outputs the postprocess op's outputs in op order and name them like Coral's models.

    Args:
        flat: a .tflite flatbuffer containing ``TFLite_Detection_PostProcess``.

    Returns:
        The rewritten flatbuffer.

    Raises:
        ModelError: the op is not in the model.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = _read_model(flat)
    names = _op_names(model)
    graph = model.subgraphs[0]
    post = [op for op in graph.operators if names[op.opcodeIndex] == POSTPROCESS_OP]
    if len(post) != 1:
        raise ModelError(
            f"the converted model has {len(post)} {POSTPROCESS_OP} ops (expected 1); the SavedModel's "
            "postprocess function was not fused"
        )
    outs = [int(i) for i in post[0].outputs]
    graph.outputs = np.array(outs, dtype=np.int32)
    n = int(postprocess_attrs(post[0])["max_detections"])
    # The converter leaves these shapes empty (the op sizes them at Prepare); readers that only parse the
    # flatbuffer (edgekit inspect, the Edge TPU compiler's report) should see what the op will produce.
    shapes = [[1, n, 4], [1, n], [1, n], [1]]
    suffixes = ["", ":1", ":2", ":3"]
    for i, t in enumerate(outs):
        graph.tensors[t].name = (POSTPROCESS_OP + suffixes[i]).encode()
        graph.tensors[t].shape = np.array(shapes[i], dtype=np.int32)
    for sig in model.signatureDefs or []:
        by_tensor = {int(m.tensorIndex): m for m in sig.outputs}
        sig.outputs = [by_tensor[t] for t in outs if t in by_tensor]
        for m, role in zip(sig.outputs, OUTPUT_ROLES, strict=False):
            m.name = role.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def describe(flat: bytes) -> DetectorTflite:
    """Read the input, outputs and op histogram of a detector .tflite and check its shape.

    Args:
        flat: the flatbuffer.

    Returns:
        The description.

    Raises:
        ModelError: the fused op is missing or the outputs are not boxes, classes, scores, count.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = _read_model(flat)
    names = _op_names(model)
    graph = model.subgraphs[0]
    ops: dict[str, int] = {}
    for op in graph.operators:
        ops[names[op.opcodeIndex]] = ops.get(names[op.opcodeIndex], 0) + 1
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def info(index: int) -> TensorInfo:
        t = graph.tensors[index]
        q = t.quantization
        scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
        zp = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        return TensorInfo(name, tuple(int(d) for d in t.shape), type_names.get(t.type, str(t.type)), scale, zp)

    if ops.get(POSTPROCESS_OP, 0) != 1:
        raise ModelError(f"the model has no {POSTPROCESS_OP} op (ops: {', '.join(sorted(ops))})")
    post = next(op for op in graph.operators if names[op.opcodeIndex] == POSTPROCESS_OP)
    if [int(i) for i in graph.outputs] != [int(i) for i in post.outputs]:
        raise ModelError(f"the model's outputs are not the {POSTPROCESS_OP} outputs in op order")
    outputs = tuple(info(int(i)) for i in graph.outputs)
    attrs = postprocess_attrs(post)
    n = int(attrs.get("max_detections", -1))
    expected = [(1, n, 4), (1, n), (1, n), (1,)]
    if [o.shape for o in outputs] != expected or any(o.dtype != "float32" for o in outputs):
        raise ModelError(
            "detector outputs are "
            + ", ".join(f"{o.dtype}{list(o.shape)}" for o in outputs)
            + f"; expected float32 boxes [1,{n},4], classes [1,{n}], scores [1,{n}], count [1]"
        )
    return DetectorTflite(info(int(graph.inputs[0])), outputs, ops, n, attrs)


class TfliteDetector:
    """Runs a detector .tflite on prepared uint8 RGB images (the host-side evaluator, not the device runtime)."""

    def __init__(self, flat: bytes, input_mean: float = 127.5, input_std: float = 127.5) -> None:
        """Load the model.

        Args:
            flat: the flatbuffer.
            input_mean: pixel value mapped to 0 for float-input models.
            input_std: pixel units per 1.0 for float-input models.
        """
        tf, _ = import_tf()
        with warnings.catch_warnings():
            # TF 2.21 marks tf.lite.Interpreter deprecated in favour of ai_edge_litert; the host converter
            # already has TensorFlow loaded and the device runtime module must stay the only LiteRT importer.
            warnings.simplefilter("ignore", UserWarning)
            self._interp = tf.lite.Interpreter(model_content=flat, num_threads=2)
        self._interp.allocate_tensors()
        self._input = self._interp.get_input_details()[0]
        self._outputs = [d["index"] for d in self._interp.get_output_details()]
        self._mean = input_mean
        self._std = input_std

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input."""
        shape = self._input["shape"]
        return int(shape[1]), int(shape[2])

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the outputs as the interpreter allocated them, in model output order."""
        return [tuple(int(d) for d in detail["shape"]) for detail in self._interp.get_output_details()]

    def detect(self, image: npt.NDArray[np.uint8]) -> ImageBoxes:
        """Detect objects in one image already resized to the input size.

        Args:
            image: ``[H, W, 3]`` uint8 RGB.

        Returns:
            The detections, boxes normalised (ymin, xmin, ymax, xmax) and clipped to [0, 1].
        """
        x = image[None]
        if self._input["dtype"] != np.uint8:
            x = ((x.astype(np.float32) - self._mean) / self._std).astype(self._input["dtype"])
        self._interp.set_tensor(self._input["index"], x)
        self._interp.invoke()
        boxes, classes, scores, count = (self._interp.get_tensor(i) for i in self._outputs)
        n = int(count.reshape(-1)[0])
        return ImageBoxes.of(np.clip(boxes[0, :n], 0.0, 1.0), classes[0, :n].astype(np.int64), scores[0, :n])
