"""`edgekit inspect`: what a converted model is (inputs, outputs, ops, task) and, on request, its Edge TPU outlook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.model.edgetpu import CompiledPartition, Preflight, compiled_partition, preflight
from edgekit.model.manifest import MANIFEST_NAME, Manifest, find_model
from edgekit.model.task import TaskGuess, guess_task
from edgekit.model.tflite import DETECTION_POSTPROCESS_OP, Model, Tensor, op_histogram, read_model


@dataclass(frozen=True)
class Inspection:
    """The facts `inspect_model` gathered."""

    path: Path
    model: Model
    manifest: Manifest | None
    preflight: Preflight | None = None

    @property
    def guess(self) -> TaskGuess:
        """What the output tensors say the model is."""
        return guess_task([t.shape for t in self.model.outputs])

    @property
    def task(self) -> str | None:
        return self.manifest.task if self.manifest is not None else self.guess.task

    @property
    def partition(self) -> CompiledPartition | None:
        """Where edgetpu_compiler put the ops, for a compiled model."""
        return compiled_partition(self.model) if self.model.is_edgetpu_compiled else None

    @property
    def has_postprocess(self) -> bool:
        return self.model.has_op(DETECTION_POSTPROCESS_OP)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        m = self.model
        out: dict[str, Any] = {
            "path": str(self.path),
            "size_bytes": m.size,
            "task": self.task,
            "task_detail": self.guess.describe(),
            "inputs": [t.to_dict() for t in m.inputs],
            "outputs": [t.to_dict() for t in m.outputs],
            "ops": op_histogram(m),
            "op_versions": sorted({f"{op.name}:v{op.version}" for op in m.operators}),
            "subgraphs": len(m.subgraphs),
            "detection_postprocess": self.has_postprocess,
            "edgetpu_compiled": m.is_edgetpu_compiled,
            "min_runtime_version": m.min_runtime_version,
        }
        if m.is_edgetpu_compiled:
            out["edgetpu"] = [
                {
                    "min_runtime_version": d.min_runtime_version,
                    "compiler_version": d.compiler_version,
                    "executable_bytes": d.executable_bytes,
                }
                for d in m.edgetpu
            ]
            partition = self.partition
            if partition is not None:
                out["edgetpu_partition"] = partition.to_dict()
        if self.preflight is not None:
            out["edgetpu_preflight"] = self.preflight.to_dict()
        return out

    def render(self) -> str:
        """Text for a terminal."""
        m = self.model
        lines = [f"{self.path} ({m.size / 1024:.1f} KiB, {len(m.operators)} ops, {len(m.subgraphs)} subgraph(s))"]
        if self.manifest is not None:
            lines.append(f"task: {self.manifest.task} (from {MANIFEST_NAME})")
        else:
            lines.append(f"task: {self.guess.describe()} (from the output tensors; no {MANIFEST_NAME})")
        lines.append("inputs:")
        lines.extend(f"  {_tensor_line(t)}" for t in m.inputs)
        lines.append("outputs:")
        lines.extend(f"  {_tensor_line(t)}" for t in m.outputs)
        lines.append("ops: " + ", ".join(f"{name} x{n}" for name, n in op_histogram(m).items()))
        if self.task == "detect" or self.has_postprocess:
            state = "present" if self.has_postprocess else "MISSING (the device would have to decode boxes itself)"
            lines.append(f"detection postprocess ({DETECTION_POSTPROCESS_OP}): {state}")
        if m.is_edgetpu_compiled:
            needed = m.edgetpu_runtime_required
            compiler = next((d.compiler_version for d in m.edgetpu if d.compiler_version), None)
            lines.append(
                f"compiled for the Edge TPU by edgetpu_compiler {compiler or '?'}; needs Edge TPU runtime "
                f"{needed if needed is not None else '?'}"
            )
            partition = self.partition
            if partition is not None:
                lines.append(partition.summary())
        if self.preflight is not None and not self.preflight.already_compiled:
            lines.append(self.preflight.summary())
        return "\n".join(lines)


def _tensor_line(t: Tensor) -> str:
    shape = list(t.shape_signature) if t.is_dynamic and t.shape_signature is not None else list(t.shape)
    text = f"{t.name or t.index}: {t.dtype} {shape}"
    q = t.quantization
    if q.is_quantized and not q.per_axis:
        text += f" scale={q.scale[0]:.6g} zero_point={q.zero_point[0] if q.zero_point else 0}"
    elif q.is_quantized:
        text += f" per-axis quantization on axis {q.quantized_dimension}"
    return text


def inspect_model(path: str | Path, edgetpu: bool = False) -> Inspection:
    """Read a model (a .tflite, or a folder / ``edgekit.json`` written by edgekit convert).

    Args:
        path: what to inspect.
        edgetpu: also run the Edge TPU preflight.

    Returns:
        The inspection.

    Raises:
        InputError: nothing usable at ``path``; ModelError: not a readable model or manifest.
    """
    path, manifest = find_model(path)
    model = read_model(path)
    return Inspection(path, model, manifest, preflight(model) if edgetpu else None)
