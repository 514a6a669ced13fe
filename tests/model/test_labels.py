"""Label files as users have them, each on a real model: plain lines, `???`/`background` first, `ID label`, pbtxt."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgekit.convert.detect.scenes import SHAPE_CLASSES, load_photos, make_scenes
from edgekit.device.model import open_model
from edgekit.device.tasks.detect import get_detections
from edgekit.errors import InputError
from edgekit.model.labels import labels_for_outputs

DATA = Path(__file__).resolve().parents[1] / "data"
SSD = DATA / "ssdlite_shapes_int8.tflite"  # edgekit's own SSDLite: circle, square, triangle (postprocess ids 0..2)
CORAL = DATA / "coral"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# The TF OD API's labelmap.txt (??? for the background), its labelmap.pbtxt (ids from 1), Coral's `ID label`
# lines (ids from 0) and plain lines: four spellings of the same three classes.
SSD_LABEL_FILES = {
    "labelmap.txt": "???\n" + "".join(f"{c}\n" for c in SHAPE_CLASSES),
    "background.txt": "background\n" + "".join(f"{c}\n" for c in SHAPE_CLASSES),
    "labelmap.pbtxt": "".join(f"item {{\n  id: {i + 1}\n  name: '{c}'\n}}\n" for i, c in enumerate(SHAPE_CLASSES)),
    "coral_ids.txt": "".join(f"{i}  {c}\n" for i, c in enumerate(SHAPE_CLASSES)),
    "plain.txt": "".join(f"{c}\n" for c in SHAPE_CLASSES),
}


@pytest.fixture(scope="module")
def scenes():  # type: ignore[no-untyped-def]
    photos = load_photos(DATA / "photos")
    return make_scenes(photos, count=24, size=160, seed=1515, max_objects=1, object_scale=(0.35, 0.5))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@pytest.mark.parametrize("name", sorted(SSD_LABEL_FILES))
def test_every_detector_label_file_names_the_drawn_shape(name: str, tmp_path: Path, scenes) -> None:  # type: ignore[no-untyped-def]
    labels = _write(tmp_path, name, SSD_LABEL_FILES[name])
    model = open_model(SSD, threads=1, labels=str(labels))
    assert model.task == "detect" and model.num_classes == 3
    assert model.labels == dict(enumerate(SHAPE_CLASSES))
    right = found = 0
    for image, boxes, classes in zip(scenes.images, scenes.boxes, scenes.classes, strict=True):
        geometry = model.set_input(image, "RGB")
        model.invoke()
        dets = get_detections(
            model.output("boxes"), model.output("classes"), model.output("scores"), model.output("count"),
            geometry, threshold=0.3,
        )  # fmt: skip
        if not dets:
            continue
        top = dets[0]
        box = np.array([top.bbox_norm.ymin, top.bbox_norm.xmin, top.bbox_norm.ymax, top.bbox_norm.xmax])
        if _iou(box, boxes[0]) < 0.5:
            continue
        found += 1
        right += model.label(top.id) == SHAPE_CLASSES[int(classes[0])]
    # Every shape the detector finds must carry the drawn shape's name, not its neighbour's (an unshifted `???`
    # file would call every circle "???" and every square "circle").
    assert found >= 20 and right == found, (found, right)  # measured: 24 of 24 found, all 24 named right


def test_ambiguous_detector_files_are_refused(tmp_path: Path) -> None:
    four = _write(tmp_path, "four.txt", "cat\n" + "".join(f"{c}\n" for c in SHAPE_CLASSES))
    with pytest.raises(InputError, match=r"four.txt: 4 lines for a detector with 3 classes, and the first \('cat'\)"):
        open_model(SSD, threads=1, labels=str(four))
    short = _write(tmp_path, "short.txt", "???\ncircle\nsquare\n")
    with pytest.raises(InputError, match=r"short.txt: starts with the placeholder '\?\?\?' but has only 3 lines"):
        open_model(SSD, threads=1, labels=str(short))
    pbtxt = _write(tmp_path, "big.pbtxt", "item { id: 1 name: 'a' }\nitem { id: 7 name: 'b' }\n")
    with pytest.raises(InputError, match=r"big.pbtxt: class id 6 but ssdlite_shapes_int8.tflite knows 3 classes"):
        open_model(SSD, threads=1, labels=str(pbtxt))


def test_coral_coco_labels_with_gaps_keep_their_ids(tmp_path: Path) -> None:
    from edgekit.model.labels import align_labels, read_label_file

    # Coral's coco_labels.txt: 90 plain lines, `n/a` where COCO has no class, ids from 0 (person).
    plain = read_label_file(CORAL / "coco_labels.txt")
    assert plain.format == "lines" and not plain.placeholder_first
    aligned = align_labels(plain, "detect", 90)
    assert aligned[0] == "person" and aligned[11] == "n/a" and aligned[12] == "stop sign"
    # The older `ID label` spelling of the same file drops the gaps: the ids must stay as written.
    ids = _write(tmp_path, "coco_ids.txt", "".join(f"{i}  {n}\n" for i, n in aligned.items() if n != "n/a"))
    parsed = read_label_file(ids)
    assert parsed.format == "ids"
    again = align_labels(parsed, "detect", 90)
    assert again[12] == "stop sign" and 11 not in again and again == {i: n for i, n in aligned.items() if n != "n/a"}


def test_imagenet_background_first_stays_aligned_on_coral_mobilenet() -> None:
    # Coral's 1001-class ImageNet model: output 0 is the background, and imagenet_labels.txt starts with it.
    model = open_model(
        CORAL / "mobilenet_v2_1.0_224_quant.tflite", threads=1, labels=str(CORAL / "imagenet_labels.txt")
    )
    assert model.task == "classify" and model.num_classes == 1001
    assert model.labels[0] == "background" and model.labels[286] == "Egyptian cat"
    image = cv2.imread(str(CORAL / "images" / "cat.bmp"))
    model.set_input(image, "BGR")
    model.invoke()
    assert model.label(int(np.argmax(model.output("scores")))) == "Egyptian cat"


def test_classifier_label_count_must_match(tmp_path: Path) -> None:
    lines = (CORAL / "imagenet_labels.txt").read_text(encoding="utf-8").splitlines()
    short = _write(tmp_path, "imagenet_1000.txt", "\n".join(lines[1:]) + "\n")
    with pytest.raises(
        InputError,
        match=r"1000 labels but mobilenet_v2_1.0_224_quant.tflite has 1001 outputs \(one short: is the background",
    ):
        open_model(CORAL / "mobilenet_v2_1.0_224_quant.tflite", threads=1, labels=str(short))
    pbtxt = _write(
        tmp_path, "imagenet.pbtxt", "".join(f'item {{ id: {i} name: "{n}" }}\n' for i, n in enumerate(lines))
    )
    model = open_model(CORAL / "mobilenet_v2_1.0_224_quant.tflite", threads=1, labels=str(pbtxt))
    assert model.labels[286] == "Egyptian cat"


def test_labels_for_a_manifest_fill_a_detectors_unused_ids_only(tmp_path: Path, data_dir: Path) -> None:
    pbtxt = tmp_path / "labelmap.pbtxt"
    pbtxt.write_text('item { id: 1 name: "person" }\nitem { id: 3 name: "car" }\n')
    # the TF OD API numbers real classes from 1; the postprocess op from 0; id 2 is unused
    assert labels_for_outputs(pbtxt, "detect", 3) == ("person", "n/a", "car")
    short = tmp_path / "short.txt"
    short.write_text("person\nbicycle\n")
    with pytest.raises(InputError, match=r"short.txt: no label for output 2 \(labels for 2 of 3 outputs\)"):
        labels_for_outputs(short, "detect", 3)
    coco = labels_for_outputs(data_dir / "coral" / "coco_labels.txt", "detect", 90)
    assert coco[0] == "person" and len(coco) == 90
