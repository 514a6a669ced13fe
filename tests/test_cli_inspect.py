"""`edgekit inspect` on real models, with and without --edgetpu, and its bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

from edgekit.cli import cli

SSD = Path(__file__).resolve().parent / "data" / "ssdlite_shapes_int8.tflite"


def test_inspect_text(tiny_models: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["inspect", str(tiny_models["int8"])])
    assert result.exit_code == 0, result.output
    assert "image" in result.output  # the input tensor's name
    assert re.search(r"uint8 \[1, 32, 32, 3\] scale=0\.003921\d+ zero_point=0", result.output)
    assert "ops: CONV_2D x2, QUANTIZE x2" in result.output
    assert "task: classify (5 classes) (from the output tensors; no edgekit.json)" in result.output
    assert "Edge TPU preflight" not in result.output


def test_inspect_edgetpu_flags_the_unsupported_op(tiny_models: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["inspect", "--edgetpu", str(tiny_models["hard_swish"])])
    assert result.exit_code == 0, result.output
    assert "the Edge TPU part ends at op 2 (HARD_SWISH)" in result.output
    assert "[op-list]" in result.output


def test_inspect_json_of_a_detector_folder(tmp_path: Path) -> None:
    folder = tmp_path / "det"
    folder.mkdir()
    shutil.copy(SSD, folder / "model.tflite")
    (folder / "edgekit.json").write_text(
        json.dumps(
            {
                "format": "edgekit-model",
                "version": 1,
                "task": "detect",
                "input": {"height": 160, "width": 160},
                "preprocess": {},
                "outputs": [],
            }
        )
    )
    result = CliRunner().invoke(cli, ["inspect", "--json", "--edgetpu", str(folder)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["task"] == "detect" and data["detection_postprocess"] is True
    assert data["inputs"][0]["dtype"] == "uint8" and data["inputs"][0]["quantization"]["zero_point"] == 127
    assert [o["shape"] for o in data["outputs"]] == [[1, 20, 4], [1, 20], [1, 20], [1]]
    assert data["ops"]["TFLite_Detection_PostProcess"] == 1
    assert data["edgetpu_preflight"]["postprocess_tail"] == [109, 115, 116]


def test_inspect_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(tmp_path / "absent.tflite")])
    assert result.exit_code == 2 and result.output.strip() == f"Error: {tmp_path / 'absent.tflite'}: no such model file"
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all, just text")
    result = runner.invoke(cli, ["inspect", str(junk)])
    assert result.exit_code == 2 and "not a TFLite model" in result.output
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 2 and "no edgekit.json here" in result.output
