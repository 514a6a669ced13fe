"""Bad input to `edgekit convert`: one exact line, exit 2, and no output folder left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.errors import InputError
from edgekit.model.labels import labels_for_outputs


def _convert(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["convert", *args])
    return result.exit_code, result.output


def _no_leftovers(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_missing_calib(tmp_path: Path, small_keras: Path) -> None:
    out = tmp_path / "out"
    code, output = _convert([str(small_keras), "--calib", str(tmp_path / "nope"), "--out", str(out)])
    assert code == 2
    assert output == (
        f"Error: --calib {tmp_path / 'nope'}: no such file or folder; give a folder of images or a video file\n"
    )
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_empty_calib(tmp_path: Path, small_keras: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no pictures here")
    code, output = _convert([str(small_keras), "--calib", str(empty), "--out", str(tmp_path / "out")])
    assert code == 2
    assert output.startswith(f"Error: --calib {empty}: no images found (looked recursively for .bmp, .jpeg, .jpg")
    assert output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_too_few_readable_images(tmp_path: Path, small_keras: Path, photos: list[Path]) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for p in photos[:4]:
        (folder / p.name).write_bytes(p.read_bytes())
    for i in range(8):
        (folder / f"junk{i}.png").write_bytes(b"\x89PNG garbage")
    code, output = _convert([str(small_keras), "--calib", str(folder), "--out", str(tmp_path / "out")])
    assert code == 2
    assert output == (
        f"Error: --calib {folder}: only 4 usable images (8 unreadable files skipped); at least 10 are needed, "
        "and a few hundred from the camera's own scene work best\n"
    )
    assert not (tmp_path / "out").exists()
    _no_leftovers(tmp_path)


def test_file_that_is_not_a_model(tmp_path: Path, calib_dir: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_text("definitely not a zip archive")
    code, output = _convert([str(bogus), "--calib", str(calib_dir), "--out", str(tmp_path / "out")])
    assert code == 2
    assert output.startswith(f"Error: {bogus}: not a readable Keras model (")
    assert output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unknown_model_name(tmp_path: Path, calib_dir: Path) -> None:
    code, output = _convert(["mobilenet_v9", "--calib", str(calib_dir), "--out", str(tmp_path / "out")])
    assert code == 2
    assert output == (
        "Error: mobilenet_v9: no such file, and not a built-in architecture "
        "(mobilenet_v1, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large)\n"
    )


def test_dynamic_input_needs_input_size(tmp_path: Path, calib_dir: Path) -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "dynamic.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x)).save(path)
    code, output = _convert([str(path), "--calib", str(calib_dir), "--out", str(tmp_path / "out")])
    assert code == 2
    assert output == (
        f"Error: {path}: input shape (None, None, None, 3) has no fixed height/width; pass --input-size (e.g. 224)\n"
    )
    assert not (tmp_path / "out").exists()


def test_non_image_input(tmp_path: Path, calib_dir: Path) -> None:
    import keras

    inputs = keras.Input((10,))
    path = tmp_path / "tabular.keras"
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs)).save(path)
    code, output = _convert(
        [str(path), "--calib", str(calib_dir), "--out", str(tmp_path / "out"), "--input-size", "96"]
    )
    assert code == 2
    assert output == (
        f"Error: {path}: input shape (None, 10) is not an RGB image (batch, height, width, 3); "
        "edgekit convert handles image classifiers\n"
    )


def test_label_count_mismatch(tmp_path: Path, small_keras: Path, calib_dir: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    code, output = _convert(
        [str(small_keras), "--calib", str(calib_dir), "--out", str(tmp_path / "out"), "--labels", str(labels)]
    )
    assert code == 2
    assert output == (
        f"Error: {labels}: 2 labels but {small_keras} has 5 outputs; give the labels file that belongs to this model\n"
    )
    assert not (tmp_path / "out").exists()


def test_labels_in_the_formats_run_reads(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("0 tabby cat\n1: dog\n2, fish\n")
    assert labels_for_outputs(str(ids), "classify", 3, "m.keras") == ("tabby cat", "dog", "fish")
    ids.write_text("0 cat\n2 fish\n")
    with pytest.raises(InputError, match=r"ids.txt: no label for output 1 \(labels for 2 of 3 outputs\)"):
        labels_for_outputs(str(ids), "classify", 3, "m.keras")
    coral = Path(__file__).resolve().parents[1] / "data" / "coral" / "imagenet_labels.txt"
    labels = labels_for_outputs(str(coral), "classify", 1001, "mobilenet_v2")
    assert labels[0] == "background" and labels[286] == "Egyptian cat"


def test_checkpoint_of_another_architecture(tmp_path: Path, calib_dir: Path) -> None:
    from edgekit.convert.zoo import torchvision_imagenet_checkpoint

    checkpoint = torchvision_imagenet_checkpoint()  # a MobileNetV2 checkpoint, asked to be a V3
    code, output = _convert(
        ["mobilenet_v3_small", "--weights", str(checkpoint), "--calib", str(calib_dir), "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert output.startswith(f"Error: {checkpoint}: ")
    assert "features." in output  # names the first tensor that does not fit
    assert output.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_existing_foreign_out_is_refused_without_force(tmp_path: Path, small_keras: Path, calib_dir: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    code, output = _convert([str(small_keras), "--calib", str(calib_dir), "--out", str(out)])
    assert code == 2
    assert output == (
        f"Error: --out {out}: exists and is not an edgekit model folder; choose another --out or pass --force\n"
    )
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-calib", "5"], "Error: --num-calib 5: at least 10 images are needed\n"),
        (["--min-agreement", "1.5"], "Error: --min-agreement 1.5: must be between 0 and 1\n"),
    ],
)
def test_bad_numbers(tmp_path: Path, small_keras: Path, calib_dir: Path, args: list[str], message: str) -> None:
    code, output = _convert([str(small_keras), "--calib", str(calib_dir), "--out", str(tmp_path / "out"), *args])
    assert (code, output) == (2, message)
