"""Conformance on everything in tests/data/coral/ (Coral's own models and data, not edgekit's).

- every X.tflite / X_edgetpu.tflite pair: the preflight's CPU ops equal the ops the real edgetpu_compiler left
  outside edgetpu-custom-op, op by op, and the compiled file's partition is what `edgekit inspect` shows;
- Coral's MobileNetV2 with its labels on Coral's images: `edgekit run`'s top-1 id and label equal a bare
  interpreter fed a stretched (cv2 bilinear) resize;
- models edgekit does not run (DeepLab segmentation, MoveNet keypoints) are refused by `edgekit run`, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.model.edgetpu import compiled_partition, cpu_histogram, partition_differences, preflight
from edgekit.model.tflite import EDGETPU_CUSTOM_OP, read_model

CORAL = Path(__file__).resolve().parent / "data" / "coral"
PAIRS = sorted(p for p in (CORAL / "edgetpu-pairs").glob("*.tflite") if not p.stem.endswith("_edgetpu"))
CLASSIFIER = CORAL / "mobilenet_v2_1.0_224_quant.tflite"
IMAGES = sorted((CORAL / "images").glob("*.bmp"))


def test_the_pairs_are_all_here() -> None:
    assert [p.stem for p in PAIRS] == [
        "deeplabv3_mnv2_pascal_quant",
        "keras_lstm_mnist_ptq",
        "mobilenet_v1_0.25_128_quant",
        "movenet_single_pose_lightning_ptq",
    ]


@pytest.mark.parametrize("model", PAIRS, ids=lambda p: p.stem)
def test_preflight_agrees_with_the_real_compiler(model: Path) -> None:
    compiled = read_model(model.with_name(model.stem + "_edgetpu.tflite"))
    predicted = preflight(model)
    partition = compiled_partition(compiled)
    # Op by op: the compiler keeps CPU ops' output tensor names, so each predicted CPU op can be found.
    cpu_names = {
        compiled.main.tensor(o).name
        for op in compiled.main.operators
        if op.name != EDGETPU_CUSTOM_OP
        for o in op.outputs
    }
    source = read_model(model).main
    actual = [op.index for op in source.operators if any(source.tensor(o).name in cpu_names for o in op.outputs)]
    assert [v.index for v in predicted.ops if not v.maps] == actual
    assert cpu_histogram(predicted) == partition.cpu_histogram
    assert partition_differences(predicted, partition) == ()
    assert predicted.compiles and len(partition.tpu) == 1


def test_fully_mapping_pairs_stay_fully_mapped() -> None:
    full = {p.stem for p in PAIRS if not compiled_partition(p.with_name(p.stem + "_edgetpu.tflite")).cpu_histogram}
    assert full == {"keras_lstm_mnist_ptq", "mobilenet_v1_0.25_128_quant"}
    for stem in full:
        result = preflight(CORAL / "edgetpu-pairs" / f"{stem}.tflite")
        assert result.full_tpu and result.on_cpu == 0
        assert result.summary().startswith(f"Edge TPU preflight: all {len(result.ops)} ops map")


def test_inspect_of_a_compiled_file_shows_where_the_edge_tpu_part_sits() -> None:
    compiled = CORAL / "edgetpu-pairs" / "movenet_single_pose_lightning_ptq_edgetpu.tflite"
    result = CliRunner().invoke(cli, ["inspect", str(compiled)])
    assert result.exit_code == 0, result.output
    assert (
        "Edge TPU partition (by edgetpu_compiler): 1 Edge TPU subgraph(s) at op 2; 59 op(s) on the CPU" in result.output
    )
    assert "CPU before the Edge TPU part: CAST (op 0), QUANTIZE (op 1)\n" in result.output
    assert "CPU after the Edge TPU part: ARG_MAX (op 3), FLOOR_DIV (op 4), CAST (op 5)," in result.output
    # The preflight of the source model says the same: two CPU ops before, the rest after op 89.
    source = CliRunner().invoke(
        cli, ["inspect", "--edgetpu", str(compiled.with_name(compiled.name.replace("_edgetpu", "")))]
    )
    assert (
        "98 of 157 ops map, 59 run on the CPU; 2 before the Edge TPU part (from op 0 CAST); the Edge TPU part "
        "ends at op 89 (ARG_MAX)" in source.output
    )
    data = json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(compiled)]).output)
    assert data["edgetpu_partition"]["cpu_before"] == [{"index": 0, "op": "CAST"}, {"index": 1, "op": "QUANTIZE"}]


def _bare_top1(image_path: Path) -> int:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(CLASSIFIER), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    _, h, w, _ = detail["shape"]
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    interpreter.set_tensor(detail["index"], cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)[None])
    interpreter.invoke()
    return int(np.argmax(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))


def test_coral_classifier_top1_equals_a_bare_interpreter() -> None:
    result = CliRunner().invoke(
        cli,
        ["run", "--model", str(CLASSIFIER), "--labels", str(CORAL / "imagenet_labels.txt"), "--source",
         str(CORAL / "images"), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith('{"type":"result"')]
    labels = (CORAL / "imagenet_labels.txt").read_text(encoding="utf-8").splitlines()
    top = [(r["classes"][0]["id"], r["classes"][0]["label"]) for r in records]
    assert top == [(_bare_top1(p), labels[_bare_top1(p)]) for p in IMAGES]
    assert [label for _, label in top] == ["chickadee", "Egyptian cat", "military uniform"]  # bird, cat, grace_hopper


@pytest.mark.parametrize(
    ("stem", "looks_like"),
    [
        ("deeplabv3_mnv2_pascal_quant", "a segmentation map [1, 513, 513]"),
        ("movenet_single_pose_lightning_ptq", "keypoints [1, 1, 17, 3]"),
    ],
)
def test_models_edgekit_does_not_run_are_refused(stem: str, looks_like: str) -> None:
    model = CORAL / "edgetpu-pairs" / f"{stem}.tflite"
    result = CliRunner().invoke(cli, ["run", "--model", str(model), "--source", str(CORAL / "images")])
    assert result.exit_code == 2
    assert result.output == (
        f"Error: {model}: its output is {looks_like}, not a classifier or a detector; edgekit runs classifiers "
        "(one [1, N] scores output) and SSD detectors (the four TFLite_Detection_PostProcess outputs)\n"
    )
    inspected = CliRunner().invoke(cli, ["inspect", str(model)])
    assert f"task: not runnable by edgekit: {looks_like}" in inspected.output
