"""Read a .tflite FlatBuffer (tensors, operators, op versions, metadata) without TensorFlow or an interpreter.

The reader follows TensorFlow Lite's ``schema.fbs`` (field numbers are the schema's, quoted beside each read) and
checks every offset against the file, so random bytes or a truncated download end in `ModelError`, never in an
``IndexError`` or a crash inside C++. Only what edgekit needs is decoded; unknown fields are ignored, as the
FlatBuffer rules intend, so newer schema versions still read.

It also decodes the Edge TPU compiler's ``edgetpu-custom-op``: its custom options are a FlexBuffer map whose key
"4" holds a DarwiNN ``Package`` FlatBuffer (identifier ``DWN1``, libedgetpu ``executable/executable.fbs``) that
records the minimum Edge TPU runtime version the compiled model needs.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edgekit.errors import InputError, ModelError

logger = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"

# TensorType in schema.fbs, by value.
TENSOR_TYPES: tuple[str, ...] = (
    "float32", "float16", "int32", "uint8", "int64", "string", "bool", "int16", "complex64", "int8",
    "float64", "complex128", "uint64", "resource", "variant", "uint32", "uint16", "int4", "bfloat16",
    "int2", "uint4", "float8_e4m3fn",
)  # fmt: skip
_DTYPE_BYTES = {
    "float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2, "complex64": 8,
    "int8": 1, "float64": 8, "complex128": 16, "uint64": 8, "uint32": 4, "uint16": 2, "bfloat16": 2,
}  # fmt: skip

_NUMPY_TYPES = frozenset(_DTYPE_BYTES) - {"bfloat16"}

# BuiltinOperator in schema.fbs, by value (0..209 as of TensorFlow 2.21). Later values read as BUILTIN_<n>.
BUILTIN_OPS: tuple[str, ...] = (
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE", "DEQUANTIZE",
    "EMBEDDING_LOOKUP", "FLOOR", "FULLY_CONNECTED", "HASHTABLE_LOOKUP", "L2_NORMALIZATION", "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION", "LOGISTIC", "LSH_PROJECTION", "LSTM", "MAX_POOL_2D", "MUL", "RELU",
    "RELU_N1_TO_1", "RELU6", "RESHAPE", "RESIZE_BILINEAR", "RNN", "SOFTMAX", "SPACE_TO_DEPTH", "SVDF", "TANH",
    "CONCAT_EMBEDDINGS", "SKIP_GRAM", "CALL", "CUSTOM", "EMBEDDING_LOOKUP_SPARSE", "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "GATHER", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TRANSPOSE", "MEAN",
    "SUB", "DIV", "SQUEEZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP", "TOPK_V2", "SPLIT", "LOG_SOFTMAX", "DELEGATE", "BIDIRECTIONAL_SEQUENCE_LSTM", "CAST", "PRELU",
    "MAXIMUM", "ARG_MAX", "MINIMUM", "LESS", "NEG", "PADV2", "GREATER", "GREATER_EQUAL", "LESS_EQUAL",
    "SELECT", "SLICE", "SIN", "TRANSPOSE_CONV", "SPARSE_TO_DENSE", "TILE", "EXPAND_DIMS", "EQUAL",
    "NOT_EQUAL", "LOG", "SUM", "SQRT", "RSQRT", "SHAPE", "POW", "ARG_MIN", "FAKE_QUANT", "REDUCE_PROD",
    "REDUCE_MAX", "PACK", "LOGICAL_OR", "ONE_HOT", "LOGICAL_AND", "LOGICAL_NOT", "UNPACK", "REDUCE_MIN",
    "FLOOR_DIV", "REDUCE_ANY", "SQUARE", "ZEROS_LIKE", "FILL", "FLOOR_MOD", "RANGE", "RESIZE_NEAREST_NEIGHBOR",
    "LEAKY_RELU", "SQUARED_DIFFERENCE", "MIRROR_PAD", "ABS", "SPLIT_V", "UNIQUE", "CEIL", "REVERSE_V2",
    "ADD_N", "GATHER_ND", "COS", "WHERE", "RANK", "ELU", "REVERSE_SEQUENCE", "MATRIX_DIAG", "QUANTIZE",
    "MATRIX_SET_DIAG", "ROUND", "HARD_SWISH", "IF", "WHILE", "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5", "SCATTER_ND", "SELECT_V2", "DENSIFY", "SEGMENT_SUM", "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES", "CUMSUM", "CALL_ONCE", "BROADCAST_TO", "RFFT2D", "CONV_3D", "IMAG",
    "REAL", "COMPLEX_ABS", "HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "REDUCE_ALL",
    "CONV_3D_TRANSPOSE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL", "BUCKETIZE", "RANDOM_UNIFORM", "MULTINOMIAL", "GELU", "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1", "UNSORTED_SEGMENT_PROD", "UNSORTED_SEGMENT_MAX", "UNSORTED_SEGMENT_SUM", "ATAN2",
    "UNSORTED_SEGMENT_MIN", "SIGN", "BITCAST", "BITWISE_XOR", "RIGHT_SHIFT", "STABLEHLO_LOGISTIC",
    "STABLEHLO_ADD", "STABLEHLO_DIVIDE", "STABLEHLO_MULTIPLY", "STABLEHLO_MAXIMUM", "STABLEHLO_RESHAPE",
    "STABLEHLO_CLAMP", "STABLEHLO_CONCATENATE", "STABLEHLO_BROADCAST_IN_DIM", "STABLEHLO_CONVOLUTION",
    "STABLEHLO_SLICE", "STABLEHLO_CUSTOM_CALL", "STABLEHLO_REDUCE", "STABLEHLO_ABS", "STABLEHLO_AND",
    "STABLEHLO_COSINE", "STABLEHLO_EXPONENTIAL", "STABLEHLO_FLOOR", "STABLEHLO_LOG", "STABLEHLO_MINIMUM",
    "STABLEHLO_NEGATE", "STABLEHLO_OR", "STABLEHLO_POWER", "STABLEHLO_REMAINDER", "STABLEHLO_RSQRT",
    "STABLEHLO_SELECT", "STABLEHLO_SUBTRACT", "STABLEHLO_TANH", "STABLEHLO_SCATTER", "STABLEHLO_COMPARE",
    "STABLEHLO_CONVERT", "STABLEHLO_DYNAMIC_SLICE", "STABLEHLO_DYNAMIC_UPDATE_SLICE", "STABLEHLO_PAD",
    "STABLEHLO_IOTA", "STABLEHLO_DOT_GENERAL", "STABLEHLO_REDUCE_WINDOW", "STABLEHLO_SORT", "STABLEHLO_WHILE",
    "STABLEHLO_GATHER", "STABLEHLO_TRANSPOSE", "DILATE", "STABLEHLO_RNG_BIT_GENERATOR", "REDUCE_WINDOW",
    "STABLEHLO_COMPOSITE", "STABLEHLO_SHIFT_LEFT", "STABLEHLO_CBRT", "STABLEHLO_CASE",
)  # fmt: skip
_CUSTOM = 32
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127

ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")
PADDINGS = ("SAME", "VALID")

# Scalar builtin options worth knowing for the Edge TPU rules: op name -> (field name, schema field number,
# struct format, default). Enum-valued fields are turned into names below.
_OPTION_FIELDS: dict[str, tuple[tuple[str, int, str, Any], ...]] = {
    "CONV_2D": (
        ("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0),
        ("fused_activation_function", 3, "b", 0), ("dilation_w_factor", 4, "i", 1), ("dilation_h_factor", 5, "i", 1),
    ),
    "DEPTHWISE_CONV_2D": (
        ("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), ("depth_multiplier", 3, "i", 0),
        ("fused_activation_function", 4, "b", 0), ("dilation_w_factor", 5, "i", 1), ("dilation_h_factor", 6, "i", 1),
    ),
    "AVERAGE_POOL_2D": (
        ("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), ("filter_width", 3, "i", 0),
        ("filter_height", 4, "i", 0), ("fused_activation_function", 5, "b", 0),
    ),
    "FULLY_CONNECTED": (("fused_activation_function", 0, "b", 0), ("keep_num_dims", 2, "?", False)),
    "ADD": (("fused_activation_function", 0, "b", 0),),
    "SUB": (("fused_activation_function", 0, "b", 0),),
    "MUL": (("fused_activation_function", 0, "b", 0),),
    "CONCATENATION": (("axis", 0, "i", 0), ("fused_activation_function", 1, "b", 0)),
    "RESIZE_BILINEAR": (("align_corners", 2, "?", False), ("half_pixel_centers", 3, "?", False)),
    "RESIZE_NEAREST_NEIGHBOR": (("align_corners", 0, "?", False), ("half_pixel_centers", 1, "?", False)),
    "SOFTMAX": (("beta", 0, "f", 0.0),),
    "TRANSPOSE_CONV": (("padding", 0, "b", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0)),
    "STRIDED_SLICE": (
        ("begin_mask", 0, "i", 0), ("end_mask", 1, "i", 0), ("ellipsis_mask", 2, "i", 0), ("new_axis_mask", 3, "i", 0),
        ("shrink_axis_mask", 4, "i", 0), ("offset", 5, "?", False),
    ),
    "PACK": (("values_count", 0, "i", 0), ("axis", 1, "i", 0)),
    "UNPACK": (("num", 0, "i", 0), ("axis", 1, "i", 0)),
    "SPLIT": (("num_splits", 0, "i", 0),),
    "MEAN": (("keep_dims", 0, "?", False),),
    "SUM": (("keep_dims", 0, "?", False),),
    "REDUCE_MAX": (("keep_dims", 0, "?", False),),
    "REDUCE_MIN": (("keep_dims", 0, "?", False),),
    "GATHER": (("axis", 0, "i", 0), ("batch_dims", 1, "i", 0)),
}  # fmt: skip
_OPTION_FIELDS["MAX_POOL_2D"] = _OPTION_FIELDS["AVERAGE_POOL_2D"]
_OPTION_FIELDS["L2_POOL_2D"] = _OPTION_FIELDS["AVERAGE_POOL_2D"]
_ENUM_OPTIONS = {"padding": PADDINGS, "fused_activation_function": ACTIVATIONS}


class _Corrupt(Exception):
    """Raised inside the reader; `read_model` turns it into one ModelError naming the file."""


# --- FlatBuffer primitives ---------------------------------------------------------------------------------


class _Buf:
    """Bounds-checked little-endian reads over the file's bytes."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.size = len(self.data)

    def unpack(self, fmt: str, pos: int) -> Any:
        width = struct.calcsize("<" + fmt)
        if pos < 0 or pos + width > self.size:
            raise _Corrupt(f"read of {width} bytes at offset {pos} runs past the end ({self.size} bytes)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return int(self.unpack("I", pos))

    def bytes_at(self, pos: int, length: int) -> bytes:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise _Corrupt(f"{length} bytes at offset {pos} run past the end ({self.size} bytes)")
        return bytes(self.data[pos : pos + length])


class _Table:
    """One FlatBuffer table: a position and its vtable."""

    __slots__ = ("buf", "pos", "vtable", "vtable_size")

    def __init__(self, buf: _Buf, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - int(buf.unpack("i", pos))
        self.vtable = vtable
        self.vtable_size = int(buf.unpack("H", vtable))
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise _Corrupt(f"table at offset {pos} has a malformed vtable")
        buf.unpack("H", vtable + self.vtable_size - 2)  # the whole vtable lies inside the file

    def _field(self, number: int) -> int:
        """Absolute position of field ``number``, or 0 when absent (the default applies)."""
        slot = 4 + 2 * number
        if slot >= self.vtable_size:
            return 0
        rel = int(self.buf.unpack("H", self.vtable + slot))
        return self.pos + rel if rel else 0

    def scalar(self, number: int, fmt: str, default: Any) -> Any:
        pos = self._field(number)
        return self.buf.unpack(fmt, pos) if pos else default

    def _indirect(self, pos: int) -> int:
        return pos + self.buf.u32(pos)

    def table(self, number: int) -> _Table | None:
        pos = self._field(number)
        return _Table(self.buf, self._indirect(pos)) if pos else None

    def _vector(self, number: int, element_size: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self._field(number)
        if not pos:
            return 0, 0
        start = self._indirect(pos)
        length = self.buf.u32(start)
        if start + 4 + length * element_size > self.buf.size:
            raise _Corrupt(f"vector of {length} elements at offset {start} runs past the end of the file")
        return start + 4, length

    def string(self, number: int) -> str | None:
        start, length = self._vector(number, 1)
        if not start:
            return None
        return self.buf.bytes_at(start, length).decode("utf-8", errors="replace")

    def blob(self, number: int) -> bytes | None:
        start, length = self._vector(number, 1)
        return self.buf.bytes_at(start, length) if start else None

    def blob_span(self, number: int) -> tuple[int, int]:
        """(start, length) of a [ubyte] field without copying it."""
        return self._vector(number, 1)

    def scalars(self, number: int, fmt: str) -> tuple[Any, ...]:
        width = struct.calcsize("<" + fmt)
        start, length = self._vector(number, width)
        if not start:
            return ()
        return struct.unpack_from(f"<{length}{fmt}", self.buf.data, start)

    def tables(self, number: int) -> list[_Table]:
        start, length = self._vector(number, 4)
        return [_Table(self.buf, self._indirect(start + 4 * i)) for i in range(length)]

    def has(self, number: int) -> bool:
        return bool(self._field(number))


# --- the model, as edgekit sees it -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorQuantization:
    """Affine quantization: real = scale * (q - zero_point); per-axis when there is more than one scale."""

    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def is_quantized(self) -> bool:
        return bool(self.scale) and any(s != 0.0 for s in self.scale)

    @property
    def per_axis(self) -> bool:
        return len(self.scale) > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: scalars for per-tensor, lists plus the axis for per-axis quantization."""
        if not self.is_quantized:
            return {}
        if not self.per_axis:
            return {"scale": self.scale[0], "zero_point": self.zero_point[0] if self.zero_point else 0}
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.quantized_dimension}


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: TensorQuantization
    buffer: int
    buffer_bytes: int
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False

    @property
    def is_constant(self) -> bool:
        """Holds data in the file (weights, biases, shape operands)."""
        return self.buffer_bytes > 0

    @property
    def is_dynamic(self) -> bool:
        """A dimension is unknown until runtime (-1 in the shape signature), e.g. a free batch size."""
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)

    @property
    def nbytes(self) -> int:
        """Bytes this tensor takes at runtime with its static shape (0 for types without a fixed size)."""
        count = 1
        for dim in self.shape:
            count *= max(dim, 0)
        return count * _DTYPE_BYTES.get(self.dtype, 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {"index": self.index, "name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.is_dynamic and self.shape_signature is not None:
            out["shape_signature"] = list(self.shape_signature)
        quant = self.quantization.to_dict()
        if quant:
            out["quantization"] = quant
        return out


@dataclass(frozen=True)
class Operator:
    """One operator of a subgraph: the builtin (or custom) op, its version and its tensors."""

    index: int
    builtin: str
    custom_code: str | None
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    custom_options: bytes = b""

    @property
    def name(self) -> str:
        """The op as users know it: the builtin name, or the custom op's code (``TFLite_Detection_PostProcess``)."""
        return self.custom_code if self.builtin == "CUSTOM" and self.custom_code else self.builtin

    @property
    def is_custom(self) -> bool:
        return self.builtin == "CUSTOM"


@dataclass(frozen=True)
class Subgraph:
    """A subgraph: tensors, operators in execution order, inputs and outputs (tensor indices)."""

    index: int
    name: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def input_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    def output_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.outputs)

    def tensor(self, index: int) -> Tensor | None:
        """The tensor at ``index``, or None for an omitted optional operand (index -1)."""
        return self.tensors[index] if 0 <= index < len(self.tensors) else None


@dataclass(frozen=True)
class EdgeTpuOpData:
    """What an ``edgetpu-custom-op`` says about its compiled executable."""

    op_index: int
    subgraph: int
    version: int
    min_runtime_version: int | None
    compiler_version: str | None
    model_identifier: str | None
    executable_bytes: int
    num_executables: int


@dataclass(frozen=True)
class Model:
    """A parsed .tflite file."""

    path: str
    size: int
    schema_version: int
    description: str
    subgraphs: tuple[Subgraph, ...]
    metadata: Mapping[str, bytes]
    signatures: tuple[str, ...] = ()
    edgetpu: tuple[EdgeTpuOpData, ...] = ()
    # The file's bytes and each buffer's (start, length) in them, for reading constants on demand.
    _data: bytes = field(default=b"", repr=False, compare=False)
    _buffer_spans: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    def constant(self, tensor: Tensor) -> Any:
        """The data of a constant tensor as a numpy array of its shape, or None for activations.

        Args:
            tensor: a tensor of this model.

        Returns:
            A read-only array, or None when the tensor has no data or a type numpy cannot hold.
        """
        import numpy as np

        if not 0 <= tensor.buffer < len(self._buffer_spans) or tensor.dtype not in _NUMPY_TYPES:
            return None
        start, length = self._buffer_spans[tensor.buffer]
        itemsize = _DTYPE_BYTES[tensor.dtype]
        if not length or length % itemsize:
            return None
        values = np.frombuffer(
            self._data, dtype=np.dtype(tensor.dtype).newbyteorder("<"), count=length // itemsize, offset=start
        )
        count = 1
        for dim in tensor.shape:
            count *= dim
        return values.reshape(tensor.shape) if count == values.size else values

    @property
    def main(self) -> Subgraph:
        """Subgraph 0: the one the interpreter runs (others are bodies of control-flow ops)."""
        return self.subgraphs[0]

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        return self.main.input_tensors()

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return self.main.output_tensors()

    @property
    def operators(self) -> tuple[Operator, ...]:
        return self.main.operators

    def has_op(self, name: str) -> bool:
        """Whether any subgraph uses the op (builtin name or custom code)."""
        return any(op.name == name for sg in self.subgraphs for op in sg.operators)

    @property
    def is_edgetpu_compiled(self) -> bool:
        """Compiled by ``edgetpu_compiler`` (at least one ``edgetpu-custom-op``)."""
        return self.has_op(EDGETPU_CUSTOM_OP)

    @property
    def min_runtime_version(self) -> str | None:
        """TFLite's own ``min_runtime_version`` metadata (e.g. ``1.14.0``), when the converter wrote it."""
        raw = self.metadata.get("min_runtime_version")
        return raw.rstrip(b"\0").decode("ascii", errors="replace") if raw else None

    @property
    def edgetpu_runtime_required(self) -> int | None:
        """The Edge TPU runtime version the compiled executables need (highest over all custom ops)."""
        versions = [d.min_runtime_version for d in self.edgetpu if d.min_runtime_version is not None]
        return max(versions) if versions else None


def op_histogram(model: Model, subgraph: int | None = 0) -> dict[str, int]:
    """Count operators by name.

    Args:
        model: a parsed model.
        subgraph: the subgraph to count, or None for all subgraphs.

    Returns:
        ``{op name: count}``, most frequent first (ties by name).
    """
    graphs = model.subgraphs if subgraph is None else model.subgraphs[subgraph : subgraph + 1]
    counts = Counter(op.name for sg in graphs for op in sg.operators)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def read_model(path: str | Path) -> Model:
    """Read and parse a .tflite file.

    Args:
        path: the model file.

    Returns:
        The parsed model.

    Raises:
        InputError: the file does not exist or cannot be read.
        ModelError: the file is not a TFLite model, or is truncated or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; give the .tflite file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read model ({exc.strerror})") from None
    return parse_model(data, str(path))


def parse_model(data: bytes, name: str = "<bytes>") -> Model:
    """Parse the bytes of a .tflite file.

    Args:
        data: the whole file.
        name: what to call the model in errors.

    Returns:
        The parsed model.

    Raises:
        ModelError: not a TFLite FlatBuffer, or truncated/corrupt.
    """
    if len(data) < 16:
        raise ModelError(f"{name}: {len(data)} bytes is too short to be a TFLite model; the file is truncated")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{name}: not a TFLite model (no 'TFL3' identifier at byte 4)")
    try:
        return _parse(_Buf(data), name)
    except _Corrupt as exc:
        raise ModelError(f"{name}: corrupt or truncated TFLite model ({exc}); re-export or re-download it") from None
    except (struct.error, UnicodeDecodeError, ValueError, OverflowError, RecursionError) as exc:
        raise ModelError(f"{name}: corrupt TFLite model ({type(exc).__name__}: {exc})") from None


T = TypeVar("T")


def _each(items: list[_Table], build: Callable[[int, _Table], T]) -> Iterator[T]:
    for i, item in enumerate(items):
        yield build(i, item)


def _parse(buf: _Buf, name: str) -> Model:
    root = _Table(buf, buf.u32(0))
    schema_version = int(root.scalar(0, "I", 0))  # Model.version
    opcodes = [_opcode(t) for t in root.tables(1)]  # Model.operator_codes
    buffers = root.tables(4)  # Model.buffers
    spans = tuple(_buffer_span(t, buf.size) for t in buffers)
    buffer_sizes = [length for _, length in spans]
    description = root.string(3) or ""  # Model.description

    subgraphs = tuple(
        _each(root.tables(2), lambda i, t: _subgraph(i, t, opcodes, buffer_sizes))  # Model.subgraphs
    )
    if not subgraphs:
        raise _Corrupt("no subgraphs")

    metadata: dict[str, bytes] = {}
    for entry in root.tables(6):  # Model.metadata: Metadata { name: string (0); buffer: uint (1) }
        key = entry.string(0) or ""
        index = int(entry.scalar(1, "I", 0))
        if index < len(buffers):
            start, length = spans[index]
            metadata[key] = buf.bytes_at(start, length)

    signatures = tuple(sig.string(2) or "" for sig in root.tables(7))  # SignatureDef.signature_key

    edgetpu = tuple(
        _edgetpu_op_data(sg.index, op)
        for sg in subgraphs
        for op in sg.operators
        if op.is_custom and op.custom_code == EDGETPU_CUSTOM_OP
    )
    return Model(
        path=name,
        size=buf.size,
        schema_version=schema_version,
        description=description,
        subgraphs=subgraphs,
        metadata=metadata,
        signatures=signatures,
        edgetpu=edgetpu,
        _data=bytes(buf.data),
        _buffer_spans=spans,
    )


def _opcode(table: _Table) -> tuple[str, str | None, int]:
    # OperatorCode: deprecated_builtin_code byte (0), custom_code (1), version int = 1 (2), builtin_code int (3).
    # Codes above 127 live only in builtin_code; older files have only the deprecated byte. The larger wins.
    deprecated = int(table.scalar(0, "b", 0))
    code = max(deprecated, int(table.scalar(3, "i", 0)))
    builtin = BUILTIN_OPS[code] if 0 <= code < len(BUILTIN_OPS) else f"BUILTIN_{code}"
    custom = table.string(1) if code == _CUSTOM else None
    version = int(table.scalar(2, "i", 1))
    return builtin, custom, version


def _buffer_span(table: _Table, file_size: int) -> tuple[int, int]:
    # Buffer: data [ubyte] (0); offset ulong (1), size ulong (2) for models over 2 GB that keep data after the
    # FlatBuffer. An offset of 0 or 1 means "no external data" in the schema's convention.
    start, length = table.blob_span(0)
    if length:
        return start, length
    offset = int(table.scalar(1, "Q", 0))
    size = int(table.scalar(2, "Q", 0))
    if offset <= 1 or not size:
        return 0, 0
    if offset + size > file_size:
        raise _Corrupt(f"buffer data at offset {offset} ({size} bytes) lies beyond the end of the file")
    return offset, size


def _subgraph(
    index: int, table: _Table, opcodes: list[tuple[str, str | None, int]], buffer_sizes: list[int]
) -> Subgraph:
    # SubGraph: tensors (0), inputs (1), outputs (2), operators (3), name (4).
    tensors = tuple(_each(table.tables(0), lambda i, t: _tensor(i, t, buffer_sizes)))
    inputs = tuple(int(v) for v in table.scalars(1, "i"))
    outputs = tuple(int(v) for v in table.scalars(2, "i"))
    for t in (*inputs, *outputs):
        if not 0 <= t < len(tensors):
            raise _Corrupt(f"subgraph {index} names tensor {t} as input/output but has {len(tensors)} tensors")
    operators = tuple(_each(table.tables(3), lambda i, t: _operator(i, t, opcodes, len(tensors))))
    return Subgraph(index, table.string(4) or "", tensors, operators, inputs, outputs)


def _tensor(index: int, table: _Table, buffer_sizes: list[int]) -> Tensor:
    # Tensor: shape (0), type (1), buffer uint (2), name (3), quantization (4), is_variable (5),
    # sparsity (6), shape_signature (7).
    type_code = int(table.scalar(1, "b", 0))
    dtype = TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"type{type_code}"
    buffer = int(table.scalar(2, "I", 0))
    buffer_bytes = buffer_sizes[buffer] if 0 <= buffer < len(buffer_sizes) else 0
    signature = table.scalars(7, "i") if table.has(7) else None
    quant_table = table.table(4)
    quant = TensorQuantization()
    if quant_table is not None:
        # QuantizationParameters: min (0), max (1), scale (2), zero_point long (3), ..., quantized_dimension (6).
        quant = TensorQuantization(
            scale=tuple(float(s) for s in quant_table.scalars(2, "f")),
            zero_point=tuple(int(z) for z in quant_table.scalars(3, "q")),
            quantized_dimension=int(quant_table.scalar(6, "i", 0)),
        )
    return Tensor(
        index=index,
        name=table.string(3) or "",
        shape=tuple(int(d) for d in table.scalars(0, "i")),
        dtype=dtype,
        quantization=quant,
        buffer=buffer,
        buffer_bytes=buffer_bytes,
        shape_signature=tuple(int(d) for d in signature) if signature is not None else None,
        is_variable=bool(table.scalar(5, "?", False)),
    )


def _operator(index: int, table: _Table, opcodes: list[tuple[str, str | None, int]], n_tensors: int) -> Operator:
    # Operator: opcode_index uint (0), inputs (1), outputs (2), builtin_options_type (3), builtin_options (4),
    # custom_options [ubyte] (5).
    opcode_index = int(table.scalar(0, "I", 0))
    if opcode_index >= len(opcodes):
        raise _Corrupt(f"operator {index} uses opcode {opcode_index} of {len(opcodes)}")
    builtin, custom, version = opcodes[opcode_index]
    inputs = tuple(int(v) for v in table.scalars(1, "i"))
    outputs = tuple(int(v) for v in table.scalars(2, "i"))
    for t in (*inputs, *outputs):
        if not -1 <= t < n_tensors:
            raise _Corrupt(f"operator {index} ({custom or builtin}) names tensor {t} of {n_tensors}")
    options: dict[str, Any] = {}
    spec = _OPTION_FIELDS.get(builtin)
    options_table = table.table(4) if spec else None
    if spec and options_table is not None:
        for key, number, fmt, default in spec:
            value = options_table.scalar(number, fmt, default)
            names = _ENUM_OPTIONS.get(key)
            if names is not None:
                value = names[value] if 0 <= value < len(names) else str(value)
            options[key] = value
    custom_options = (table.blob(5) or b"") if builtin == "CUSTOM" else b""
    return Operator(index, builtin, custom, version, inputs, outputs, options, custom_options)


# --- the Edge TPU custom op --------------------------------------------------------------------------------


def _edgetpu_op_data(subgraph: int, op: Operator) -> EdgeTpuOpData:
    """Decode an ``edgetpu-custom-op``'s options; fields that cannot be read stay None (never fatal)."""
    version = 0
    executables: list[bytes] = []
    try:
        entries = flexbuffer_map(op.custom_options)
        raw_version = entries.get("1")
        version = raw_version if isinstance(raw_version, int) else 0
        first = entries.get("4")
        if isinstance(first, bytes):
            executables.append(first)
        rest = entries.get("7")
        if isinstance(rest, list):
            executables.extend(e for e in rest if isinstance(e, bytes))
    except _Corrupt as exc:
        logger.debug("edgetpu-custom-op %d: unreadable options (%s)", op.index, exc)
    min_runtime: int | None = None
    compiler: str | None = None
    identifier: str | None = None
    if executables:
        try:
            min_runtime, compiler, identifier = _darwinn_package(executables[0])
        except (_Corrupt, struct.error, UnicodeDecodeError) as exc:
            logger.debug("edgetpu-custom-op %d: unreadable executable package (%s)", op.index, exc)
    return EdgeTpuOpData(
        op_index=op.index,
        subgraph=subgraph,
        version=version,
        min_runtime_version=min_runtime,
        compiler_version=compiler,
        model_identifier=identifier,
        executable_bytes=sum(len(e) for e in executables),
        num_executables=len(executables),
    )


def _darwinn_package(data: bytes) -> tuple[int | None, str | None, str | None]:
    """min_runtime_version (0), compiler_version (4) and model_identifier (7) of a DarwiNN ``Package``."""
    buf = _Buf(data)
    if len(data) < 8 or data[4:8] != b"DWN1":
        raise _Corrupt("executable is not a DWN1 package")
    root = _Table(buf, buf.u32(0))
    version = root.scalar(0, "i", None)
    return (int(version) if version is not None else None), root.string(4), root.string(7)


# --- a minimal FlexBuffer reader (custom op options) --------------------------------------------------------

# FlexBuffer value types (flatbuffers/flexbuffers.h).
_FBT_NULL, _FBT_INT, _FBT_UINT, _FBT_FLOAT, _FBT_KEY, _FBT_STRING = 0, 1, 2, 3, 4, 5
_FBT_INDIRECT_INT, _FBT_INDIRECT_UINT, _FBT_INDIRECT_FLOAT, _FBT_MAP, _FBT_VECTOR = 6, 7, 8, 9, 10
_FBT_VECTOR_INT, _FBT_VECTOR_UINT, _FBT_VECTOR_FLOAT, _FBT_VECTOR_KEY = 11, 12, 13, 14
_FBT_BLOB, _FBT_BOOL = 25, 26
_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_UINT_FMT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_FLOAT_FMT = {4: "f", 8: "d"}


def flexbuffer_map(data: bytes) -> dict[str, Any]:
    """Decode a FlexBuffer whose root is a map, one level deep plus vectors of scalars/strings.

    Args:
        data: the FlexBuffer bytes (an op's custom options).

    Returns:
        ``{key: value}`` with ints, floats, bools, bytes (strings and blobs) or lists of those.

    Raises:
        _Corrupt: not a FlexBuffer map or malformed (callers turn it into their own error).
    """
    buf = _Buf(data)
    if buf.size < 3:
        raise _Corrupt("FlexBuffer too short")
    root_width = buf.unpack("B", buf.size - 1)
    packed = buf.unpack("B", buf.size - 2)
    if root_width not in _UINT_FMT:
        raise _Corrupt(f"FlexBuffer root width {root_width}")
    kind, width = packed >> 2, 1 << (packed & 3)
    if kind != _FBT_MAP:
        raise _Corrupt(f"FlexBuffer root is type {kind}, not a map")
    pos = buf.size - 2 - root_width
    values = pos - int(buf.unpack(_UINT_FMT[root_width], pos))
    length = int(buf.unpack(_UINT_FMT[width], values - width))
    keys_at = values - 3 * width
    keys = keys_at - int(buf.unpack(_UINT_FMT[width], keys_at))
    key_width = int(buf.unpack(_UINT_FMT[width], values - 2 * width))
    if key_width not in _UINT_FMT or length > buf.size:
        raise _Corrupt("FlexBuffer map header is malformed")
    types_at = values + length * width
    out: dict[str, Any] = {}
    for i in range(length):
        key_pos = keys + i * key_width
        key = _flex_cstring(buf, key_pos - int(buf.unpack(_UINT_FMT[key_width], key_pos)))
        child = int(buf.unpack("B", types_at + i))
        out[key] = _flex_value(buf, values + i * width, width, child >> 2, 1 << (child & 3), depth=0)
    return out


def _flex_cstring(buf: _Buf, pos: int) -> str:
    end = pos
    while buf.unpack("B", end) != 0:
        end += 1
        if end - pos > 4096:
            raise _Corrupt("FlexBuffer key is not terminated")
    return buf.bytes_at(pos, end - pos).decode("utf-8", errors="replace")


def _flex_value(buf: _Buf, pos: int, parent_width: int, kind: int, width: int, depth: int) -> Any:
    if kind == _FBT_NULL:
        return None
    if kind == _FBT_INT:
        return int(buf.unpack(_INT_FMT[parent_width], pos))
    if kind in (_FBT_UINT, _FBT_BOOL):
        value = int(buf.unpack(_UINT_FMT[parent_width], pos))
        return bool(value) if kind == _FBT_BOOL else value
    if kind == _FBT_FLOAT:
        if parent_width not in _FLOAT_FMT:
            raise _Corrupt(f"FlexBuffer float of width {parent_width}")
        return float(buf.unpack(_FLOAT_FMT[parent_width], pos))
    target = pos - int(buf.unpack(_UINT_FMT[parent_width], pos))
    if kind in (_FBT_INDIRECT_INT, _FBT_INDIRECT_UINT, _FBT_INDIRECT_FLOAT):
        fmt = {_FBT_INDIRECT_INT: _INT_FMT, _FBT_INDIRECT_UINT: _UINT_FMT, _FBT_INDIRECT_FLOAT: _FLOAT_FMT}[kind]
        if width not in fmt:
            raise _Corrupt(f"FlexBuffer indirect value of width {width}")
        return buf.unpack(fmt[width], target)
    if kind == _FBT_KEY:
        return _flex_cstring(buf, target).encode()
    if kind in (_FBT_STRING, _FBT_BLOB):
        length = int(buf.unpack(_UINT_FMT[width], target - width))
        return buf.bytes_at(target, length)
    if kind in (_FBT_VECTOR_INT, _FBT_VECTOR_UINT, _FBT_VECTOR_FLOAT):
        length = int(buf.unpack(_UINT_FMT[width], target - width))
        fmt = {_FBT_VECTOR_INT: _INT_FMT, _FBT_VECTOR_UINT: _UINT_FMT, _FBT_VECTOR_FLOAT: _FLOAT_FMT}[kind]
        if width not in fmt or target + length * width > buf.size:
            raise _Corrupt("FlexBuffer typed vector is malformed")
        return [buf.unpack(fmt[width], target + i * width) for i in range(length)]
    if kind == _FBT_VECTOR and depth < 2:
        length = int(buf.unpack(_UINT_FMT[width], target - width))
        if target + length * (width + 1) > buf.size:
            raise _Corrupt("FlexBuffer vector runs past the end")
        items = []
        for i in range(length):
            child = int(buf.unpack("B", target + length * width + i))
            items.append(_flex_value(buf, target + i * width, width, child >> 2, 1 << (child & 3), depth + 1))
        return items
    return None  # maps inside maps and exotic vectors: nothing edgekit reads
