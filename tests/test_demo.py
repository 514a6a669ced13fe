"""The demo's pictures: real video frames split into calibration and evaluation with a gap, nothing shared."""

from __future__ import annotations

from pathlib import Path

from edgekit import demo


def test_demo_keeps_its_evaluation_frames_apart_from_calibration(tmp_path: Path) -> None:
    assert demo.VIDEO.is_file()  # the demo runs from the repository, where the test data lives
    n_cal, n_eval = demo.write_frames(demo.VIDEO, tmp_path / "calib", tmp_path / "eval")
    calib = sorted(p.name for p in (tmp_path / "calib").iterdir())
    evaluation = sorted(p.name for p in (tmp_path / "eval").iterdir())
    assert (len(calib), len(evaluation)) == (n_cal, n_eval)
    assert n_eval >= 30 and n_cal > n_eval  # enough to judge, by the report's own threshold
    last_calib = max(int(name[9:13]) for name in calib)
    first_eval = min(int(name[9:13]) for name in evaluation)
    assert first_eval - last_calib > demo.EVERY  # a gap: no evaluation frame is a calibration frame's neighbour
