"""Fidelity over a zoo of MobileNets: the textbook int8 recipe vs edgekit's per-model choice, held-out images.

Pictures (real, all from the repository or scikit-image), written to two folders and never mixed:
  tuning/      calibration of every conversion and the training of the self-trained heads: 14 of the 21
               photos in tests/data/photos, 11 scikit-image photos (each with seeded random crops), and the
               first 60 % of the frames of tests/data/video/Megamind.avi;
  evaluation/  every figure below: the other 7 photos, the other 5 scikit-image photos (centre + 3 crops
               each) and the last 35 % of the video's frames (after a gap). Nothing here picks any constant.
Classes of the self-trained heads: where the picture comes from (opencv sample photo, scikit-image photo,
Megamind frame), so labels exist and float / int8 accuracy can be shown.

Zoo: torchvision's ImageNet MobileNetV2 (real weights, offline package) at 224 and 160 px; two fine-tuned
heads on that backbone (the user's case: `tf` preprocessing at 160 px, and torch preprocessing at 224 px);
Keras MobileNetV1 / V2 / V3-small / V3-large at widths 0.35-1.0 and 96-160 px, trained here end to end from
random init on the tuning split (no other MobileNet weights can be fetched offline, so their numbers test
quantization of those graphs on a small self-trained task, not ImageNet accuracy).

Exits 1 when edgekit is worse than the textbook recipe on any model, overall or where the float model is
confident, by more than one image, or misses a target of issue 16: ImageNet MobileNetV2 confident agreement
>= 0.99, overall >= 0.85, top-5 >= 0.995; every model confident >= 0.97 (printed as MISS lines).

    python benchmarks/convert_zoo.py [--only NAME ...] [--out DIR] [--dev]

``--dev`` is for developing the recipe: it never reads evaluation/. It carves a dev split out of tuning/ (every
4th photo with its crops, and the last quarter of the tuning frames after a gap), trains and calibrates on the
rest, and reports on the dev pictures (originals and crops) instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "tests" / "data"
print = functools.partial(print, flush=True)  # progress shows in a pipe too
SKIMAGE = (
    "astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina",
    "immunohistochemistry", "camera", "coins", "moon", "clock", "brick", "grass", "gravel", "colorwheel",
)  # fmt: skip
CLASSES = ("opencv_photo", "skimage_photo", "megamind_frame")
TF_PRE = {"mean": (127.5,) * 3, "std": (127.5,) * 3}
SELF_TRAIN_EPOCHS = 8  # not tuned: enough for sane BatchNorm statistics and a useful classifier on 400 images


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    arch: str
    alpha: float | None
    size: int
    weights: str | None  # "torchvision-imagenet" or None (random init)
    head: bool  # a head trained here on the tuning split
    tf_preprocessing: bool = False


ZOO = (
    Entry("torchvision v2 1.0 224 (ImageNet)", "mobilenet_v2", None, 224, "torchvision-imagenet", False),
    Entry("torchvision v2 1.0 160 (ImageNet)", "mobilenet_v2", None, 160, "torchvision-imagenet", False),
    Entry("fine-tuned v2 160 tf-prep (3 cls)", "mobilenet_v2", None, 160, "torchvision-imagenet", True, True),
    Entry("fine-tuned v2 224 (3 cls)", "mobilenet_v2", None, 224, "torchvision-imagenet", True),
    Entry("keras v1 0.5 128 self-trained", "mobilenet_v1", 0.5, 128, None, True),
    Entry("keras v2 0.35 96 self-trained", "mobilenet_v2", 0.35, 96, None, True),
    Entry("keras v3-small 0.75 128 self-trained", "mobilenet_v3_small", 0.75, 128, None, True),
    Entry("keras v3-large 1.0 160 self-trained", "mobilenet_v3_large", 1.0, 160, None, True),
)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(1.0, float(image.max())))).astype(np.uint8)
    return np.ascontiguousarray(image[:, :, :3])


def write_splits(out: Path) -> tuple[Path, Path]:
    """The tuning and evaluation folders (one sub-folder per class), disjoint by source picture."""
    import cv2
    import skimage.data

    from edgekit.convert.calibration import random_crop, read_sources

    tuning, evaluation = out / "tuning", out / "evaluation"
    if (out / "done").is_file():
        return tuning, evaluation
    rng = np.random.default_rng(16)

    def put(folder: Path, cls: str, name: str, image: np.ndarray, crops: int) -> None:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / cls / f"{name}.png"), image[:, :, ::-1])
        for k in range(crops):
            cv2.imwrite(str(folder / cls / f"{name}_crop{k}.png"), random_crop(image, rng, 0.3)[:, :, ::-1])

    photos = sorted(p for p in (DATA / "photos").iterdir() if p.suffix in (".jpg", ".png"))
    for k, path in enumerate(photos):
        image = cv2.imread(str(path))[:, :, ::-1]
        held = k % 3 == 1
        put(evaluation if held else tuning, CLASSES[0], path.stem, image, 3 if held else 6)
    for k, name in enumerate(SKIMAGE):
        image = getattr(skimage.data, name)()
        image = _rgb(image[0] if isinstance(image, tuple) else image)
        held = k % 3 == 1
        put(evaluation if held else tuning, CLASSES[1], name, image, 3 if held else 6)
    frames, _, _, _, _ = read_sources(DATA / "video" / "Megamind.avi", max_frames=270)
    n = len(frames)
    for k, frame in enumerate(frames):
        if k % 3 == 0 and (k < 0.6 * n or k >= 0.65 * n):
            put(tuning if k < 0.6 * n else evaluation, CLASSES[2], f"frame{k:04d}", frame, 0)
    (out / "done").write_text("ok\n")
    return tuning, evaluation


DEV_EVERY = 4  # every 4th tuning photo (with its crops) goes to the dev split


def write_dev_split(tuning: Path, out: Path) -> tuple[Path, Path]:
    """A fit folder and a dev folder carved out of ``tuning`` (by source picture): evaluation/ is not read."""
    import shutil

    fit, dev = out / "fit", out / "dev"
    if (out / "done").is_file():
        return fit, dev
    for cls in CLASSES:
        files = sorted((tuning / cls).iterdir())
        if cls == CLASSES[2]:  # video frames: the last quarter, after a gap of two kept frames
            cut = int(0.75 * len(files))
            chosen = {f: (fit if k < cut - 2 else dev if k >= cut else None) for k, f in enumerate(files)}
        else:
            stems = sorted({f.stem.split("_crop")[0] for f in files})
            held = {st for k, st in enumerate(stems) if k % DEV_EVERY == DEV_EVERY // 2}
            chosen = {f: dev if f.stem.split("_crop")[0] in held else fit for f in files}
        for f, folder in chosen.items():
            if folder is not None:
                (folder / cls).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, folder / cls / f.name)
    (out / "done").write_text("ok\n")
    return fit, dev


def build(entry: Entry, tuning: Path) -> tuple[Any, Any, list[str] | None]:
    """The float Keras classifier of ``entry``, its preprocessing and labels (a head trained on ``tuning``)."""
    import keras

    from edgekit.convert.calibration import load_calibration
    from edgekit.convert.zoo import load_builtin

    zoo = load_builtin(entry.arch, entry.alpha, entry.size, entry.weights)
    pre = dataclasses.replace(zoo.preprocess, **TF_PRE) if entry.tf_preprocessing else zoo.preprocess
    if not entry.head:
        return zoo.model, pre, None
    keras.utils.set_random_seed(16)
    pools = [layer for layer in zoo.model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    backbone = keras.Model(zoo.model.inputs, pools[-1].output)
    train = load_calibration(tuning, (entry.size, entry.size), pre, num=400, seed=1)
    x = ((train.images.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std)).astype(np.float32)
    labels = np.array([CLASSES.index(c) for c in train.labels])  # type: ignore[union-attr]
    if entry.weights is None:  # a random-init backbone: train the whole network (BatchNorm statistics included)
        y = pools[-1].output
        y = keras.layers.Flatten()(y) if len(y.shape) > 2 else y
        model = keras.Model(zoo.model.inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(y))
        for layer in model.layers:  # the default 0.99 would leave the moving statistics near their init after
            if isinstance(layer, keras.layers.BatchNormalization):  # a hundred steps: inference would be garbage
                layer.momentum = 0.9
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, labels, epochs=SELF_TRAIN_EPOCHS, batch_size=32, verbose=0)
        return model, pre, list(CLASSES)
    features = np.asarray(backbone.predict(x, batch_size=16, verbose=0)).reshape(len(x), -1)
    scale = float(features.std()) or 1.0
    inputs = keras.Input(backbone.output.shape[1:])
    y = keras.layers.Flatten()(inputs) if len(backbone.output.shape) > 2 else inputs
    y = keras.layers.Rescaling(1.0 / scale)(y)
    head = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax", name="head")(y))
    head.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    head.fit(features.reshape((len(x), *backbone.output.shape[1:])), labels, epochs=60, batch_size=32, verbose=0)
    model = keras.Model(zoo.model.inputs, head(backbone.output))
    return model, pre, list(CLASSES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="names (or parts of names) of the zoo entries to run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "zoo", help="picture folders")
    parser.add_argument("--num-calib", type=int, default=150, help="calibration images (from tuning/)")
    parser.add_argument("--dev", action="store_true", help="evaluate on a dev split of tuning/ (never evaluation/)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from edgekit.convert import quantize
    from edgekit.convert.calibration import build_set, load_calibration, read_sources
    from edgekit.convert.report import fidelity, rate
    from edgekit.convert.tfl import Runner

    tuning, evaluation = write_splits(args.out)
    if args.dev:
        tuning, evaluation = write_dev_split(tuning, args.out / "dev")
    print(f"tuning split (calibration, head training):  {tuning}")
    print(f"{'dev' if args.dev else 'evaluation'} split (every figure below):      {evaluation}")
    entries = [e for e in ZOO if not args.only or any(o in e.name for o in args.only)]
    rows: list[tuple[str, str, Any, float]] = []
    failed = []
    for entry in entries:
        model, pre, labels = build(entry, tuning)
        size = (entry.size, entry.size)
        calib = load_calibration(tuning, size, pre, num=args.num_calib, seed=0)
        pictures, origins, classes, _, _ = read_sources(evaluation, max_frames=100_000)
        # one image per file, no crops
        ev_images, ev_origins, ev_classes, _ = build_set(pictures, origins, size, pre, classes=classes)
        truth = np.array([CLASSES.index(str(c)) for c in ev_classes]) if labels else None
        baked = quantize.bake_preprocess(model, pre.mean, pre.std)
        reference = Runner(quantize.float_tflite(baked))(ev_images)
        results, probs = {}, {}
        for recipe in ("textbook", "edgekit"):
            started = time.monotonic()
            if recipe == "textbook":
                int8 = quantize.textbook_int8(baked, calib.images)
            else:
                # crops written as files come from one photo, neighbouring frames show one scene: the search's
                # folds must keep each together
                pictures_of = [re.sub(r"_crop\d+(?=\.png$)", "", o) for o in calib.origins]
                pictures_of = [re.sub(r"frame(\d+)", lambda m: f"scene{int(m[1]) // 30}", o) for o in pictures_of]
                search = quantize.search_recipe(model, pre.mean, pre.std, calib.images, origins=pictures_of)
                int8 = search.model
            seconds = time.monotonic() - started
            probs[recipe] = Runner(int8)(ev_images)
            results[recipe] = fidelity(reference, probs[recipe], truth)
            rows.append((entry.name, recipe, results[recipe], seconds))
            print(f"  {entry.name}: {recipe} done in {seconds:.0f} s")
        for k, v in search.section().items():
            print(f"    {k}: {v}")
        top = reference.argmax(axis=1)
        ok_t, ok_e = probs["textbook"].argmax(axis=1) == top, probs["edgekit"].argmax(axis=1) == top
        flips = [f"{ev_origins[i]} (float p {reference[i].max():.2f})" for i in np.flatnonzero(ok_t & ~ok_e)]
        print(f"    lost by edgekit, kept by textbook: {', '.join(flips) or 'none'}")
        print(f"    won by edgekit, lost by textbook: {int((ok_e & ~ok_t).sum())} images")
        e, t = results["edgekit"], results["textbook"]
        n, nc = e.images, e.confident_images
        worse_overall = round(e.top1_agreement * n) < round(t.top1_agreement * n) - 1
        worse_conf = nc > 0 and round((e.confident_agreement or 0) * nc) < round((t.confident_agreement or 0) * nc) - 1
        if worse_overall or worse_conf:
            failed.append(entry.name)

    header = f"{'model':37} {'recipe':9} {'confident top-1 agreement':64} {'top-1 agreement':36} {'top-5':>6} "
    header += f"{'float acc':>9} {'int8 acc':>8} {'time':>5}"
    print(header)
    print("-" * len(header))
    for name, recipe, f, seconds in rows:
        conf = rate(round((f.confident_agreement or 0) * f.confident_images), f.confident_images)
        top1 = rate(round(f.top1_agreement * f.images), f.images)
        acc = (
            (f"{100 * f.float_accuracy:8.1f}%", f"{100 * f.int8_accuracy:7.1f}%")
            if f.float_accuracy is not None and f.int8_accuracy is not None
            else ("n/a".rjust(9), "n/a".rjust(8))
        )
        print(
            f"{name:37} {recipe:9} {conf:64} {top1:36} {100 * f.top5_containment:5.1f}% {acc[0]} {acc[1]} "
            f"{seconds:4.0f}s"
        )
    split = "dev split of tuning/" if args.dev else "evaluation split"
    print(f"(confident = float p > 0.5; intervals are Wilson 95 %; all figures on the {split} only)")
    for name in failed:
        print(f"MISS edgekit worse than textbook by more than one image: {name}")
    if not failed:
        print(f"ok   edgekit never worse than textbook beyond one image on {len(entries)} models")
    missed = []
    for name, recipe, f, _ in rows:
        if recipe != "edgekit":
            continue
        targets = [("confident top-1 agreement", f.confident_agreement or 0, 0.97)]
        if "ImageNet" in name:
            targets = [
                ("confident top-1 agreement", f.confident_agreement or 0, 0.99),
                ("top-1 agreement", f.top1_agreement, 0.85),
                ("top-5 containment", f.top5_containment, 0.995),
            ]
        for what, value, target in targets:
            ok = value >= target
            missed += [] if ok else [name]
            print(f"{'ok  ' if ok else 'MISS'} {name}: {what} {100 * value:.1f}% (target >= {100 * target:g}%)")
    return 1 if failed or missed else 0


if __name__ == "__main__":
    sys.exit(main())
