"""Speed work must not change results: the same resize policy gives byte-identical records on a real video.

The digests below are of the records `edgekit run` wrote at commit bfc4f40 (before issue 21 made the bilinear
stretch the default for a plain .tflite), for two models edgekit did not make, over the whole of Megamind.avi, with
that commit's default resize (``area``), which `--downscale area` now asks for. Records are compared without the
fields that depend on the clock or the machine (``ts``, ``timing_ms``, ``camera``, ``source``). Made on x86-64 with
OpenCV 5.0.0: INTER_AREA at a fractional factor rounds in float, so another OpenCV or an aarch64 build may differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.device.model import PLAIN_PREPROCESS
from edgekit.model.preprocess import Preparer

BEFORE = {  # model file -> sha256 of its canonical records at bfc4f40, the area downscale
    "coral/mobilenet_v2_1.0_224_quant.tflite": "077a764eadc44851d8ca13448d3a5a8130e126dd65a4fa80eb196b006ed17148",
    "ssdlite_shapes_int8.tflite": "3133bf762d6162e353d1d4330224265c3851d1e6b5478dd68971bfe729bfef2d",
}


def _digest(output: str) -> tuple[int, str]:
    lines = []
    for line in output.splitlines():
        record = json.loads(line)
        if record["type"] != "result":
            continue
        for key in ("ts", "timing_ms", "camera", "source"):
            del record[key]
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _run(model: Path, video: Path, *extra: str) -> tuple[int, str]:
    args = ["run", "--model", str(model), "--source", str(video), "--stats-interval", "0", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return _digest(result.output)


@pytest.mark.parametrize("name", sorted(BEFORE))
@pytest.mark.parametrize("streams", ["1", "2"])
def test_area_records_are_the_ones_from_before(data_dir: Path, video: Path, name: str, streams: str) -> None:
    # --no-tracking: the records of that commit, which had no tracker (issue 18 adds a track_id per detection)
    records = _run(data_dir / name, video, "--downscale", "area", "--streams", streams, "--no-tracking")
    assert records == (270, BEFORE[name])


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_plain_tflite_gets_the_bilinear_stretch_by_default(data_dir: Path, video: Path, name: str) -> None:
    default = _run(data_dir / name, video, "--frames", "40")
    assert default == _run(data_dir / name, video, "--frames", "40", "--downscale", "bilinear")
    assert default != _run(data_dir / name, video, "--frames", "40", "--downscale", "area")


def test_the_bilinear_stretch_is_the_tutorials_resize_in_exact_form(video: Path) -> None:
    """What the loops users copy do (`cv2.resize(rgb, (w, h))`), with OpenCV's bit-exact bilinear: byte for byte
    that on a real frame, and within one grey level of plain INTER_LINEAR."""
    assert PLAIN_PREPROCESS.policy == "stretch" and PLAIN_PREPROCESS.downscale == "bilinear"
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    for size in (300, 224, 160):
        out = np.empty((size, size, 3), np.uint8)
        Preparer((size, size), PLAIN_PREPROCESS)(frame, "BGR", out)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        assert np.array_equal(out, cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR_EXACT))
        tutorial = cv2.resize(rgb, (size, size)).astype(np.int16)
        assert np.abs(out.astype(np.int16) - tutorial).max() <= 1
