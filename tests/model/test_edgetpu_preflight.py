"""Edge TPU preflight on real conversions: what maps, what falls to the CPU, and which rule says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.model.edgetpu import RULES, preflight, verdicts_by_op
from edgekit.model.tflite import read_model
from tests.tools.edgetpu_stand_in import compiled_model


def _bump_version(src: Path, dst: Path, op_name: str, version: int) -> Path:
    """Copy a model with one op's version raised, as a newer TensorFlow would write it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == getattr(schema.BuiltinOperator, op_name):
            code.version = version
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_int8_classifier_maps_completely(tiny_models: dict[str, Path]) -> None:
    result = preflight(tiny_models["int8"])
    assert result.compiles and result.full_tpu
    assert result.mapped == len(read_model(tiny_models["int8"]).operators) == 8
    assert result.first_cpu_op is None and result.postprocess_index is None
    # QUANTIZE (uint8 <-> int8 at the ends) needs runtime 13.
    assert result.required_runtime == 13
    assert result.summary() == "Edge TPU preflight: all 8 ops map to the Edge TPU"


def test_mobilenet_maps_completely(tiny_models: dict[str, Path]) -> None:
    result = preflight(tiny_models["mobilenet"])
    assert result.full_tpu and result.on_cpu == 0 and result.mapped == 67
    assert verdicts_by_op(result)["DEPTHWISE_CONV_2D"] == (17, 0)
    assert result.to_dict()["ops_mapped"] == 67


def test_unsupported_op_in_the_middle_takes_the_rest_to_the_cpu(tiny_models: dict[str, Path]) -> None:
    result = preflight(tiny_models["hard_swish"])
    first = result.first_cpu_op
    assert first is not None and first.op == "HARD_SWISH" and first.index == 2
    assert first.rule == RULES["op-list"]
    assert [v.maps for v in result.ops[:2]] == [True, True]  # QUANTIZE and the first CONV_2D
    after = result.ops[3:]
    assert after and all(not v.maps and v.rule == RULES["one-subgraph"] for v in after)
    assert not result.full_tpu and result.mapped == 2
    text = result.summary()
    assert "op 2 (HARD_SWISH)" in text and "[op-list]" in text and "[one-subgraph]" in text
    assert verdicts_by_op(result)["CONV_2D"] == (1, 1)


def test_float_model_fails_the_int8_rule_at_the_first_op(tiny_models: dict[str, Path]) -> None:
    result = preflight(tiny_models["float"])
    assert result.mapped == 0 and not result.full_tpu
    first = result.first_cpu_op
    assert first is not None and first.index == 0 and first.op == "CONV_2D"
    assert first.rule == RULES["int8"] and "float32" in first.detail


def test_dynamic_shape_is_flagged(tiny_models: dict[str, Path]) -> None:
    result = preflight(tiny_models["dynamic"])
    first = result.first_cpu_op
    assert first is not None and first.index == 0
    assert first.rule == RULES["static-shape"] and "-1" in first.detail
    # Every op with a free size is named, and the compiler refuses the model as a whole.
    assert not result.compiles and not result.full_tpu
    assert [v.index for v in result.fatal] == [0, 1, 2, 3, 4]
    assert "edgetpu_compiler would refuse this model" in result.summary()


def test_op_version_newer_than_the_compiler_refuses_the_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    bumped = _bump_version(tiny_models["int8"], tmp_path / "v6.tflite", "CONV_2D", 6)
    result = preflight(bumped)
    assert not result.compiles and not result.full_tpu
    assert [(v.op, v.version) for v in result.fatal] == [("CONV_2D", 6), ("CONV_2D", 6)]
    assert all(v.rule == RULES["op-version"] for v in result.fatal)
    assert "would refuse this model" in result.summary() and "v5" in result.summary()


def test_compiled_model_is_recognised(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    compiled = compiled_model(tiny_models["int8"], tmp_path / "model_edgetpu.tflite", min_runtime_version=14)
    result = preflight(compiled)
    assert result.already_compiled and "already compiled" in result.summary()
    model = read_model(compiled)
    assert model.edgetpu_runtime_required == 14
    assert model.edgetpu[0].compiler_version == "16.0.384591198"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_has_text(rule: str) -> None:
    assert RULES[rule].id == rule and len(RULES[rule].text) > 20


SSD = Path(__file__).resolve().parents[1] / "data" / "ssdlite_shapes_int8.tflite"


def test_ssd_detector_keeps_the_postprocess_on_the_cpu() -> None:
    """The int8 SSDLite-MobileNetV2 (alpha 0.35, 160 px) that `edgekit convert --task detect` wrote on the
    detect branch for its generated-shapes detector (tests/data/ssdlite_shapes_int8.tflite)."""
    result = preflight(SSD)
    assert result.compiles
    post = result.postprocess_index
    assert post is not None and result.ops[post].op == "TFLite_Detection_PostProcess"
    assert result.ops[post].rule == RULES["custom-op"]
    # The DEQUANTIZE ops that hand float boxes/scores to the postprocess belong to it.
    tail_ops = sorted(result.ops[i].op for i in result.tail)
    assert tail_ops == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    # Backbone and box heads map; only the class-score softmax over [1, anchors, classes] breaks Coral's
    # "Softmax: 1-D input" limit, which is why Coral's own SSDs score classes with a sigmoid.
    blocking = result.cpu_before_postprocess()
    assert [(v.op, v.rule.id if v.rule else "") for v in blocking] == [("SOFTMAX", "softmax")]
    assert not result.full_tpu
    assert all(v.maps for v in result.ops if v.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD"))
    assert "detection postprocess on the CPU, as intended" in result.summary()
