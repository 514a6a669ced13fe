"""Fidelity of int8 MobileNetV2 (torchvision ImageNet): the textbook recipe vs edgekit's, same data, one run.

Split (disjoint by source picture):
  calibration: 210 inputs from tests/data/photos (the 21 photos centre-cropped + 189 seeded random crops/flips);
  evaluation:  real photos that are NOT in the calibration folder - scikit-image's bundled photographs
               (centre crop + 9 seeded random crops each) - plus the real video tests/data/video/Megamind.avi
               (every 2nd frame centre-cropped + 45 random crops of other frames).
Targets (issue 3): confident (float p > 0.5) top-1 agreement >= 99%, overall >= 85%, top-5 containment >= 99.5%,
size <= 0.3x float; conversion of MobileNetV2-224 with 300 calibration images < 120 s on 2 cores (run through the
CLI in a subprocess, so its peak memory is its own). Exits 1 when a target is missed.

    python benchmarks/convert_fidelity.py [--ablation] [--skip-timing]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "tests" / "data"
print = functools.partial(print, flush=True)  # progress shows in a pipe too
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
)


def eval_images(size: tuple[int, int], preprocess: object) -> tuple[np.ndarray, list[str]]:
    import skimage.data

    from edgekit.convert.calibration import random_crop, read_sources
    from edgekit.model.preprocess import prepare

    rng = np.random.default_rng(1234)
    out, groups = [], []
    for name in SKIMAGE_PHOTOS:
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
            image = image[0]
        image = np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)
        out.append(prepare(image, size, preprocess)[0].copy())  # type: ignore[arg-type]
        out += [prepare(random_crop(image, rng, 0.2), size, preprocess)[0].copy() for _ in range(9)]  # type: ignore[arg-type]
        groups += ["photos"] * 10
    frames, _, _, _, _ = read_sources(DATA / "video" / "Megamind.avi", max_frames=270)
    for frame in frames[::2]:
        out.append(prepare(frame, size, preprocess)[0].copy())  # type: ignore[arg-type]
        groups.append("video")
    for frame in frames[1::6]:
        out.append(prepare(random_crop(frame, rng, 0.2), size, preprocess)[0].copy())  # type: ignore[arg-type]
        groups.append("video")
    return np.stack(out), groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", action="store_true", help="also search with each edgekit step alone")
    parser.add_argument("--skip-timing", action="store_true", help="skip the 300-image CLI conversion")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from edgekit.convert import quantize
    from edgekit.convert.calibration import load_calibration
    from edgekit.convert.report import fidelity
    from edgekit.convert.tfl import Runner
    from edgekit.convert.zoo import load_builtin

    zoo = load_builtin("mobilenet_v2", None, 224, "torchvision-imagenet")
    pre = zoo.preprocess
    size = (224, 224)
    calib = load_calibration(DATA / "photos", size, pre, num=210, seed=0)
    images, groups = eval_images(size, pre)
    print(
        f"calibration: {len(calib)} inputs from {DATA / 'photos'}; evaluation: {len(images)} inputs "
        f"({groups.count('photos')} scikit-image photo crops, {groups.count('video')} Megamind frames/crops)"
    )

    baked = quantize.bake_preprocess(zoo.model, pre.mean, pre.std)
    float_model = quantize.float_tflite(baked)
    reference = Runner(float_model)(images)
    variants: list[tuple[str, frozenset[str] | None]] = [("textbook (baseline)", None), ("edgekit", quantize.STEPS)]
    if args.ablation:
        variants[1:1] = [
            ("+ range choice (MSE)", frozenset({"percentile"})),
            ("+ bias correction", frozenset({"bias"})),
            ("+ equalization", frozenset({"equalize"})),
            ("+ range choice + bias", frozenset({"percentile", "bias"})),
        ]
    rows = []
    for name, steps in variants:
        started = time.monotonic()
        if steps is None:
            model = quantize.textbook_int8(baked, calib.images)
        else:
            model, _ = quantize.quantize_classifier(
                zoo.model, pre.mean, pre.std, calib.images, steps=steps, origins=calib.origins
            )
        seconds = time.monotonic() - started
        probs = Runner(model)(images)
        fid = fidelity(reference, probs)
        photo = np.array([g == "photos" for g in groups])
        fid_photo = fidelity(reference[photo], probs[photo])
        rows.append((name, fid, fid_photo, len(model) / len(float_model), seconds))

    header = (
        f"{'recipe':24} {'conf.top1':>10} {'top1':>7} {'top5':>7} {'mean|dp|':>9} {'photos top1':>11} "
        f"{'size':>6} {'time':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, fid, fid_photo, ratio, seconds in rows:
        print(
            f"{name:24} {100 * (fid.confident_agreement or 0):9.1f}% {100 * fid.top1_agreement:6.1f}% "
            f"{100 * fid.top5_containment:6.1f}% {fid.mean_abs_dp:9.5f} {100 * fid_photo.top1_agreement:10.1f}% "
            f"{ratio:5.2f}x {seconds:5.0f}s"
        )
    print(f"(confident = float p > 0.5: {rows[-1][1].confident_images} of {rows[-1][1].images} eval inputs)")

    edgekit, base = rows[-1][1], rows[0][1]
    checks = [
        ("confident top-1 agreement >= 99%", (edgekit.confident_agreement or 0) >= 0.99),
        ("overall top-1 agreement >= 85%", edgekit.top1_agreement >= 0.85),
        ("top-5 containment >= 99.5%", edgekit.top5_containment >= 0.995),
        ("size <= 0.3x float", rows[-1][3] <= 0.3),
        # never worse than the textbook recipe beyond one image's worth of noise
        ("not worse than textbook (overall top-1)", edgekit.top1_agreement >= base.top1_agreement - 1 / edgekit.images),
        (
            "not worse than textbook (confident top-1)",
            (edgekit.confident_agreement or 0) >= (base.confident_agreement or 0) - 1 / max(1, base.confident_images),
        ),
    ]
    if not args.skip_timing:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [
                sys.executable,
                "-m",
                "edgekit",
                "convert",
                "mobilenet_v2",
                "--weights",
                "torchvision-imagenet",
                "--calib",
                str(DATA / "photos"),
                "--num-calib",
                "300",
                "--out",
                f"{tmp}/m",
                "--json",
            ]
            started = time.monotonic()
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
            wall = time.monotonic() - started
            if done.returncode != 0:
                print(done.stderr[-2000:])
                return 1
            report = json.loads(done.stdout)
        print(
            f"edgekit convert mobilenet_v2 (224, 300 calibration images): {wall:.0f} s wall incl. start-up "
            f"({report['timing']['wall_s']:.0f} s inside), peak RSS {report['timing']['peak_rss_mb']:.0f} MB"
        )
        checks.append(("conversion of MobileNetV2-224, 300 images < 120 s", wall < 120))
    failed = [name for name, ok in checks if not ok]
    for name, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
