"""Reading a detector SavedModel without running it: its serving signature and fused-postprocess attributes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.convert.detect._tf import import_tf
from edgekit.errors import InputError, ModelError

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class DetectorSavedModel:
    """A SavedModel in the layout of the TF OD API's ``export_tflite_graph_tf2``.

    Attributes:
        path: the SavedModel directory.
        input_name: name of the image input of ``serving_default``.
        input_shape: ``(1, height, width, channels)``.
        postprocess: attributes of the postprocess function (num_classes, max_detections, nms thresholds,
            scales, ...).
    """

    path: Path
    input_name: str
    input_shape: tuple[int, ...]
    postprocess: dict[str, Any]

    @property
    def num_classes(self) -> int:
        """Object classes the postprocess reports (background excluded)."""
        return int(self.postprocess["num_classes"])

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input."""
        return int(self.input_shape[1]), int(self.input_shape[2])


def read_detector_saved_model(path: str | Path) -> DetectorSavedModel:
    """Check that ``path`` is a SavedModel ending in the fused postprocess function and read its signature.

    Only the graph protocol buffer is parsed; nothing is loaded or run.

    Args:
        path: the SavedModel directory.

    Returns:
        The detector's signature and postprocess attributes.

    Raises:
        InputError: ``path`` is not a SavedModel directory.
        ModelError: no postprocess function (says what was found instead), or an input that is not one
            fixed-size float image.
    """
    from tensorflow.core.framework import types_pb2

    root = Path(path)
    graph = _load_graph(root)
    signatures = dict(graph.signature_def)

    def dtype(enum: int) -> str:
        return str(types_pb2.DataType.Name(enum)).removeprefix("DT_").lower()

    def shape(info: Any) -> tuple[int, ...]:
        if info.tensor_shape.unknown_rank:
            return ()
        return tuple(int(d.size) for d in info.tensor_shape.dim)

    def found() -> str:
        if SIGNATURE not in signatures:
            return f"signatures: {', '.join(sorted(signatures)) or 'none'}"
        sig = signatures[SIGNATURE]
        ins = ", ".join(f"{n} {list(shape(i))} {dtype(i.dtype)}" for n, i in sorted(sig.inputs.items()))
        outs = ", ".join(f"{n} {list(shape(i))}" for n, i in sorted(sig.outputs.items()))
        return f"{SIGNATURE} takes {ins} and returns {outs}"

    attrs = _postprocess_attrs(graph)
    if attrs is None:
        raise ModelError(
            f"{root}: no {POSTPROCESS_OP} function, so this is not an SSD exported for TFLite "
            f"(export_tflite_graph_tf2); found {found()}. If it is a classifier, use --task classify"
        )
    if "num_classes" not in attrs:
        raise ModelError(f"{root}: the {POSTPROCESS_OP} function has no num_classes attribute")
    if SIGNATURE not in signatures:
        raise ModelError(f"{root}: no '{SIGNATURE}' signature ({found()})")
    inputs = dict(signatures[SIGNATURE].inputs)
    if len(inputs) != 1:
        raise ModelError(f"{root}: a detector takes one image input; {found()}")
    name, info = next(iter(inputs.items()))
    dims = shape(info)
    if len(dims) != 4 or dims[0] != 1 or min(dims[1:3]) <= 0 or dims[3] != 3 or dtype(info.dtype) != "float":
        raise ModelError(
            f"{root}: input {name} is {list(dims)} {dtype(info.dtype)}; the TFLite detector layout takes one "
            "float32 image [1, height, width, 3] of fixed size (export_tflite_graph_tf2 exports it so)"
        )
    return DetectorSavedModel(root, name, dims, attrs)


def is_detector_saved_model(path: str | Path) -> bool:
    """Whether ``path`` is a SavedModel with the fused postprocess function (for choosing ``--task``).

    Args:
        path: a directory.

    Returns:
        True when the graph holds a function implementing ``TFLite_Detection_PostProcess``.
    """
    try:
        graph = _load_graph(Path(path))
    except (InputError, ModelError):
        return False
    return _postprocess_attrs(graph) is not None


def _load_graph(root: Path) -> Any:
    import_tf()
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    pb, pbtxt = root / "saved_model.pb", root / "saved_model.pbtxt"
    proto = saved_model_pb2.SavedModel()
    if not (pb.is_file() or pbtxt.is_file()):
        raise InputError(f"{root}: not a SavedModel directory (no saved_model.pb)")
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        else:
            text_format.Parse(pbtxt.read_text(encoding="utf-8"), proto)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ModelError(f"{root}: unreadable SavedModel ({exc})") from None
    except Exception as exc:  # protobuf's DecodeError is not exported under a stable name
        raise ModelError(f"{root}: unreadable SavedModel ({type(exc).__name__})") from None
    if not proto.meta_graphs:
        raise ModelError(f"{root}: SavedModel has no graph")
    return proto.meta_graphs[0]


def _postprocess_attrs(graph: Any) -> dict[str, Any] | None:
    from google.protobuf import text_format
    from tensorflow.core.framework import attr_value_pb2

    for func in graph.graph_def.library.function:
        value = func.attr.get("_implements")
        if value is None:
            continue
        # tf.function stores a NameAttrList text as a func attr; a bare name stays a string.
        spec = attr_value_pb2.NameAttrList()
        if value.HasField("func"):
            spec = value.func
        elif value.s:
            try:
                text_format.Parse(value.s.decode("utf-8", "replace"), spec)
            except text_format.ParseError:
                spec.name = value.s.decode("utf-8", "replace")
        if spec.name == POSTPROCESS_OP:
            return {k: _attr_value(v) for k, v in spec.attr.items()}
    return None


def _attr_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode("utf-8", "replace")
    return getattr(value, kind) if kind else None
