"""Detector conversion targets: int8 vs float mAP on generated scenes, size, and 320 px conversion time.

Run from the repository root: ``python benchmarks/convert_detect.py``. The trained detector is cached under
``.edgekit-cache/`` (or ``$EDGEKIT_CACHE_DIR``), so only the first run trains (about 10 minutes on 2 shared cores).
Prints a table and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.convert.detect.demo import Recipe, trained_shape_detector  # noqa: E402
from edgekit.convert.detect.pipeline import DetectReport, convert_detector  # noqa: E402
from edgekit.convert.detect.scenes import load_photos, make_scenes, write_eval_folder  # noqa: E402

PHOTOS = REPO / "tests" / "data" / "photos"
CACHE = Path(os.environ.get("EDGEKIT_CACHE_DIR", REPO / ".edgekit-cache"))
BENCH_RECIPE = Recipe(input_size=160, alpha=0.35, train_scenes=2000, steps=1500)
EVAL_SCENES = 200
CALIB_SCENES = 100

MAX_MAP50_DROP = 0.01  # int8 mAP@0.5 within 1 point of float
MIN_FLOAT_MAP50 = 0.80
MAX_SIZE_RATIO = 0.30  # int8 / float TFLite, on the 320 px alpha 1.0 SSDLite-MobileNetV2
MAX_CONVERT_SECONDS = 180.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-320", action="store_true", help="skip the 320 px alpha 1.0 timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows: list[tuple[str, str, str, bool]] = []

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        root = Path(tmp)
        photos = load_photos(PHOTOS)
        t0 = time.monotonic()
        saved_model = trained_shape_detector(PHOTOS, CACHE, BENCH_RECIPE)
        train_s = time.monotonic() - t0
        calib = write_eval_folder(make_scenes(photos, CALIB_SCENES, 240, seed=1001), root / "calib")
        evaluation = write_eval_folder(make_scenes(photos, EVAL_SCENES, 240, seed=2002), root / "eval")
        small = convert_detector(
            saved_model,
            calib,
            root / "small",
            labels=saved_model.parent / "labels.txt",
            eval_dir=evaluation,
            num_calib=CALIB_SCENES,
        )
        assert small.float_map is not None and small.int8_map is not None
        f50, q50 = small.float_map.map50, small.int8_map.map50
        print(
            f"\nSSDLite-MobileNetV2 alpha {BENCH_RECIPE.alpha}, {BENCH_RECIPE.input_size} px, trained "
            f"{BENCH_RECIPE.steps} steps ({'cached' if train_s < 60 else f'{train_s:.0f} s'}); "
            f"{small.eval_images} generated eval scenes, {small.calib_images} calibration scenes"
        )
        print(f"{'':24}{'float':>10}{'int8':>10}")
        print(f"{'mAP@0.5':24}{f50:10.4f}{q50:10.4f}")
        print(f"{'mAP@0.5:0.95':24}{small.float_map.map50_95:10.4f}{small.int8_map.map50_95:10.4f}")
        for c, (a, b) in enumerate(zip(small.float_map.ap50_per_class, small.int8_map.ap50_per_class, strict=True)):
            print(f"{'  AP@0.5 ' + small.labels[c]:24}{a or 0:10.4f}{b or 0:10.4f}")
        print(f"{'size (bytes)':24}{small.float_bytes:10d}{small.int8_bytes:10d}")
        print(f"{'conversion (s)':24}{small.seconds:>20.1f}")

        rows.append(("float mAP@0.5", f"{f50:.4f}", f">= {MIN_FLOAT_MAP50}", f50 >= MIN_FLOAT_MAP50))
        rows.append(
            ("int8 - float mAP@0.5", f"{q50 - f50:+.4f}", f">= -{MAX_MAP50_DROP}", q50 - f50 >= -MAX_MAP50_DROP)
        )
        rows.append(
            (f"size ratio (alpha {BENCH_RECIPE.alpha}, info)", f"{small.int8_bytes / small.float_bytes:.3f}", "-", True)
        )
        if not args.skip_320:
            rows.extend(_time_320(root, calib))

    print(f"\n{'target':40}{'measured':>12}  {'goal':<14}result")
    for name, value, goal, ok in rows:
        print(f"{name:40}{value:>12}  {goal:<14}{'ok' if ok else 'MISSED'}")
    return 0 if all(ok for *_, ok in rows) else 1


def _time_320(root: Path, calib: Path) -> list[tuple[str, str, str, bool]]:
    """Export an SSDLite-MobileNetV2 alpha 1.0 at 320 px and time a default conversion (300 images)."""
    from edgekit.convert.detect.export import export_detector
    from edgekit.convert.detect.ssdlite import build_ssdlite

    # Conversion cost does not depend on the weights; untrained weights keep the benchmark short.
    det = build_ssdlite(90, input_size=320, alpha=1.0)
    saved_model = export_detector(det, root / "ssdlite320" / "saved_model")
    t0 = time.monotonic()
    report: DetectReport = convert_detector(saved_model, calib, root / "big")
    wall = time.monotonic() - t0
    ratio = report.int8_bytes / report.float_bytes
    print(
        f"\nSSDLite-MobileNetV2 alpha 1.0, 320 px, 90 classes: float {report.float_bytes} B, int8 "
        f"{report.int8_bytes} B; convert_detector with {report.calib_images} calibration images {wall:.1f} s "
        f"(float + int8 conversion {report.seconds:.1f} s)"
    )
    return [
        ("size ratio int8/float (320 px, alpha 1.0)", f"{ratio:.3f}", f"<= {MAX_SIZE_RATIO}", ratio <= MAX_SIZE_RATIO),
        ("convert 320 px alpha 1.0 (s)", f"{wall:.1f}", f"< {MAX_CONVERT_SECONDS:.0f}", wall < MAX_CONVERT_SECONDS),
    ]


if __name__ == "__main__":
    sys.exit(main())
