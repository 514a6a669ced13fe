"""Compile an int8 model with Coral's ``edgetpu_compiler`` and read its operation log.

The compiler is a closed binary for x86-64 Linux, installed from Coral's apt repository (package
``edgetpu-compiler``). When it is missing edgekit says so and where to get it, and the CPU model stays valid;
the preflight (`edgekit.model.edgetpu`) still predicts what it would do.

What the compiler prints (coral.ai/docs/edgetpu/compiler) and what is parsed here::

    Edge TPU Compiler version 16.0.384591198
    Model compiled successfully in 1155 ms.
    ...
    On-chip memory used for caching model parameters: 3.75MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 65
    Operation log: model_edgetpu.log
    Number of operations that will run on Edge TPU: 64
    Number of operations that will run on CPU: 1

    Operator                       Count      Status
    CONV_2D                        36         Mapped to Edge TPU
    CUSTOM                         1          Operation is working on an unsupported data type

and on failure ``ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'`` ... ``Model could not be parsed``.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.errors import InputError, QualityGateError
from edgekit.model.edgetpu import SUPPORTED_OPS, Preflight, partition_differences, preflight

logger = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
INSTALL_HINT = (
    "edgetpu_compiler runs on x86-64 Linux only; install it from Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/): add 'deb https://packages.cloud.google.com/apt "
    "coral-edgetpu-stable main' to /etc/apt/sources.list.d/coral-edgetpu.list, then "
    "'sudo apt-get install edgetpu-compiler'; or compile model.tflite in Coral's Colab notebook"
)
# The compiler's own default timeout is 180 s; a wall-clock bound above it catches a hung process.
TIMEOUT_S = 600

_ROW = re.compile(r"^([A-Za-z][A-Za-z0-9_\-]*)\s+(\d+)\s+(\S.*?)\s*$")
_FIELDS = {
    "version": re.compile(r"Edge TPU Compiler version (\S+)"),
    "subgraphs": re.compile(r"Number of Edge TPU subgraphs:\s*(\d+)"),
    "total": re.compile(r"Total number of operations:\s*(\d+)"),
    "on_tpu": re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
    "on_cpu": re.compile(r"Number of operations that will run on CPU:\s*(\d+)"),
    "onchip": re.compile(r"On-chip memory used for caching model parameters:\s*(\S+)"),
    "offchip": re.compile(r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)"),
}


@dataclass(frozen=True)
class LogRow:
    """One row of the compiler's operation table."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass(frozen=True)
class CompilerLog:
    """What the compiler said, parsed."""

    version: str | None = None
    rows: tuple[LogRow, ...] = ()
    subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    onchip_memory: str | None = None
    offchip_memory: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def mapped(self) -> int:
        if self.ops_on_tpu is not None:
            return self.ops_on_tpu
        return sum(r.count for r in self.rows if r.mapped)

    @property
    def cpu(self) -> int:
        if self.ops_on_cpu is not None:
            return self.ops_on_cpu
        return sum(r.count for r in self.rows if not r.mapped)

    def cpu_rows(self) -> tuple[LogRow, ...]:
        return tuple(r for r in self.rows if not r.mapped)


def parse_compiler_log(text: str) -> CompilerLog:
    """Parse the compiler's stdout and/or its ``*_edgetpu.log`` (both use the same phrases).

    Args:
        text: the compiler's output.

    Returns:
        The parsed log; fields the text does not contain stay None/empty.
    """
    values: dict[str, str] = {}
    for key, pattern in _FIELDS.items():
        match = pattern.search(text)
        if match:
            values[key] = match.group(1)
    rows: dict[tuple[str, str], int] = {}
    in_table = False
    errors = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("ERROR:") or line in ("Model could not be parsed", "Internal compiler error. Aborting!"):
            errors.append(line)
            continue
        if re.match(r"^Operator\s+Count\s+Status$", line):
            in_table = True
            continue
        if in_table and line:
            match = _ROW.match(line)
            if match:
                row_key = (match.group(1), match.group(3))
                # Stdout (-s) and the log file repeat the same table; keep one copy.
                rows[row_key] = max(rows.get(row_key, 0), int(match.group(2)))
            elif not line[0].isupper() or ":" in line:
                in_table = False
    return CompilerLog(
        version=values.get("version"),
        rows=tuple(LogRow(op, count, status) for (op, status), count in rows.items()),
        subgraphs=int(values["subgraphs"]) if "subgraphs" in values else None,
        total_ops=int(values["total"]) if "total" in values else None,
        ops_on_tpu=int(values["on_tpu"]) if "on_tpu" in values else None,
        ops_on_cpu=int(values["on_cpu"]) if "on_cpu" in values else None,
        onchip_memory=values.get("onchip"),
        offchip_memory=values.get("offchip"),
        errors=tuple(errors),
    )


@dataclass(frozen=True)
class CompileResult:
    """The outcome of `compile_for_edgetpu`."""

    status: Literal["compiled", "unavailable", "failed"]
    message: str
    model: Path | None = None
    log_path: Path | None = None
    log: CompilerLog = field(default_factory=CompilerLog)
    preflight: Preflight | None = None

    @property
    def compiled(self) -> bool:
        return self.status == "compiled"

    def cpu_ops_before_postprocess(self) -> dict[str, int]:
        """Ops the compiler left on the CPU that are not part of the detection postprocess tail.

        The log groups by op name only, so the postprocess tail predicted from the model (the custom op and
        the DEQUANTIZE ops feeding only it) is subtracted name by name.
        """
        allowed: dict[str, int] = {}
        if self.preflight is not None:
            for v in self.preflight.ops:
                if v.index in self.preflight.tail:
                    allowed[v.op] = allowed.get(v.op, 0) + 1
                    if v.op not in SUPPORTED_OPS and v.op != "DEQUANTIZE":
                        # The log names custom ops CUSTOM; either spelling is accepted.
                        allowed["CUSTOM"] = allowed.get("CUSTOM", 0) + 1
        extra: dict[str, int] = {}
        for row in self.log.cpu_rows():
            count = row.count - allowed.get(row.op, 0)
            allowed[row.op] = max(0, allowed.get(row.op, 0) - row.count)
            if count > 0:
                extra[row.op] = extra.get(row.op, 0) + count
        return extra

    def summary(self) -> str:
        """Lines for the convert report."""
        if self.status == "unavailable":
            return f"Edge TPU: not compiled: {self.message}"
        if self.status == "failed":
            return f"Edge TPU: compilation failed: {self.message}"
        log = self.log
        lines = [
            f"Edge TPU: compiled {self.model.name if self.model else ''} with edgetpu_compiler {log.version or '?'}: "
            f"{log.mapped} op(s) on the Edge TPU, {log.cpu} on the CPU, {log.subgraphs or 0} Edge TPU subgraph(s)"
        ]
        if log.onchip_memory or log.offchip_memory:
            lines.append(
                f"  parameters: {log.onchip_memory or '?'} cached on chip, {log.offchip_memory or '?'} streamed"
            )
        lines.extend(f"  {r.op} x{r.count}: {r.status}" for r in log.cpu_rows())
        if self.preflight is not None:
            differences = self.differences()
            if differences:
                lines.append(
                    "  the preflight disagrees with the compiler (a bug in edgekit's Edge TPU rules; please report "
                    "it): " + "; ".join(differences)
                )
            else:
                lines.append("  the preflight predicted exactly these CPU ops")
        return "\n".join(lines)

    def differences(self) -> tuple[str, ...]:
        """Per op name, where the compiler's CPU ops (its log) differ from the preflight's prediction."""
        if not self.compiled or self.preflight is None:
            return ()
        actual: dict[str, int] = {}
        for row in self.log.cpu_rows():
            actual[row.op] = actual.get(row.op, 0) + row.count
        return partition_differences(self.preflight, actual)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "message": self.message,
            "model": str(self.model) if self.model else None,
            "log": str(self.log_path) if self.log_path else None,
            "compiler_version": self.log.version,
            "ops_mapped": self.log.mapped,
            "ops_cpu": self.log.cpu,
            "subgraphs": self.log.subgraphs,
            "operations": [{"op": r.op, "count": r.count, "status": r.status} for r in self.log.rows],
            "errors": list(self.log.errors),
            "preflight_differences": list(self.differences()),
        }


def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which(COMPILER)


def compile_for_edgetpu(model_path: str | Path, out_dir: str | Path, *, timeout_s: float = TIMEOUT_S) -> CompileResult:
    """Compile ``model_path`` for the Edge TPU into ``out_dir/<stem>_edgetpu.tflite`` plus its log.

    Nothing is written unless the compiler succeeds; then the model and the log are renamed into place.
    A missing compiler or a refused model is a result, not an exception: the CPU model is still good.

    Args:
        model_path: the int8 .tflite (usually ``model.tflite``).
        out_dir: where ``model_edgetpu.tflite`` and ``model_edgetpu.log`` go.
        timeout_s: wall-clock limit for the compiler process.

    Returns:
        The result, with the parsed operation log and the preflight prediction.

    Raises:
        InputError: ``model_path`` does not exist.
    """
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model file to compile for the Edge TPU")
    predicted = preflight(model_path)
    compiler = find_compiler()
    if compiler is None:
        where = f"{platform.system()} {platform.machine()}"
        return CompileResult("unavailable", f"{COMPILER} is not on PATH ({where}); {INSTALL_HINT}", preflight=predicted)

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{model_path.stem}_edgetpu"
    with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=out_dir) as work:
        command = [compiler, "-s", "-o", work, str(model_path.resolve())]
        logger.info("running %s", " ".join(command))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return CompileResult("failed", f"{COMPILER} did not finish within {timeout_s:.0f} s", preflight=predicted)
        except OSError as exc:
            return CompileResult("failed", f"cannot run {compiler}: {exc.strerror}", preflight=predicted)
        produced = Path(work) / f"{stem}.tflite"
        produced_log = Path(work) / f"{stem}.log"
        text = proc.stdout + "\n" + proc.stderr
        if produced_log.is_file():
            text += "\n" + produced_log.read_text(errors="replace")
        log = parse_compiler_log(text)
        if proc.returncode != 0 or not produced.is_file():
            reason = "; ".join(log.errors) or _last_line(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
            if any("version" in e and "builtin opcode" in e for e in log.errors):
                reason += " (the model uses an op version newer than this compiler knows; see the preflight)"
            return CompileResult("failed", reason, log=log, preflight=predicted)
        # The full console output is the more useful log: it has the memory figures the .log file lacks.
        (Path(work) / f"{stem}.txt").write_text(text)
        target = out_dir / f"{stem}.tflite"
        target_log = out_dir / f"{stem}.log"
        os.replace(Path(work) / f"{stem}.txt", target_log)
        os.replace(produced, target)
    return CompileResult("compiled", "ok", model=target, log_path=target_log, log=log, preflight=predicted)


def check_preflight(model_path: str | Path, *, timeout_s: float = TIMEOUT_S) -> CompileResult:
    """Compile into a temporary folder only to compare the compiler's partition with the preflight.

    Args:
        model_path: a .tflite.
        timeout_s: wall-clock limit for the compiler process.

    Returns:
        The result (`CompileResult.differences`); its ``model`` is gone once this returns.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-check-") as work:
        return compile_for_edgetpu(model_path, work, timeout_s=timeout_s)


def require_full_tpu(result: CompileResult, model_path: str | Path | None = None) -> None:
    """Fail when any op before the detection postprocess would run on the CPU.

    Uses the compiler's log when it ran, else the preflight prediction.

    Args:
        result: what `compile_for_edgetpu` returned.
        model_path: for the message.

    Raises:
        QualityGateError: ops before the postprocess would run on the CPU, or the model did not compile.
    """
    name = str(model_path or (result.preflight.model if result.preflight else "model"))
    if result.compiled:
        extra = result.cpu_ops_before_postprocess()
        if extra:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(extra.items()))
            raise QualityGateError(
                f"{name}: --require-full-tpu: edgetpu_compiler left {ops} on the CPU before the postprocess; "
                f"see {result.log_path}"
            )
        return
    predicted = result.preflight
    if result.status == "failed":
        raise QualityGateError(f"{name}: --require-full-tpu: the Edge TPU compilation failed: {result.message}")
    if predicted is not None and not predicted.full_tpu:
        first = predicted.fatal[0] if predicted.fatal else predicted.cpu_before_postprocess()[0]
        why = f"op {first.index} {first.op}: {first.detail} [{first.rule.id if first.rule else ''}]" if first else ""
        raise QualityGateError(
            f"{name}: --require-full-tpu: the preflight predicts ops before the postprocess on the CPU ({why}); "
            "edgetpu_compiler is not installed to confirm"
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass
class EdgeTpuStage:
    """The Edge TPU step of ``edgekit convert``: a pipeline extension plus the gate checked after writing.

    Every conversion gets the preflight in its report; with ``compile`` the compiler runs in the output folder
    before it is swapped into place, so ``model_edgetpu.tflite`` appears atomically with the rest.
    """

    compile: bool = False
    require_full: bool = False
    predicted: Preflight | None = None
    result: CompileResult | None = None

    def __call__(self, int8_bytes: bytes, folder: Path, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The pipeline extension: returns the report section "Edge TPU"."""
        model_path = folder / "model.tflite"
        self.predicted = preflight(model_path)
        section: dict[str, Any] = {"preflight": self.predicted.summary()}
        if self.compile or self.require_full:
            if self.compile:
                self.result = compile_for_edgetpu(model_path, folder)
            else:
                self.result = CompileResult("unavailable", "not asked (--edgetpu)", preflight=self.predicted)
            if self.compile:
                section["compiler"] = self.result.summary()
        return {"Edge TPU": section}

    def enforce(self, out: Path) -> None:
        """Apply ``--require-full-tpu`` once the model folder is in place.

        Raises:
            QualityGateError: ops before the postprocess run (or would run) on the CPU.
        """
        if self.require_full and self.result is not None:
            require_full_tpu(self.result, out / "model.tflite")
