"""Edge TPU preflight: predict, op by op, what ``edgetpu_compiler`` will map, from Coral's documented rules.

The rules are those of Coral's "TensorFlow models on the Edge TPU" (coral.ai/docs/edgetpu/models-intro):

* model requirements: tensors 8-bit quantized (int8/uint8); tensor sizes constant at compile time; parameters
  (weights, biases) constant at compile time; tensors 1-, 2- or 3-dimensional, or, with more dimensions, only
  the 3 innermost larger than 1; only the supported operations, within their listed limits;
* the supported-operations table, with the Edge TPU runtime version each op needs and its known limitations;
* compilation: the compiler makes one Edge TPU subgraph ("it cannot partition the model more than once"). What
  that means op by op is shown by Coral's own compiled models (tests/data/coral/edgetpu-pairs): an op that needs
  the output of a CPU op which itself ran after the Edge TPU part cannot go back to the Edge TPU, while CPU ops
  *before* the Edge TPU part (MoveNet's leading CAST/QUANTIZE) and independent branches after a CPU op
  (MoveNet's heads beside its ARG_MAX) still map. The docs' "every op after it" is read as "every op that
  depends on it", which is what compiler 16 does.

One thing the docs do not list is which op *versions* the compiler parses: ``edgetpu_compiler`` 16.0 (the last
release) embeds TensorFlow Lite's op resolver of about TF 2.5 and refuses the whole model ("Didn't find op for
builtin opcode 'CONV_2D' version '6'") when a newer TensorFlow wrote a newer op version. `MAX_OP_VERSIONS` holds
the newest version of each op TensorFlow 2.5 knew (TensorFlow's ``runtime_version.cc``); the reports in Coral's
issue tracker (CONV_2D v6, QUANTIZE v3, TRANSPOSE_CONV v4, EXP v2 refused) all agree with it.

The prediction is a pure function of the parsed model; the compiler, when present, has the last word.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.model.tflite import (
    BUILTIN_OPS,
    DETECTION_POSTPROCESS_OP,
    EDGETPU_CUSTOM_OP,
    Model,
    Operator,
    Subgraph,
    read_model,
)

DOCS = "https://coral.ai/docs/edgetpu/models-intro/"
# What edgetpu_compiler 16.0 writes into compiled models unless told otherwise with --min_runtime_version.
COMPILER_DEFAULT_RUNTIME = 14
# "All" in Coral's table: every runtime since the Edge TPU's first public release.
_ALL = 10
# Ops listed one by one in a summary; a float model would otherwise list every op.
_SHOWN = 8


@dataclass(frozen=True)
class Rule:
    """One documented rule: a short id to grep for and the rule's text."""

    id: str
    text: str

    def __str__(self) -> str:
        return f"[{self.id}] {self.text}"


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("int8", "tensors must be 8-bit quantized (int8 or uint8); float and 16-bit tensors run on the CPU"),
        Rule(
            "static-shape",
            "tensor sizes must be constant at compile time; a dynamic size makes the compiler refuse the model",
        ),
        Rule("const-params", "model parameters (weights, biases) must be constant at compile time"),
        Rule("rank", "tensors must be 1-, 2- or 3-dimensional; with more dimensions only the 3 innermost may be > 1"),
        Rule("op-list", "only operations in Coral's supported-operations table map to the Edge TPU"),
        Rule("custom-op", "custom operators always run on the CPU (TFLite_Detection_PostProcess is expected to)"),
        Rule(
            "one-subgraph",
            "the compiler makes one Edge TPU subgraph: an op that reads a CPU result computed after the Edge "
            "TPU part runs on the CPU too",
        ),
        Rule(
            "op-version",
            "edgetpu_compiler 16 parses op versions up to TensorFlow Lite 2.5's; newer ones make it "
            "refuse the whole model",
        ),
        Rule("no-fused-activation", "AveragePool2d, MaxPool2d and Concatenation: no fused activation function"),
        Rule(
            "concat-constant",
            "Concatenation: a constant input is allowed only as one of exactly 2 inputs and must be all zeroes",
        ),
        Rule("dilation", "Conv2d/DepthwiseConv2d: the same dilation in x and y"),
        Rule("fc-output", "FullyConnected: default weights format only; the output tensor is one-dimensional"),
        Rule(
            "no-batch-op", "Mean, Sum, ReduceMax, ReduceMin, Pad, Split and Pack cannot operate on the batch dimension"
        ),
        Rule("mean-z", "Mean: a reduction along z needs a z-dimension that is a multiple of 4"),
        Rule("softmax", "Softmax: only a 1-D input tensor with at most 16,000 elements"),
        Rule("strided-slice", "StridedSlice: all strides 1, ellipsis-axis-mask 0 and new-axis-mask 0"),
        Rule("prelu", "PReLU: alpha must be 1-dimensional (only its innermost dimension may be > 1)"),
        Rule(
            "resize",
            "ResizeBilinear/ResizeNearestNeighbor: depending on sizes the compiler keeps it on the CPU to "
            "avoid loss of precision (align_corners=True resizes do not map)",
        ),
        Rule("reshape", "Reshape: certain reshapes of large tensors might not be mapped"),
    )
}

# Coral's supported-operations table, as TFLite builtin names -> Edge TPU runtime version required.
SUPPORTED_OPS: dict[str, int] = {
    "ADD": _ALL, "AVERAGE_POOL_2D": _ALL, "CONCATENATION": _ALL, "CONV_2D": _ALL, "DEPTHWISE_CONV_2D": _ALL,
    "EXPAND_DIMS": 13, "FULLY_CONNECTED": _ALL, "L2_NORMALIZATION": _ALL, "LOGISTIC": _ALL,
    "LSTM": 14, "UNIDIRECTIONAL_SEQUENCE_LSTM": 14, "MAXIMUM": _ALL, "MAX_POOL_2D": _ALL, "MEAN": _ALL,
    "MINIMUM": _ALL, "MUL": _ALL, "PACK": 13, "PAD": _ALL, "PRELU": 13, "QUANTIZE": 13, "REDUCE_MAX": 14,
    "REDUCE_MIN": 14, "RELU": _ALL, "RELU6": _ALL, "RELU_N1_TO_1": _ALL, "RESHAPE": _ALL, "RESIZE_BILINEAR": _ALL,
    "RESIZE_NEAREST_NEIGHBOR": _ALL, "RSQRT": 14, "SLICE": _ALL, "SOFTMAX": _ALL, "SPACE_TO_DEPTH": _ALL,
    "SPLIT": _ALL, "SQUARED_DIFFERENCE": 14, "SQUEEZE": _ALL, "STRIDED_SLICE": _ALL, "SUB": _ALL, "SUM": 13,
    "TANH": _ALL, "TRANSPOSE": 14, "TRANSPOSE_CONV": 13,
}  # fmt: skip

# Newest op version TensorFlow Lite 2.5 registered (tensorflow/lite/tools/versioning/runtime_version.cc): what
# edgetpu_compiler 16 can parse. Ops missing here are checked only through their builtin code (below).
MAX_OP_VERSIONS: dict[str, int] = {
    "ABS": 3, "ADD": 3, "ADD_N": 1, "ARG_MAX": 2, "ARG_MIN": 2, "AVERAGE_POOL_2D": 3, "BATCH_MATMUL": 4,
    "BATCH_TO_SPACE_ND": 3, "BROADCAST_TO": 3, "CAST": 1, "CEIL": 1, "CONCATENATION": 3, "CONV_2D": 5, "COS": 1,
    "CUMSUM": 1, "DEPTH_TO_SPACE": 2, "DEPTHWISE_CONV_2D": 6, "DEQUANTIZE": 4, "DIV": 2, "ELU": 1, "EQUAL": 3,
    "EXP": 1, "EXPAND_DIMS": 1, "FILL": 3, "FLOOR": 1, "FLOOR_DIV": 2, "FLOOR_MOD": 1, "FULLY_CONNECTED": 9,
    "GATHER": 5, "GATHER_ND": 3, "GREATER": 2, "GREATER_EQUAL": 2, "HARD_SWISH": 1, "L2_NORMALIZATION": 2,
    "LEAKY_RELU": 2, "LESS": 2, "LESS_EQUAL": 2, "LOG": 1, "LOG_SOFTMAX": 2, "LOGISTIC": 3, "LSTM": 4,
    "MAX_POOL_2D": 3, "MAXIMUM": 4, "MEAN": 3, "MINIMUM": 4, "MIRROR_PAD": 2, "MUL": 4, "NEG": 1,
    "NOT_EQUAL": 3, "PACK": 3, "PAD": 3, "PADV2": 3, "POW": 1, "PRELU": 1, "QUANTIZE": 2, "REDUCE_MAX": 3,
    "REDUCE_MIN": 3, "REDUCE_PROD": 1, "RELU": 3, "RELU6": 3, "RELU_N1_TO_1": 1, "RESHAPE": 1,
    "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "REVERSE_V2": 3, "ROUND": 1, "RSQRT": 2, "SELECT": 2,
    "SELECT_V2": 1, "SHAPE": 1, "SIN": 1, "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_BATCH_ND": 3, "SPACE_TO_DEPTH": 2,
    "SPLIT": 4, "SPLIT_V": 2, "SQRT": 1, "SQUARE": 1, "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2, "STRIDED_SLICE": 5,
    "SUB": 5, "SUM": 2, "TANH": 3, "TILE": 2, "TOPK_V2": 2, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "UNPACK": 4, "ZEROS_LIKE": 1,
}  # fmt: skip
# Builtin codes from REDUCE_ALL (140) on came after TensorFlow Lite 2.5: the compiler does not know them at all.
FIRST_UNKNOWN_BUILTIN = "REDUCE_ALL"

_QUANTIZED = ("int8", "uint8")
# Constant operands that are indices or biases, never activations: int32/int64 is how TFLite stores them.
_INDEX_TYPES = ("int32", "int64")
# TFLite's 8-bit LSTM keeps its cell state (input 19) and layer-norm weights (20-23) in int16 by design
# (TensorFlow Lite's quantization spec, "8x8_16" LSTM); the compiler maps it anyway, as Coral's keras_lstm_mnist
# pair shows (all of it inside edgetpu-custom-op). Coral's table lists (unidirectional) LSTM from runtime 14.
_LSTM_OPS = ("LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM")
_LSTM_INT16_INPUTS = frozenset(range(19, 24))
_PARAMETER_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1,)}


@dataclass(frozen=True)
class OpVerdict:
    """The prediction for one operator."""

    index: int
    op: str
    version: int
    maps: bool
    rule: Rule | None = None
    detail: str = ""
    runtime: int = 0
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "op": self.op, "version": self.version, "maps": self.maps}
        if self.rule is not None:
            out["rule"] = self.rule.id
            out["reason"] = self.detail or self.rule.text
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Preflight:
    """What the Edge TPU compiler is predicted to do with a model."""

    model: str
    ops: tuple[OpVerdict, ...]
    fatal: tuple[OpVerdict, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    already_compiled: bool = False
    tail: frozenset[int] = frozenset()
    before: frozenset[int] = frozenset()  # CPU ops that run before the Edge TPU part (they need none of it)

    @property
    def mapped(self) -> int:
        return sum(v.maps for v in self.ops)

    @property
    def on_cpu(self) -> int:
        return len(self.ops) - self.mapped

    @property
    def compiles(self) -> bool:
        """False when the compiler is predicted to refuse the model (op versions it cannot parse, dynamic sizes)."""
        return not self.fatal

    @property
    def first_cpu_op(self) -> OpVerdict | None:
        """The first op (in execution order) that runs on the CPU, if any."""
        return next((v for v in self.ops if not v.maps), None)

    @property
    def postprocess_index(self) -> int | None:
        """Index of the first ``TFLite_Detection_PostProcess`` op, for detectors."""
        return next((v.index for v in self.ops if v.op == DETECTION_POSTPROCESS_OP), None)

    @property
    def full_tpu(self) -> bool:
        """It compiles and every op maps except the detection postprocess tail (`tail`)."""
        return self.compiles and all(v.maps for v in self.ops if v.index not in self.tail)

    def cpu_before_postprocess(self) -> tuple[OpVerdict, ...]:
        """Ops on the CPU outside the postprocess tail: what ``--require-full-tpu`` refuses."""
        return tuple(v for v in self.ops if not v.maps and v.index not in self.tail)

    @property
    def required_runtime(self) -> int:
        """The Edge TPU runtime the mapped ops need at least (the compiler's default writes 14 regardless)."""
        return max((v.runtime for v in self.ops if v.maps), default=_ALL)

    def summary(self) -> str:
        """A few lines for a terminal: the verdict, then each op that does not map with its rule."""
        lines = []
        if self.already_compiled:
            lines.append(f"{self.model}: already compiled for the Edge TPU (edgetpu-custom-op); nothing to predict")
            return "\n".join(lines)
        total = len(self.ops)
        if not self.compiles:
            lines.append(f"Edge TPU preflight: edgetpu_compiler would refuse this model ({len(self.fatal)} op(s)):")
            lines.extend(f"  op {v.index} {v.op} v{v.version}: {v.detail} {v.rule}" for v in self.fatal)
        elif self.full_tpu and self.on_cpu == 0:
            lines.append(f"Edge TPU preflight: all {total} ops map to the Edge TPU")
        elif self.full_tpu:
            lines.append(
                f"Edge TPU preflight: {self.mapped} of {total} ops map to the Edge TPU; only the detection "
                f"postprocess ({self.on_cpu} op(s)) runs on the CPU, as intended"
            )
        else:
            head = f"Edge TPU preflight: {self.mapped} of {total} ops map, {self.on_cpu} run on the CPU"
            lead = [v for v in self.ops if v.index in self.before]
            if lead:
                head += f"; {len(lead)} before the Edge TPU part (from op {lead[0].index} {lead[0].op})"
            after = [v for v in self.cpu_before_postprocess() if v.index not in self.before]
            if after:
                head += f"; the Edge TPU part ends at op {after[0].index} ({after[0].op})"
            lines.append(head)
        own = [
            v
            for v in self.ops
            if not v.maps and v.rule is not None and v.rule.id != "one-subgraph" and v.index not in self.tail
        ]
        lines.extend(f"  op {v.index} {v.op}: {v.detail} {v.rule}" for v in own[:_SHOWN])
        if len(own) > _SHOWN:
            lines.append(f"  ... and {len(own) - _SHOWN} more op(s) that cannot map on their own (see --json)")
        followers = [v for v in self.ops if v.rule is not None and v.rule.id == "one-subgraph"]
        if followers:
            names = sorted({v.op for v in followers})
            lines.append(
                f"  {len(followers)} later op(s) ({', '.join(names)}) follow it to the CPU {RULES['one-subgraph']}"
            )
        tail = [v for v in self.ops if v.index in self.tail and not v.maps]
        if tail:
            listed = ", ".join(f"{v.op} (op {v.index})" for v in tail)
            lines.append(f"  detection postprocess on the CPU, as intended: {listed}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        first = self.first_cpu_op
        return {
            "model": self.model,
            "already_compiled": self.already_compiled,
            "compiles": self.compiles,
            "full_tpu": self.full_tpu,
            "ops_total": len(self.ops),
            "ops_mapped": self.mapped,
            "ops_cpu": self.on_cpu,
            "first_cpu_op": first.to_dict() if first else None,
            "postprocess_tail": sorted(self.tail),
            "required_runtime": self.required_runtime,
            "fatal": [v.to_dict() for v in self.fatal],
            "ops": [v.to_dict() for v in self.ops],
            "notes": list(self.notes),
            "docs": DOCS,
        }


def preflight(model: Model | str | Path) -> Preflight:
    """Predict what ``edgetpu_compiler`` does with a model, op by op, citing the rule for each op it flags.

    Args:
        model: a parsed model, or the path of a .tflite file.

    Returns:
        The prediction (`Preflight.summary` for people, `Preflight.to_dict` for machines).

    Raises:
        InputError, ModelError: when given a path that cannot be read as a TFLite model.
    """
    parsed = model if isinstance(model, Model) else read_model(model)
    graph = parsed.main
    if parsed.is_edgetpu_compiled:
        ops = tuple(
            OpVerdict(op.index, op.name, op.version, op.name == EDGETPU_CUSTOM_OP, runtime=_ALL)
            for op in graph.operators
        )
        return Preflight(parsed.path, ops, already_compiled=True)

    fatal = tuple(v for op in graph.operators if (v := _version_check(op)) is not None)
    notes: list[str] = []
    verdicts: list[OpVerdict] = []
    # The one Edge TPU subgraph may read graph inputs and what CPU ops computed from them alone ("before"), but
    # nothing the CPU computed from an Edge TPU result ("after"): that would need a second Edge TPU subgraph.
    # Tensors are tagged as they are produced; ops are in execution order, so inputs are tagged first.
    on_tpu: set[int] = set()  # outputs of ops that map
    after_tpu: set[int] = set()  # outputs of CPU ops that (transitively) read an Edge TPU result
    before: set[int] = set()
    for op in graph.operators:
        own = _check(op, graph, parsed, notes)
        runtime = SUPPORTED_OPS.get(op.name, _ALL)
        if op.name == "DEPTHWISE_CONV_2D" and op.options.get("dilation_w_factor", 1) > 1:
            runtime = 13  # dilated depthwise kernels arrived with runtime 13
        reads_after = any(i in after_tpu for i in op.inputs)
        if own is None and not reads_after:
            verdicts.append(OpVerdict(op.index, op.name, op.version, True, runtime=runtime))
            on_tpu.update(op.outputs)
            continue
        if own is not None:
            rule, detail = own
        else:
            rule, detail = RULES["one-subgraph"], "reads a CPU result computed after the Edge TPU part"
        verdicts.append(OpVerdict(op.index, op.name, op.version, False, rule, detail, runtime))
        if reads_after or any(i in on_tpu for i in op.inputs):
            after_tpu.update(op.outputs)
        else:
            before.add(op.index)
    if len(parsed.subgraphs) > 1:
        notes.append(f"the model has {len(parsed.subgraphs)} subgraphs (control flow); only subgraph 0 is considered")
    # A dynamic size is not one op's problem: the compiler runs the model through a delegate that "only supports
    # static-sized tensors" and fails the whole compilation (google-coral/edgetpu#654).
    fatal += tuple(v for v in verdicts if v.rule is RULES["static-shape"])
    return Preflight(
        parsed.path,
        tuple(verdicts),
        fatal,
        tuple(dict.fromkeys(notes)),
        tail=_postprocess_tail(graph),
        before=frozenset(before),
    )


def _postprocess_tail(graph: Subgraph) -> frozenset[int]:
    """The detection postprocess, the ops after it, and the DEQUANTIZE ops that only feed it (float inputs)."""
    ops = graph.operators
    start = next((op.index for op in ops if op.name == DETECTION_POSTPROCESS_OP), None)
    if start is None:
        return frozenset()
    tail = {op.index for op in ops if op.index >= start}
    consumers: dict[int, set[int]] = {}
    for op in ops:
        for i in op.inputs:
            consumers.setdefault(i, set()).add(op.index)
    changed = True
    while changed:
        changed = False
        for op in ops:
            if op.index in tail or op.name != "DEQUANTIZE":
                continue
            users = set().union(*(consumers.get(o, set()) for o in op.outputs))
            if users and users <= tail:
                tail.add(op.index)
                changed = True
    return frozenset(tail)


def _version_check(op: Operator) -> OpVerdict | None:
    if op.is_custom:
        return None
    limit = MAX_OP_VERSIONS.get(op.builtin)
    code = BUILTIN_OPS.index(op.builtin) if op.builtin in BUILTIN_OPS else 10_000
    if code >= BUILTIN_OPS.index(FIRST_UNKNOWN_BUILTIN):
        detail = f"{op.builtin} did not exist in TensorFlow Lite 2.5; edgetpu_compiler cannot parse it"
    elif limit is not None and op.version > limit:
        detail = (
            f"version {op.version} is newer than the v{limit} edgetpu_compiler parses "
            "(convert with an older TensorFlow or avoid the feature that raised the version)"
        )
    else:
        return None
    return OpVerdict(op.index, op.name, op.version, False, RULES["op-version"], detail)


def _check(op: Operator, graph: Subgraph, model: Model, notes: list[str]) -> tuple[Rule, str] | None:
    """The first rule ``op`` breaks on its own (ignoring the ops before it), or None when it can map."""
    name = op.name
    if op.is_custom:
        return RULES["custom-op"], f"custom op {name}"
    if name not in SUPPORTED_OPS:
        return RULES["op-list"], f"{name} is not an Edge TPU operation"

    tensors = [(i, graph.tensor(i)) for i in (*op.inputs, *op.outputs)]
    for position, (i, t) in enumerate(tensors):
        if t is None:
            continue
        if name in _LSTM_OPS and position in _LSTM_INT16_INPUTS and t.dtype == "int16":
            continue
        if t.is_constant:
            if t.dtype not in (*_QUANTIZED, *_INDEX_TYPES):
                return RULES["int8"], f"constant {t.name or i} is {t.dtype}"
        elif t.dtype not in _QUANTIZED:
            return RULES["int8"], f"tensor {t.name or i} is {t.dtype}"
        if not t.is_constant and t.shape_signature is not None and t.is_dynamic:
            sig = t.shape_signature
            if any(d < 0 for d in sig[1:]):
                return RULES["static-shape"], f"tensor {t.name or i} has shape {list(sig)}"
            notes.append("the batch dimension is free (-1) in the shape signature; the Edge TPU runs batch 1")
        if not t.is_constant and len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
            return RULES["rank"], f"tensor {t.name or i} has shape {list(t.shape)}"
    for position in _PARAMETER_INPUTS.get(name, ()):
        if position < len(op.inputs):
            t = graph.tensor(op.inputs[position])
            if t is not None and not t.is_constant:
                return RULES[
                    "const-params"
                ], f"{'weights' if position == 1 else 'bias'} {t.name} is computed at runtime"
    return _limits(op, graph, model, notes)


def _const(model: Model, graph: Subgraph, op: Operator, position: int) -> Any:
    if position >= len(op.inputs):
        return None
    t = graph.tensor(op.inputs[position])
    return model.constant(t) if t is not None and t.is_constant else None


def _axes(values: Any, rank: int) -> list[int] | None:
    if values is None:
        return None
    return sorted({int(a) % rank for a in values.reshape(-1)}) if rank else []


def _limits(op: Operator, graph: Subgraph, model: Model, notes: list[str]) -> tuple[Rule, str] | None:
    """Coral's per-op "known limitations"."""
    name = op.name
    first_in = graph.tensor(op.inputs[0]) if op.inputs else None
    first_out = graph.tensor(op.outputs[0]) if op.outputs else None
    in_rank = len(first_in.shape) if first_in is not None else 0
    activation = op.options.get("fused_activation_function", "NONE")

    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION") and activation != "NONE":
        return RULES["no-fused-activation"], f"fused {activation}"
    if name == "CONCATENATION":
        constants = [graph.tensor(i) for i in op.inputs]
        consts = [t for t in constants if t is not None and t.is_constant]
        if consts:
            values = model.constant(consts[0])
            zero = consts[0].quantization.zero_point[0] if consts[0].quantization.zero_point else 0
            if len(op.inputs) != 2 or len(consts) != 1 or values is None or bool((values != zero).any()):
                return RULES["concat-constant"], f"{len(op.inputs)} inputs, {len(consts)} constant"
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        dw, dh = op.options.get("dilation_w_factor", 1), op.options.get("dilation_h_factor", 1)
        if dw != dh:
            return RULES["dilation"], f"dilation {dh}x{dw}"
    if name == "FULLY_CONNECTED" and first_out is not None and sum(d > 1 for d in first_out.shape) > 1:
        return RULES["fc-output"], f"output shape {list(first_out.shape)}"
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"):
        axes = _axes(_const(model, graph, op, 1), in_rank)
        if axes is None:
            return RULES["const-params"], "reduction axes are computed at runtime"
        if 0 in axes and in_rank > 1:
            return RULES["no-batch-op"], f"reduces axes {axes} including the batch"
        if name == "MEAN" and first_in is not None and in_rank - 1 in axes and first_in.shape[-1] % 4:
            return RULES["mean-z"], f"z-dimension {first_in.shape[-1]}"
    if name == "PAD":
        paddings = _const(model, graph, op, 1)
        if paddings is None:
            return RULES["const-params"], "paddings are computed at runtime"
        if in_rank > 1 and paddings.size >= 2 and bool((paddings.reshape(-1, 2)[0] != 0).any()):
            return RULES["no-batch-op"], "pads the batch dimension"
    if name == "SPLIT" and len(op.inputs) > 1:
        data = graph.tensor(op.inputs[1])
        axes = _axes(_const(model, graph, op, 0), len(data.shape) if data is not None else 0)
        if axes == [0]:
            return RULES["no-batch-op"], "splits the batch dimension"
    if name == "PACK" and op.options.get("axis", 0) == 0:
        return RULES["no-batch-op"], "packs along the batch dimension (axis 0)"
    if name == "SOFTMAX" and first_in is not None:
        elements = 1
        for d in first_in.shape:
            elements *= d
        if sum(d > 1 for d in first_in.shape) > 1 or elements > 16000:
            return RULES["softmax"], f"input shape {list(first_in.shape)}"
    if name == "STRIDED_SLICE":
        strides = _const(model, graph, op, 3)
        if strides is None or bool((strides != 1).any()):
            return RULES["strided-slice"], f"strides {strides.tolist() if strides is not None else 'not constant'}"
        if op.options.get("ellipsis_mask", 0) or op.options.get("new_axis_mask", 0):
            return RULES["strided-slice"], "ellipsis or new-axis mask set"
    if name == "PRELU" and len(op.inputs) > 1:
        alpha = graph.tensor(op.inputs[1])
        if alpha is not None and any(d > 1 for d in alpha.shape[:-1]):
            return RULES["prelu"], f"alpha shape {list(alpha.shape)}"
    if name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
        # Coral's table: "depending on input/output size, this operation might not be mapped to the Edge TPU to
        # avoid loss in precision"; the threshold is not disclosed (google-coral/edgetpu#31). What is known:
        # Coral's DeepLab keeps its align_corners=True resize (1x1 -> 33x33) on the CPU, while MoveNet's
        # half-pixel 2x upsamplings map. An align_corners grid samples at (in - 1) / (out - 1) steps, which the
        # Edge TPU's fixed-point interpolation does not represent; it is the one case predicted on the CPU.
        if op.options.get("align_corners", False):
            return RULES["resize"], "align_corners=True"
        notes.append(f"op {op.index} {name}: {RULES['resize'].text}")
    if name == "RESHAPE" and first_in is not None and first_in.nbytes > 1 << 20:
        notes.append(f"op {op.index} RESHAPE of {first_in.nbytes} bytes: {RULES['reshape'].text}")
    return None


def verdicts_by_op(result: Preflight) -> dict[str, tuple[int, int]]:
    """Per op name: (ops mapped, ops on the CPU), the same grouping as the compiler's operation log."""
    table: dict[str, list[int]] = {}
    for v in result.ops:
        row = table.setdefault(v.op, [0, 0])
        row[0 if v.maps else 1] += 1
    return {k: (m, c) for k, (m, c) in table.items()}


def cpu_ops(result: Preflight) -> Sequence[OpVerdict]:
    """Ops predicted to run on the CPU, in execution order."""
    return [v for v in result.ops if not v.maps]


def cpu_histogram(result: Preflight) -> dict[str, int]:
    """Per op name, how many ops are predicted on the CPU: comparable with `compiled_partition`'s."""
    return dict(sorted(Counter(v.op for v in result.ops if not v.maps).items()))


@dataclass(frozen=True)
class CompiledPartition:
    """Where ``edgetpu_compiler`` put things in a compiled model: CPU ops around the ``edgetpu-custom-op``(s)."""

    model: str
    tpu: tuple[int, ...]  # indices of the edgetpu-custom-op(s)
    before: tuple[tuple[int, str], ...]  # (index, op) of CPU ops before the first Edge TPU op, graph order
    after: tuple[tuple[int, str], ...]  # the CPU ops after it

    @property
    def cpu_histogram(self) -> dict[str, int]:
        return dict(sorted(Counter(name for _, name in (*self.before, *self.after)).items()))

    def summary(self) -> str:
        """Lines for a terminal: the CPU ops in graph order and where the Edge TPU part sits."""
        n_cpu = len(self.before) + len(self.after)
        lines = [
            f"Edge TPU partition (by edgetpu_compiler): {len(self.tpu)} Edge TPU subgraph(s) at op "
            f"{', '.join(map(str, self.tpu))}; {n_cpu} op(s) on the CPU"
        ]
        for label, ops in (("before the Edge TPU part", self.before), ("after the Edge TPU part", self.after)):
            if ops:
                lines.append(f"  CPU {label}: " + ", ".join(f"{name} (op {i})" for i, name in ops))
        if n_cpu:
            lines.append("  CPU ops: " + ", ".join(f"{k} x{n}" for k, n in self.cpu_histogram.items()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edgetpu_ops": list(self.tpu),
            "cpu_before": [{"index": i, "op": name} for i, name in self.before],
            "cpu_after": [{"index": i, "op": name} for i, name in self.after],
            "cpu_ops": self.cpu_histogram,
        }


def compiled_partition(model: Model | str | Path) -> CompiledPartition:
    """Read the partition out of a model ``edgetpu_compiler`` wrote (ops outside ``edgetpu-custom-op`` run on the CPU).

    Args:
        model: a parsed compiled model, or its path.

    Returns:
        The partition (no Edge TPU ops at all when the model is not compiled).
    """
    parsed = model if isinstance(model, Model) else read_model(model)
    ops = parsed.main.operators
    tpu = tuple(op.index for op in ops if op.name == EDGETPU_CUSTOM_OP)
    first = tpu[0] if tpu else len(ops)
    cpu = [(op.index, op.name) for op in ops if op.name != EDGETPU_CUSTOM_OP]
    return CompiledPartition(
        parsed.path, tpu, tuple(o for o in cpu if o[0] < first), tuple(o for o in cpu if o[0] > first)
    )


def partition_differences(predicted: Preflight, compiled: CompiledPartition | Mapping[str, int]) -> tuple[str, ...]:
    """Where the preflight and the compiler's real partition disagree, per op name (empty when they agree).

    Any difference is a bug in the preflight's rules: the compiler has the last word.

    Args:
        predicted: the preflight of the model that was compiled.
        compiled: the compiled model's partition, or the compiler log's CPU ops (op name -> count; the log
            calls every custom op ``CUSTOM``).
    """
    want = cpu_histogram(predicted)
    got = dict(compiled.cpu_histogram if isinstance(compiled, CompiledPartition) else compiled)
    if "CUSTOM" in got:
        custom = Counter(v.op for v in predicted.ops if not v.maps and v.op not in BUILTIN_OPS)
        for name in custom:
            want.pop(name)
        want["CUSTOM"] = sum(custom.values())
    return tuple(
        f"{name}: preflight {want.get(name, 0)} on the CPU, edgetpu_compiler {got.get(name, 0)}"
        for name in sorted(set(want) | set(got))
        if want.get(name, 0) != got.get(name, 0)
    )
