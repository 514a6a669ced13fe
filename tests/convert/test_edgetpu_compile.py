"""`compile_for_edgetpu` with a STAND-IN `edgetpu_compiler` (tests/tools/edgetpu_stand_in.py, not Coral's compiler).

The stand-in prints Coral's documented console output and writes the documented operation log; which ops it maps
is decided by the test (EDGETPU_STANDIN_CPU_OPS) so that both the success and the refusal paths are exercised.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from edgekit.convert.edgetpu import compile_for_edgetpu, parse_compiler_log, require_full_tpu
from edgekit.errors import InputError, QualityGateError
from edgekit.model.tflite import op_histogram, read_model

SSD = Path(__file__).resolve().parents[1] / "data" / "ssdlite_shapes_int8.tflite"


@pytest.fixture
def int8_model(tiny_models: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "out" / "model.tflite"
    target.parent.mkdir()
    target.write_bytes(tiny_models["int8"].read_bytes())
    return target


def test_compiles_and_reads_the_log(stand_in_compiler: Path, int8_model: Path) -> None:
    result = compile_for_edgetpu(int8_model, int8_model.parent)
    assert result.compiled, result.message
    assert result.model == int8_model.parent / "model_edgetpu.tflite"
    assert result.log_path == int8_model.parent / "model_edgetpu.log"
    assert read_model(result.model).is_edgetpu_compiled
    assert result.log.version == "16.0.384591198"
    assert result.log.mapped == sum(op_histogram(read_model(int8_model)).values()) and result.log.cpu == 0
    assert result.log.subgraphs == 1 and result.log.onchip_memory == "12.25KiB"
    assert {r.op for r in result.log.rows} == {"CONV_2D", "QUANTIZE", "DEPTHWISE_CONV_2D", "MEAN",
                                               "FULLY_CONNECTED", "SOFTMAX"}  # fmt: skip
    assert "Operator" in result.log_path.read_text()
    require_full_tpu(result)  # nothing on the CPU: passes
    assert "0 on the CPU" in result.summary()
    # Only the two outputs remain: the temporary work folder is gone.
    assert sorted(p.name for p in int8_model.parent.iterdir()) == [
        "model.tflite", "model_edgetpu.log", "model_edgetpu.tflite",
    ]  # fmt: skip


def test_ops_left_on_the_cpu_fail_the_full_tpu_gate(
    stand_in_compiler: Path, int8_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "SOFTMAX")
    result = compile_for_edgetpu(int8_model, int8_model.parent)
    assert result.compiled and result.log.cpu == 1
    assert [(r.op, r.status) for r in result.log.cpu_rows()] == [
        ("SOFTMAX", "Operation is working on an unsupported data type")
    ]
    with pytest.raises(QualityGateError, match=r"left SOFTMAX x1 on the CPU") as err:
        require_full_tpu(result, int8_model)
    assert err.value.exit_code == 3


def test_detector_postprocess_on_the_cpu_passes_the_gate(
    stand_in_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(SSD.read_bytes())
    # What the compiler does with this detector's tail: the postprocess (CUSTOM) and the DEQUANTIZE feeding it.
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "DEQUANTIZE")
    result = compile_for_edgetpu(model, tmp_path)
    assert result.compiled
    assert {r.op for r in result.log.cpu_rows()} == {"CUSTOM", "DEQUANTIZE"}
    assert result.cpu_ops_before_postprocess() == {}
    require_full_tpu(result)


def test_compiler_refusal_is_reported_and_nothing_written(
    stand_in_compiler: Path, int8_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_FAIL", "1")
    result = compile_for_edgetpu(int8_model, int8_model.parent)
    assert result.status == "failed"
    assert "Didn't find op for builtin opcode 'CONV_2D' version '6'" in result.message
    assert "newer than this compiler knows" in result.message
    assert sorted(p.name for p in int8_model.parent.iterdir()) == ["model.tflite"]
    with pytest.raises(QualityGateError, match="compilation failed"):
        require_full_tpu(result)


def test_missing_compiler_says_where_to_get_it(
    int8_model: Path, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = compile_for_edgetpu(int8_model, int8_model.parent)
    assert result.status == "unavailable"
    assert "edgetpu_compiler is not on PATH" in result.message and "apt-get install edgetpu-compiler" in result.message
    assert result.preflight is not None and result.preflight.full_tpu
    require_full_tpu(result)  # the preflight predicts a full mapping
    hard_swish = tmp_path / "hs.tflite"
    hard_swish.write_bytes(tiny_models["hard_swish"].read_bytes())
    with pytest.raises(QualityGateError, match=r"op 2 HARD_SWISH.*\[op-list\].*not installed to confirm"):
        require_full_tpu(compile_for_edgetpu(hard_swish, tmp_path))
    with pytest.raises(InputError):
        compile_for_edgetpu(tmp_path / "absent.tflite", tmp_path)


def test_parse_documented_log_format() -> None:
    text = """Edge TPU Compiler version 16.0.384591198
Input: mobilenet_v2_quant.tflite
Output: mobilenet_v2_quant_edgetpu.tflite

Operator                       Count      Status

SOFTMAX                        1          Mapped to Edge TPU
ADD                            10         Mapped to Edge TPU
CONV_2D                        36         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
CUSTOM                         1          Operation is working on an unsupported data type
RESHAPE                        2          More than one subgraph is not supported
"""
    log = parse_compiler_log(text)
    assert log.version == "16.0.384591198"
    assert log.mapped == 64 and log.cpu == 3
    assert [(r.op, r.count) for r in log.cpu_rows()] == [("CUSTOM", 1), ("RESHAPE", 2)]
    assert log.cpu_rows()[1].status == "More than one subgraph is not supported"


def test_every_conversion_reports_the_preflight(converted: tuple[Path, dict]) -> None:
    out, report = converted
    section = report["sections"]["Edge TPU"]
    assert section["preflight"].startswith("Edge TPU preflight: all ")
    assert "compiler" not in section  # --edgetpu was not given
    assert not (out / "model_edgetpu.tflite").exists()


def test_convert_edgetpu_writes_and_links_the_compiled_model(
    stand_in_compiler: Path, small_keras: Path, calib_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli
    from edgekit.model.manifest import load_manifest

    out = tmp_path / "model"
    args = ["convert", str(small_keras), "--calib", str(calib_dir), "--num-calib", "10", "--out", str(out), "--json"]
    # One conversion covers both halves (each costs tens of seconds): the stand-in leaves MEAN on the CPU, so
    # the model folder, compiled model and log are written and linked, and then the gate exits 3.
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "MEAN")
    result = CliRunner().invoke(cli, [*args, "--edgetpu", "--require-full-tpu"])
    assert result.exit_code == 3, result.output
    assert "--require-full-tpu: edgetpu_compiler left MEAN x1 on the CPU before the postprocess" in result.output
    report = json.loads(result.stdout)
    assert "MEAN x1: Operation is working on an unsupported data type" in report["sections"]["Edge TPU"]["compiler"]
    assert load_manifest(out).edgetpu_model == "model_edgetpu.tflite"
    assert read_model(out / "model_edgetpu.tflite").is_edgetpu_compiled
    assert "Operator" in (out / "model_edgetpu.log").read_text()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_the_compiler_and_the_preflight_are_compared(
    stand_in_compiler: Path, int8_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from edgekit.cli import cli

    result = compile_for_edgetpu(int8_model, int8_model.parent)
    assert result.differences() == () and "the preflight predicted exactly these CPU ops" in result.summary()
    # The stand-in leaves SOFTMAX on the CPU where the preflight maps it: the difference is printed.
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "SOFTMAX")
    before = sorted(p.name for p in int8_model.parent.iterdir())
    cli_result = CliRunner().invoke(cli, ["inspect", "--edgetpu", "--compile", str(int8_model)])
    assert cli_result.exit_code == 0, cli_result.output
    assert cli_result.output.splitlines()[-1] == (
        "  the preflight disagrees with the compiler (a bug in edgekit's Edge TPU rules; please report it): "
        "SOFTMAX: preflight 0 on the CPU, edgetpu_compiler 1"
    )
    assert sorted(p.name for p in int8_model.parent.iterdir()) == before  # compiled in a temporary folder
    # The detector's postprocess is CUSTOM in the log and TFLite_Detection_PostProcess in the model: the same op.
    detector = int8_model.parent / "ssd.tflite"
    detector.write_bytes(SSD.read_bytes())
    monkeypatch.setenv("EDGETPU_STANDIN_CPU_OPS", "")
    checked = CliRunner().invoke(cli, ["inspect", "--json", "--compile", str(detector)])
    data = json.loads(checked.output)
    assert data["edgetpu_compiler"]["status"] == "compiled"
    predicted_cpu = Counter(v["op"] for v in data["edgetpu_preflight"]["ops"] if not v["maps"])
    assert predicted_cpu["TFLite_Detection_PostProcess"] == 1  # the log's CUSTOM row: no difference
    assert data["edgetpu_compiler"]["preflight_differences"] == [
        f"{op}: preflight {n} on the CPU, edgetpu_compiler 0"
        for op, n in sorted(predicted_cpu.items())
        if op != "TFLite_Detection_PostProcess"
    ]
