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
