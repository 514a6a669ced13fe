"""Stand-ins for Coral software that cannot be installed here (clearly not Coral's own files).

- `compiled_model`: writes a .tflite shaped like ``edgetpu_compiler`` output (one ``edgetpu-custom-op`` from the
  model's input to its output, custom options a FlexBuffer map whose key "4" holds a DarwiNN ``Package`` with
  ``min_runtime_version``), built from a real CPU model. Its executable is NOT a real Edge TPU program.
- `COMPILER_SCRIPT`: an ``edgetpu_compiler`` stand-in script that writes the compiler's documented stdout and
  operation log for a model, mapping or refusing ops according to environment variables.
"""

from __future__ import annotations

from pathlib import Path


def _package(min_runtime_version: int, compiler_version: str) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(256)
    version = builder.CreateString(compiler_version)
    executable = builder.CreateByteVector(b"stand-in executable, not an Edge TPU program")
    builder.StartObject(8)
    builder.PrependInt32Slot(0, min_runtime_version, 0)  # Package.min_runtime_version
    builder.PrependUOffsetTRelativeSlot(1, executable, 0)  # serialized_multi_executable
    builder.PrependUOffsetTRelativeSlot(4, version, 0)  # compiler_version
    root = builder.EndObject()
    builder.Finish(root, file_identifier=b"DWN1")
    return bytes(builder.Output())


def custom_options(min_runtime_version: int = 14, compiler_version: str = "16.0.384591198") -> bytes:
    """The FlexBuffer map libedgetpu reads from an edgetpu-custom-op."""
    from flatbuffers import flexbuffers

    builder = flexbuffers.Builder()
    with builder.Map():
        builder.Int("1", 1)
        builder.Key("4")
        builder.Blob(_package(min_runtime_version, compiler_version))
        builder.Int("5", 0)
        builder.Key("6")
        builder.VectorFromElements([0])
        builder.Key("7")
        with builder.Vector():
            pass
    return bytes(builder.Finish())


def compiled_model(
    cpu_model: Path, out: Path, min_runtime_version: int = 14, compiler_version: str = "16.0.384591198"
) -> Path:
    """Write a stand-in "compiled" model: the CPU model's input and output joined by one edgetpu-custom-op."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(cpu_model.read_bytes(), 0)
    graph = model.subgraphs[0]
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "edgetpu-custom-op"
    code.version = 1
    model.operatorCodes = [code]
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = list(graph.inputs)
    op.outputs = list(graph.outputs)
    op.customOptions = list(custom_options(min_runtime_version, compiler_version))
    graph.operators = [op]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


COMPILER_SCRIPT = r"""#!{python}
# STAND-IN for Coral's edgetpu_compiler (tests only): prints the documented output for a real .tflite.
import os, sys
sys.path[:0] = {paths!r}
from pathlib import Path
from edgekit.model.tflite import read_model, op_histogram
from tests.tools.edgetpu_stand_in import compiled_model

args = sys.argv[1:]
out_dir = Path(args[args.index("-o") + 1]) if "-o" in args else Path.cwd()
model_path = Path(args[-1])
print("Edge TPU Compiler version 16.0.384591198")
if os.environ.get("EDGETPU_STANDIN_FAIL"):
    print("ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'. An older version of this builtin might "
          "be supported. Are you using an old TFLite binary with a newer model?")
    print("")
    print("ERROR: Registration failed.")
    print("")
    print("Invalid model: " + str(model_path))
    print("Model could not be parsed")
    sys.exit(1)
model = read_model(model_path)
cpu_names = set(filter(None, os.environ.get("EDGETPU_STANDIN_CPU_OPS", "").split(",")))
rows = []
for name, count in op_histogram(model).items():
    if name in cpu_names or name == "TFLite_Detection_PostProcess":
        shown = "CUSTOM" if name == "TFLite_Detection_PostProcess" else name
        rows.append((shown, count, "Operation is working on an unsupported data type"))
    else:
        rows.append((name, count, "Mapped to Edge TPU"))
on_tpu = sum(c for _, c, s in rows if s == "Mapped to Edge TPU")
on_cpu = sum(c for _, c, s in rows if s != "Mapped to Edge TPU")
stem = model_path.stem + "_edgetpu"
compiled_model(model_path, out_dir / (stem + ".tflite"))
table = ["Operator                       Count      Status", ""]
table += ["%-30s %-10d %s" % row for row in rows]
(out_dir / (stem + ".log")).write_text(
    "Edge TPU Compiler version 16.0.384591198\nInput: %s\nOutput: %s.tflite\n\n" % (model_path.name, stem)
    + "\n".join(table) + "\n")
print("\nModel compiled successfully in 352 ms.\n")
print("Input model: " + str(model_path))
print("Input size: 4.79KiB")
print("Output model: " + str(out_dir / (stem + ".tflite")))
print("On-chip memory used for caching model parameters: 12.25KiB")
print("On-chip memory remaining for caching model parameters: 7.98MiB")
print("Off-chip memory used for streaming uncached model parameters: 0.00B")
print("Number of Edge TPU subgraphs: 1")
print("Total number of operations: %d" % (on_tpu + on_cpu))
print("Operation log: " + stem + ".log")
if on_cpu:
    print("\nModel successfully compiled but not all operations are supported by the Edge TPU. A percentage of the "
          "model will instead run on the CPU, which is slower.")
    print("Number of operations that will run on Edge TPU: %d" % on_tpu)
    print("Number of operations that will run on CPU: %d" % on_cpu)
print("\n" + "\n".join(table))
print("Compilation child process completed within timeout period.")
print("Compilation succeeded! ")
"""


def install_compiler(bin_dir: Path, repo: Path) -> Path:
    """Write the stand-in ``edgetpu_compiler`` into ``bin_dir`` (put it first on PATH yourself)."""
    import stat
    import sys

    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(COMPILER_SCRIPT.replace("{python}", sys.executable).replace("{paths!r}", repr([str(repo)])))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script
