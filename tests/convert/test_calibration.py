"""Calibration and evaluation sets: folders, video, augmentation, hold-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.convert.calibration import load_calibration, load_eval, split_holdout
from edgekit.errors import InputError
from edgekit.model.manifest import Preprocess

PRE = Preprocess(policy="center_crop", crop_fraction=0.875)


def test_folder_is_read_recursively_and_augmented_reproducibly(calib_dir: Path) -> None:
    a = load_calibration(calib_dir, (64, 64), PRE, num=40, seed=3)
    b = load_calibration(calib_dir, (64, 64), PRE, num=40, seed=3)
    c = load_calibration(calib_dir, (64, 64), PRE, num=40, seed=4)
    assert a.images.shape == (40, 64, 64, 3) and a.images.dtype == np.uint8
    assert a.augmented == 19 and a.skipped == ("broken.jpg",)
    assert np.array_equal(a.images, b.images)  # seeded
    assert not np.array_equal(a.images[21:], c.images[21:])  # augmented part depends on the seed
    assert np.array_equal(a.images[:21], c.images[:21])  # the originals do not
    assert any(o.startswith("a/deeper/") for o in a.origins) and any(o.startswith("b/deeper/") for o in a.origins)


def test_fewer_wanted_than_available_takes_an_even_spread(calib_dir: Path) -> None:
    s = load_calibration(calib_dir, (32, 32), PRE, num=10)
    assert len(s) == 10 and s.augmented == 0 and len(set(s.origins)) == 10


def test_video_frames_are_sampled_evenly(data_dir: Path) -> None:
    s = load_calibration(data_dir / "video" / "Megamind.avi", (48, 48), PRE, num=12)
    assert s.kind == "video" and len(s) == 12 and s.augmented == 0
    frames = [int(o.split("#")[1]) for o in s.origins]
    assert frames[0] == 0 and frames[-1] == 269
    assert max(np.diff(frames)) - min(np.diff(frames)) <= 1


def test_eval_folders_name_classes(tmp_path: Path, photos: list[Path]) -> None:
    for i, p in enumerate(photos[:6]):
        d = tmp_path / ("cat" if i % 2 else "dog")
        d.mkdir(exist_ok=True)
        (d / p.name).write_bytes(p.read_bytes())
    s = load_eval(tmp_path, (32, 32), PRE)
    assert len(s) == 6 and s.labels is not None and sorted(set(s.labels)) == ["cat", "dog"]


def test_holdout_never_splits_a_picture(calib_dir: Path) -> None:
    s = load_calibration(calib_dir, (32, 32), PRE, num=63)
    cal, held, note = split_holdout(s)
    assert set(cal.origins).isdisjoint(held.origins)
    assert len(cal) + len(held) == 63
    assert "held out 4 of 21" in note


def test_single_image_is_not_a_calibration_set(photos: list[Path]) -> None:
    with pytest.raises(InputError, match="a single image is not enough"):
        load_calibration(photos[0], (32, 32), PRE)
