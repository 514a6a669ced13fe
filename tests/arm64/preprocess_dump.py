"""Hash what the one preprocessing function makes of real frames, on whichever architecture runs this.

    python preprocess_dump.py OUT.json FRAMES.npz (save|load) LOSSY_VIDEO VIDEO COUNT PICTURE...

Each run hashes the frames it decodes itself (the first COUNT frames of each video, then each picture) and what
`prepare` makes of the frames in FRAMES.npz: ``save`` writes its own decoded frames there first (the x86 run),
``load`` reads them (the emulated run), so that both architectures preprocess the very same bytes. The arm64 check
compares the two: for each downscale mode, every resize policy, and sizes that shrink a frame by more than 2x,
by less than 2x, and enlarge it. ``load`` also measures how far its own decoding of each frame is from x86's
(the largest difference and the share of values that differ), for the lossy video whose decoder differs.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys

import cv2
import numpy as np

from edgekit.model.manifest import Preprocess
from edgekit.model.preprocess import prepare

SIZES = [(224, 224), (96, 96), (320, 320), (600, 800)]
POLICIES = [("stretch", 1.0), ("center_crop", 0.875), ("letterbox", 1.0)]


def frames(videos: list[str], count: int, pictures: list[str]) -> list[tuple[str, np.ndarray]]:
    """The first ``count`` frames of each video and each picture, decoded by OpenCV (BGR uint8)."""
    out = []
    for video in videos:
        capture = cv2.VideoCapture(video)
        for index in range(count):
            ok, frame = capture.read()
            if not ok:
                raise SystemExit(f"{video}: only {index} frames")
            out.append((f"{video}#{index}", frame))
        capture.release()
    for picture in pictures:
        image = cv2.imread(picture, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{picture}: OpenCV cannot read it")
        out.append((picture, image))
    return out


def main() -> None:
    out_path, frames_path, mode, lossy, video, count, *pictures = sys.argv[1:]
    decoded = frames([lossy, video], int(count), pictures)
    if mode == "save":
        np.savez(frames_path, **{str(i): frame for i, (_, frame) in enumerate(decoded)})
    with np.load(frames_path) as saved:
        same = [(name, saved[str(i)]) for i, (name, _) in enumerate(decoded)]
    digests: dict[str, object] = {"machine": platform.machine()}
    digests["decoded"] = {name: hashlib.sha256(frame.tobytes()).hexdigest() for name, frame in decoded}
    off = [np.abs(ours.astype(np.int16) - theirs) for (_, ours), (_, theirs) in zip(decoded, same, strict=True)]
    digests["off"] = {name: [int(d.max()), float((d > 0).mean())] for (name, _), d in zip(decoded, off, strict=True)}
    prepared: dict[str, str] = {}
    digests["prepared"] = prepared
    for name, frame in same:
        if name.startswith(lossy):  # the same frames as the lossless copy's, or nearly: not preprocessed twice
            continue
        for downscale in ("area", "pyramid", "bilinear"):
            for policy, fraction in POLICIES:
                pre = Preprocess(policy=policy, crop_fraction=fraction, downscale=downscale)  # type: ignore[arg-type]
                for size in SIZES:
                    image, _ = prepare(frame, size, pre, color="BGR")
                    key = f"{name}|{downscale}|{policy}|{size[0]}x{size[1]}"
                    prepared[key] = hashlib.sha256(image.tobytes()).hexdigest()
    with open(out_path, "w") as f:
        json.dump(digests, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
