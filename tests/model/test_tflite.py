"""The .tflite reader against real conversions, cross-checked with the TFLite runtime's own view of each model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import InputError, ModelError
from edgekit.model.tflite import (
    DETECTION_POSTPROCESS_OP,
    flexbuffer_map,
    op_histogram,
    parse_model,
    read_model,
)


def _interpreter(path: Path):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.parametrize("name", ["int8", "float", "dynamic", "hard_swish", "mobilenet"])
def test_tensors_and_ops_match_the_runtime(tiny_models: dict[str, Path], name: str) -> None:
    model = read_model(tiny_models[name])
    interpreter = _interpreter(tiny_models[name])
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    graph = model.main
    assert len(graph.tensors) >= len(details)
    for index, d in details.items():
        tensor = graph.tensors[index]
        assert tensor.name == d["name"]
        assert tensor.dtype == np.dtype(d["dtype"]).name
        if tensor.shape_signature is not None:
            assert list(tensor.shape_signature) == d["shape_signature"].tolist()
        q = d["quantization_parameters"]
        assert list(tensor.quantization.scale) == pytest.approx(q["scales"].tolist())
        assert list(tensor.quantization.zero_point) == q["zero_points"].tolist()
        if tensor.quantization.per_axis:
            assert tensor.quantization.quantized_dimension == q["quantized_dimension"]
        if tensor.is_constant and tensor.dtype in ("int8", "int32", "float32"):
            np.testing.assert_array_equal(model.constant(tensor), interpreter.get_tensor(index))
    ops = [o for o in interpreter._get_ops_details() if o["op_name"] != "DELEGATE"]  # XNNPACK adds its own node
    assert [op.name for op in model.operators] == [o["op_name"] for o in ops]
    assert [list(op.inputs) for op in model.operators] == [o["inputs"].tolist() for o in ops]
    assert [list(op.outputs) for op in model.operators] == [o["outputs"].tolist() for o in ops]
    assert [t.index for t in model.inputs] == [d["index"] for d in interpreter.get_input_details()]
    assert [t.index for t in model.outputs] == [d["index"] for d in interpreter.get_output_details()]


def test_int8_classifier_io_options_and_metadata(tiny_models: dict[str, Path]) -> None:
    model = read_model(tiny_models["int8"])
    (inp,) = model.inputs
    assert (inp.dtype, inp.shape, inp.is_dynamic) == ("uint8", (1, 32, 32, 3), False)
    assert inp.quantization.scale[0] == pytest.approx(1 / 255, rel=1e-3)
    (out,) = model.outputs
    assert (out.dtype, out.shape) == ("uint8", (1, 5))
    assert op_histogram(model) == {
        "CONV_2D": 2, "QUANTIZE": 2, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "MEAN": 1, "SOFTMAX": 1,
    }  # fmt: skip
    conv = model.operators[1]
    assert conv.name == "CONV_2D" and conv.version >= 3
    assert conv.options["stride_w"] == 2 and conv.options["padding"] == "SAME"
    assert conv.options["fused_activation_function"] == "RELU"
    weights = model.main.tensors[conv.inputs[1]]
    assert weights.quantization.per_axis and weights.quantization.quantized_dimension == 0
    assert weights.buffer_bytes == 8 * 3 * 3 * 3
    assert model.main.tensors[conv.inputs[2]].dtype == "int32"
    assert model.min_runtime_version and model.min_runtime_version[0].isdigit()
    assert model.description and "serving_default" in model.signatures
    assert not model.is_edgetpu_compiled and model.edgetpu_runtime_required is None
    assert not model.has_op(DETECTION_POSTPROCESS_OP)


def test_dynamic_shape_is_reported(tiny_models: dict[str, Path]) -> None:
    model = read_model(tiny_models["dynamic"])
    (inp,) = model.inputs
    assert inp.is_dynamic and inp.shape_signature == (1, -1, -1, 3)
    assert inp.to_dict()["shape_signature"] == [1, -1, -1, 3]
    assert not read_model(tiny_models["int8"]).inputs[0].is_dynamic


def test_histogram_of_mobilenet(tiny_models: dict[str, Path]) -> None:
    counts = op_histogram(read_model(tiny_models["mobilenet"]))
    assert counts["CONV_2D"] == 35 and counts["DEPTHWISE_CONV_2D"] == 17 and counts["ADD"] == 10
    assert next(iter(counts)) == "CONV_2D"  # most frequent first


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model file"):
        read_model(tmp_path / "absent.tflite")
    with pytest.raises(InputError, match="folder"):
        read_model(tmp_path)
    (tmp_path / "x.tflite").write_bytes(b"PK\x03\x04" + b"\0" * 60)
    with pytest.raises(ModelError, match="no 'TFL3' identifier"):
        read_model(tmp_path / "x.tflite")
    (tmp_path / "y.tflite").write_bytes(b"\x10\0\0\0TFL3")
    with pytest.raises(ModelError, match="too short"):
        read_model(tmp_path / "y.tflite")


def test_truncated_files_never_crash(tiny_models: dict[str, Path]) -> None:
    data = tiny_models["int8"].read_bytes()
    failures = 0
    for cut in range(0, len(data), 7):
        try:
            parse_model(data[:cut], "cut.tflite")
        except ModelError as exc:
            assert exc.message.startswith("cut.tflite: ")
            failures += 1
    # A FlatBuffer's root table and vtables sit near the front and its buffers at the back: every cut loses data.
    assert failures == len(range(0, len(data), 7))


def test_random_bytes_and_bit_flips_never_crash(tiny_models: dict[str, Path]) -> None:
    rng = np.random.default_rng(1)
    data = bytearray(tiny_models["int8"].read_bytes())
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(400):
        mutated = bytearray(data)
        for pos in rng.integers(8, len(data), size=int(rng.integers(1, 8))):
            mutated[pos] = int(rng.integers(0, 256))
        try:
            parse_model(bytes(mutated), "flip.tflite")
            outcomes["parsed"] += 1
        except ModelError:
            outcomes["refused"] += 1
    for _ in range(100):
        noise = b"\x18\0\0\0TFL3" + rng.integers(0, 256, size=int(rng.integers(8, 4000)), dtype=np.uint8).tobytes()
        with pytest.raises(ModelError):
            parse_model(noise, "noise.tflite")
    assert outcomes["refused"] > 0  # corruption of offsets is detected, not read past


def test_flexbuffer_map_reads_what_flatbuffers_writes() -> None:
    from flatbuffers import flexbuffers

    builder = flexbuffers.Builder()
    with builder.Map():
        builder.Int("1", 7)
        builder.Key("4")
        builder.String("executable-bytes")
        builder.Int("5", -3)
        builder.Key("6")
        builder.VectorFromElements([2, 300, 70000])
        builder.Key("7")
        with builder.Vector():
            builder.String("second")
            builder.String("third")
        builder.Float("f", 0.5)
        builder.Bool("b", True)
    decoded = flexbuffer_map(bytes(builder.Finish()))
    assert decoded["1"] == 7 and decoded["5"] == -3
    assert decoded["4"] == b"executable-bytes"
    assert decoded["6"] == [2, 300, 70000]
    assert decoded["7"] == [b"second", b"third"]
    assert decoded["f"] == 0.5 and decoded["b"] is True
