"""Generated scenes: deterministic, boxes that match what is drawn, and the --eval folder format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.convert.detect.evalset import load_eval_set
from edgekit.convert.detect.scenes import SHAPE_CLASSES, load_photos, make_scenes, write_eval_folder
from edgekit.errors import InputError


@pytest.fixture(scope="module")
def backgrounds(data_dir: Path) -> list[np.ndarray]:
    return load_photos(data_dir / "photos")


def test_scenes_are_deterministic_per_seed(backgrounds: list[np.ndarray]) -> None:
    a = make_scenes(backgrounds, 6, 96, seed=3)
    b = make_scenes(backgrounds, 6, 96, seed=3)
    c = make_scenes(backgrounds, 6, 96, seed=4)
    assert np.array_equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert not np.array_equal(a.images, c.images)


def test_boxes_frame_the_drawn_shapes(backgrounds: list[np.ndarray]) -> None:
    scenes = make_scenes(backgrounds, 20, 128, seed=0)
    colours = {"circle": (220, 40, 40), "square": (40, 190, 60), "triangle": (50, 80, 230)}
    counts = [len(b) for b in scenes.boxes]
    assert min(counts) >= 1 and max(counts) > 1  # several objects per image
    assert set(np.concatenate(scenes.classes).tolist()) == {0, 1, 2}
    for image, boxes, classes in zip(scenes.images, scenes.boxes, scenes.classes, strict=True):
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        for box, cls in zip(boxes, classes, strict=True):
            # A point inside every shape (a triangle's is below its apex) has the class colour (+-25).
            y = int((box[0] + (box[2] - box[0]) * (0.7 if cls == 2 else 0.5)) * 128)
            x = int((box[1] + box[3]) / 2 * 128)
            pixel = image[y, x].astype(int)
            assert np.abs(pixel - colours[SHAPE_CLASSES[cls]]).max() <= 26 or _occluded(boxes, box)


def test_stretched_scenes_arrive_narrowed_as_a_4_3_frame_does(backgrounds: list[np.ndarray]) -> None:
    """Drawn 4:3 and squeezed to the square: a circle's box is 3/4 as wide as high, its colour still inside it;
    (1, 1) draws the very scenes of the default (cached trainings stay valid)."""
    scenes = make_scenes(backgrounds, 12, 120, seed=7, stretch=(4 / 3, 4 / 3))
    colour = np.array((220, 40, 40))
    circles = 0
    for image, boxes, classes in zip(scenes.images, scenes.boxes, scenes.classes, strict=True):
        for box, cls in zip(boxes, classes, strict=True):
            if cls != 0 or _occluded(boxes, box):
                continue
            circles += 1
            assert (box[3] - box[1]) / (box[2] - box[0]) == pytest.approx(0.75, abs=0.01)
            cy, x = (box[0] + box[2]) / 2, box[1] + 0.6 * (box[3] - box[1])  # right of the centre, inside
            inside = image[int(cy * 120), int(x * 120)]
            assert np.abs(inside.astype(int) - colour).max() <= 30
    assert circles >= 3
    square = make_scenes(backgrounds, 6, 96, seed=3, stretch=(1.0, 1.0))
    assert np.array_equal(square.images, make_scenes(backgrounds, 6, 96, seed=3).images)


def _occluded(boxes: np.ndarray, box: np.ndarray) -> bool:
    others = [b for b in boxes if not np.array_equal(b, box)]
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(b[0] <= cy <= b[2] and b[1] <= cx <= b[3] for b in others)


def test_eval_folder_round_trip(backgrounds: list[np.ndarray], tmp_path: Path) -> None:
    scenes = make_scenes(backgrounds, 4, 96, seed=1)
    write_eval_folder(scenes, tmp_path)
    items = load_eval_set(tmp_path, SHAPE_CLASSES)
    assert [i.image.name for i in items] == [f"scene_{k:05d}.png" for k in range(4)]
    for item, boxes, classes in zip(items, scenes.boxes, scenes.classes, strict=True):
        np.testing.assert_allclose(item.truth.boxes, boxes, atol=1e-3)
        assert item.truth.classes.tolist() == classes.tolist()


def test_eval_folder_errors_name_the_file(backgrounds: list[np.ndarray], tmp_path: Path) -> None:
    write_eval_folder(make_scenes(backgrounds, 2, 64, seed=1), tmp_path)
    ann = tmp_path / "scene_00001.json"
    ann.write_text(json.dumps({"objects": [{"label": "hexagon", "box": [1, 1, 5, 5]}]}))
    with pytest.raises(InputError, match=r"scene_00001\.json: object 0 has label 'hexagon'"):
        load_eval_set(tmp_path, SHAPE_CLASSES)
    ann.write_text(json.dumps({"objects": [{"label": "circle", "box": [5, 5, 1, 1]}]}))
    with pytest.raises(InputError, match="is empty"):
        load_eval_set(tmp_path, SHAPE_CLASSES)
    ann.write_text("not json")
    with pytest.raises(InputError, match=r"scene_00001\.json: not a box file"):
        load_eval_set(tmp_path, SHAPE_CLASSES)
    ann.unlink()
    with pytest.raises(InputError, match=r"scene_00001\.json: missing"):
        load_eval_set(tmp_path, SHAPE_CLASSES)
    with pytest.raises(InputError, match="must be a folder"):
        load_eval_set(tmp_path / "nope", SHAPE_CLASSES)
