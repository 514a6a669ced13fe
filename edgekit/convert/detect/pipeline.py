"""`convert_detector`: an SSD SavedModel to a full-int8 TFLite detector with a manifest and a report."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgekit.convert.detect.metrics import ImageBoxes, MapResult, mean_average_precision
from edgekit.convert.pipeline import ConvertOptions, Extension, check_out, swap_in
from edgekit.errors import InputError
from edgekit.model.labels import labels_for_outputs
from edgekit.model.manifest import (
    Downscale,
    InputSpec,
    Manifest,
    OutputSpec,
    Preprocess,
    Quantization,
    SourceModel,
    write_atomic,
)
from edgekit.plan import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

DEFAULT_NUM_CALIB = 300
MIN_CALIB = 10
# Boxes leave TFLite_Detection_PostProcess as (ymin, xmin, ymax, xmax), normalised to the model input.
BOX_FORMAT = "ymin,xmin,ymax,xmax normalized"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".h264")


@dataclass(frozen=True)
class DetectReport:
    """What `convert_detector` did and measured.

    Attributes:
        out_dir: the written model directory.
        labels: class names.
        input_size: (height, width) of the model input.
        float_bytes: size of the float TFLite model.
        int8_bytes: size of the int8 TFLite model.
        calib_images: calibration images used.
        calib_skipped: calibration files that could not be read.
        ops: operator histogram of the int8 model.
        postprocess: attributes of the fused op.
        seconds: wall time of the conversion (float + int8), excluding evaluation.
        eval_images: annotated images evaluated (0 without an eval set).
        float_map: mAP of the float TFLite model, when evaluated.
        int8_map: mAP of the int8 TFLite model, when evaluated.
    """

    out_dir: Path
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    float_bytes: int
    int8_bytes: int
    calib_images: int
    calib_skipped: int
    ops: dict[str, int]
    postprocess: dict[str, Any]
    seconds: float
    eval_images: int = 0
    float_map: MapResult | None = None
    int8_map: MapResult | None = None
    sections: dict[str, Any] = field(default_factory=dict)  # filled by extensions (e.g. "Edge TPU")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings)."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["size_ratio"] = round(self.int8_bytes / self.float_bytes, 4) if self.float_bytes else None
        return d


def convert_detector(
    saved_model_dir: str | Path,
    calib: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    labels: str | Path | Sequence[str] | None = None,
    eval_dir: str | Path | None = None,
    num_calib: int = DEFAULT_NUM_CALIB,
    input_mean: float = 127.5,
    input_std: float = 127.5,
    force: bool = False,
    seed: int = 0,
    extensions: Sequence[Extension] = (),
    downscale: Downscale = "area",
) -> DetectReport:
    """Convert an SSD detector SavedModel (``export_tflite_graph_tf2`` layout) to full int8 with uint8 input.

    Writes ``model.tflite`` (int8, outputs boxes, classes, scores, count from ``TFLite_Detection_PostProcess``),
    ``labels.txt``, ``edgekit.json`` and ``report.json`` into ``out_dir``, atomically: a temporary folder
    beside it is renamed at the end, so a failure leaves nothing behind.

    Args:
        saved_model_dir: the detector SavedModel.
        calib: a folder of images (searched recursively), a video file, or a list of image paths.
        out_dir: output folder; replaced only if it is an earlier edgekit output or ``force`` is set.
        labels: a labels file (one name per line) or the names; ``class_<i>`` names when omitted.
        eval_dir: annotated images for mAP of float vs int8 (format: `edgekit.convert.detect.evalset`).
        num_calib: calibration images to use; fewer are completed by random crops and flips.
        input_mean: pixel value the model's float input maps to 0 (127.5 for the OD API's MobileNets).
        input_std: pixel units per 1.0 of the model's float input (127.5: pixels to [-1, 1]).
        force: replace ``out_dir`` even if it is not an edgekit output.
        seed: seed for calibration sampling and augmentation.
        extensions: steps run on the int8 model inside the temporary folder (the Edge TPU stage); each returns
            report sections.
        downscale: how frames are shrunk, in calibration and on the device (`edgekit.model.manifest.Preprocess`).

    Returns:
        The report.

    Raises:
        InputError: unusable calibration data, labels, eval set or output folder.
        ModelError: the SavedModel is not a detector in that layout, or conversion fails.
    """
    from edgekit.convert.detect.savedmodel import read_detector_saved_model
    from edgekit.convert.detect.tflite import OUTPUT_ROLES, TfliteDetector, convert_saved_model, describe

    out = Path(out_dir)
    check_out(out, force)
    spec = read_detector_saved_model(saved_model_dir)
    names = _resolve_labels(labels, spec.num_classes)
    eval_items = None
    if eval_dir is not None:
        from edgekit.convert.detect.evalset import load_eval_set

        eval_items = load_eval_set(eval_dir, names)
    preprocess = Preprocess(
        policy="stretch", mean=(input_mean,) * 3, std=(input_std,) * 3, baked=True, downscale=downscale
    )
    images, skipped = load_calibration(calib, spec.input_size, preprocess, num_calib, seed)

    def representative() -> Iterator[list[npt.NDArray[np.float32]]]:
        for i, image in enumerate(images):
            x = image[None].astype(np.float32)
            if i == 0:
                # Pin the input range to the full pixel range so the uint8 input's quantization maps raw
                # pixels exactly ((p - mean) / std): the device feeds camera bytes without arithmetic.
                x[0, 0, 0, :] = 0.0
                x[0, 0, 1, :] = 255.0
            yield [(x - input_mean) / input_std]

    started = time.monotonic()
    logger.info("converting %s to float TFLite", spec.path)
    float_model = convert_saved_model(str(spec.path), None)
    logger.info("converting %s to int8 TFLite with %d calibration images", spec.path, len(images))
    int8_model = convert_saved_model(str(spec.path), representative)
    seconds = time.monotonic() - started
    info = describe(int8_model)
    describe(float_model)
    if info.input.dtype != "uint8":
        raise AssertionError(f"int8 model input is {info.input.dtype}")

    float_map = int8_map = None
    if eval_items is not None:
        float_map, int8_map = evaluate_pair(
            TfliteDetector(float_model, input_mean, input_std),
            TfliteDetector(int8_model),
            [item.image for item in eval_items],
            [item.truth for item in eval_items],
            spec.num_classes,
            preprocess,
        )

    report = DetectReport(
        out_dir=out,
        labels=tuple(names),
        input_size=spec.input_size,
        float_bytes=len(float_model),
        int8_bytes=len(int8_model),
        calib_images=len(images),
        calib_skipped=skipped,
        ops=info.ops,
        postprocess=info.postprocess,
        seconds=round(seconds, 2),
        eval_images=len(eval_items or []),
        float_map=float_map,
        int8_map=int8_map,
    )
    manifest = Manifest(
        task="detect",
        input=InputSpec(
            height=spec.input_size[0],
            width=spec.input_size[1],
            dtype="uint8",
            quantization=Quantization(info.input.scale, info.input.zero_point),
        ),
        preprocess=preprocess,
        outputs=tuple(OutputSpec(role, o.shape, o.dtype) for role, o in zip(OUTPUT_ROLES, info.outputs, strict=True)),
        num_classes=spec.num_classes,
        box_format=BOX_FORMAT,
        source=SourceModel(kind="saved_model", name=spec.path.name, path=str(spec.path.resolve())),
        converter=_versions(),
        extra={"postprocess": info.postprocess},
    )
    _write_output(out, int8_model, names, manifest, report, extensions)
    return report


def render_report(report: DetectReport) -> str:
    """The report as a plain-text table for a terminal (the CLI prints it; library code does not).

    Args:
        report: the report.

    Returns:
        Lines joined by newlines, no trailing newline.
    """
    h, w = report.input_size
    lines = [
        f"detector {w}x{h}, {len(report.labels)} classes; {report.calib_images} calibration images"
        + (f" ({report.calib_skipped} unreadable skipped)" if report.calib_skipped else "")
        + f"; converted in {report.seconds:.1f} s",
        f"{'':24}{'float':>12}{'int8':>12}",
        f"{'size (bytes)':24}{report.float_bytes:12d}{report.int8_bytes:12d}",
    ]
    if report.float_map is not None and report.int8_map is not None:
        lines.append(f"{'mAP@0.5':24}{report.float_map.map50:12.4f}{report.int8_map.map50:12.4f}")
        lines.append(f"{'mAP@0.5:0.95':24}{report.float_map.map50_95:12.4f}{report.int8_map.map50_95:12.4f}")
        pairs = zip(report.float_map.ap50_per_class, report.int8_map.ap50_per_class, strict=True)
        for name, (a, b) in zip(report.labels, pairs, strict=True):
            if a is not None and b is not None:
                lines.append(f"{'  AP@0.5 ' + name:24}{a:12.4f}{b:12.4f}")
        lines.append(f"({report.eval_images} evaluation images)")
    else:
        lines.append("(no --eval images: mAP not measured)")
    ops = ", ".join(f"{k} {v}" for k, v in sorted(report.ops.items(), key=lambda kv: -kv[1]))
    lines.append(f"ops: {ops}")
    for title, content in report.sections.items():  # e.g. the Edge TPU preflight
        lines.append(f"{title}:")
        lines.extend(f"  {key}: {value}" for key, value in content.items())
    return "\n".join(lines)


def evaluate_pair(
    float_detector: Any,
    int8_detector: Any,
    images: Sequence[Path],
    truths: Sequence[ImageBoxes],
    num_classes: int,
    preprocess: Preprocess,
) -> tuple[MapResult, MapResult]:
    """mAP of two detectors on the same images, each image prepared once by the device's function.

    Args:
        float_detector: object with ``detect(uint8 image) -> ImageBoxes`` and ``input_size``.
        int8_detector: the same for the quantized model.
        images: image paths.
        truths: their normalised ground truth.
        num_classes: classes.
        preprocess: resize policy (boxes are normalised to the whole image, so only ``stretch`` keeps them).

    Returns:
        (float mAP, int8 mAP).
    """
    import cv2

    from edgekit.model.preprocess import prepare

    size = float_detector.input_size
    float_dets, int8_dets = [], []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"{path}: unreadable image in the --eval folder")
        image, _ = prepare(bgr, size, preprocess, color="BGR")
        float_dets.append(float_detector.detect(image))
        int8_dets.append(int8_detector.detect(image))
    return (
        mean_average_precision(float_dets, truths, num_classes),
        mean_average_precision(int8_dets, truths, num_classes),
    )


def load_calibration(
    calib: str | Path | Sequence[str | Path],
    size: tuple[int, int],
    preprocess: Preprocess,
    count: int,
    seed: int = 0,
) -> tuple[npt.NDArray[np.uint8], int]:
    """Calibration images prepared exactly as the device prepares frames.

    Args:
        calib: a folder of images (recursive), a video file (frames sampled evenly) or a list of image paths.
        size: (height, width) of the model input.
        preprocess: the resize policy.
        count: images wanted; when fewer are readable, random crops (60-100 % of the area) and mirror images
            of them fill up the set.
        seed: seed for sampling and augmentation.

    Returns:
        (``[count, H, W, 3]`` uint8 RGB, number of unreadable files skipped).

    Raises:
        InputError: missing path or fewer than 10 readable images.
    """
    import cv2

    from edgekit.model.preprocess import prepare

    rng = np.random.default_rng(seed)
    frames: list[npt.NDArray[np.uint8]] = []
    skipped = 0
    ignored = 0
    where: str
    if isinstance(calib, (str, Path)):
        root = Path(calib)
        where = str(root)
        if root.is_file() and root.suffix.lower() in VIDEO_SUFFIXES:
            frames = _video_frames(cv2, root, count)
            paths: list[Path] = []
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
            # Annotations, notes and the like beside the photos are not calibration data: leave them out
            # before sampling rather than count them as unreadable.
            paths = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            ignored = len(files) - len(paths)
        elif root.exists():
            raise InputError(f"{root}: --calib must be a folder of images or a video file")
        else:
            raise InputError(f"{root}: --calib does not exist")
    else:
        paths = [Path(p) for p in calib]
        where = "calibration list"
    if len(paths) > count:
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count)]
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            skipped += 1
            continue
        frames.append(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8))
    if len(frames) < MIN_CALIB:
        detail = f" ({skipped} image files unreadable)" if skipped else ""
        if ignored:
            detail += f" ({ignored} files without an image suffix ignored)"
        raise InputError(
            f"{where}: {len(frames)} usable calibration images{detail}; need at least {MIN_CALIB} "
            "(.jpg/.png photos like the ones the camera will see)"
        )
    if skipped:
        logger.warning("%s: skipped %d unreadable calibration files", where, skipped)
    out = np.empty((count, size[0], size[1], 3), dtype=np.uint8)
    for i in range(count):
        frame = frames[i % len(frames)]
        if i >= len(frames):
            frame = _random_crop(frame, rng)
        prepare(frame, size, preprocess, out=out[i])
    return out, skipped


def _random_crop(frame: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    h, w = frame.shape[:2]
    area = rng.uniform(0.6, 1.0)
    ch, cw = max(1, int(h * np.sqrt(area))), max(1, int(w * np.sqrt(area)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = frame[y : y + ch, x : x + cw]
    return np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)


def _video_frames(cv2: Any, path: Path, count: int) -> list[npt.NDArray[np.uint8]]:
    cap = cv2.VideoCapture(str(path))
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not cap.isOpened() or total <= 0:
            raise InputError(f"{path}: cannot read this video for calibration")
        wanted = set(int(i) for i in np.linspace(0, total - 1, min(count, total)))
        frames = []
        for i in range(total):
            ok, bgr = cap.read()
            if not ok:
                break
            if i in wanted:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return frames
    finally:
        cap.release()


def _resolve_labels(labels: str | Path | Sequence[str] | None, num_classes: int) -> list[str]:
    if labels is None:
        return [f"class_{i}" for i in range(num_classes)]
    if isinstance(labels, (str, Path)):
        return list(labels_for_outputs(labels, "detect", num_classes, f"the detector ({_POSTPROCESS})"))
    names = [str(n) for n in labels]
    source = "labels"
    if len(names) != num_classes:
        raise InputError(
            f"{source}: has {len(names)} labels but the detector's {_POSTPROCESS} declares num_classes="
            f"{num_classes}; give one label per class, background excluded"
        )
    if any(not n for n in names):
        raise InputError(f"{source}: line {names.index('') + 1} is empty; give one label per line")
    return names


_POSTPROCESS = "TFLite_Detection_PostProcess"


def _write_output(
    out: Path,
    model: bytes,
    labels: Sequence[str],
    manifest: Manifest,
    report: DetectReport,
    extensions: Sequence[Extension],
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        (tmp / manifest.model).write_bytes(model)
        (tmp / "labels.txt").write_text("".join(f"{n}\n" for n in labels), encoding="utf-8")
        for extension in extensions:
            report.sections.update(extension(model, tmp, report.to_dict()))
        if (tmp / "model_edgetpu.tflite").is_file():  # written by the Edge TPU stage
            manifest = replace(manifest, edgetpu_model="model_edgetpu.tflite")
        manifest.write(tmp)
        write_atomic(tmp / "report.json", json.dumps(report.to_dict(), indent=2) + "\n")
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _versions() -> dict[str, str]:
    import tensorflow as tf

    from edgekit import __version__

    return {"edgekit": __version__, "tensorflow": str(tf.__version__)}


# Options of `edgekit convert` that only make sense for classifiers, with the flag a user typed.
_CLASSIFIER_ONLY = {
    "alpha": "--alpha",
    "input_size": "--input-size",
    "weights": "--weights",
    "resize": "--resize",
    "crop_fraction": "--crop-fraction",
    "min_agreement": "--min-agreement",
}


def convert_detector_from_options(options: ConvertOptions) -> DetectReport:
    """`edgekit convert --task detect`: check the shared command-line options, then `convert_detector`.

    Raises:
        InputError: an option that applies to classifiers only, int8 input (detectors take uint8 pixels), a
            per-channel mean/std (the OD API normalises all channels alike), or a textbook recipe.
    """
    for name, flag in _CLASSIFIER_ONLY.items():
        if getattr(options, name) is not None:
            raise InputError(f"{flag}: applies to classifiers only; drop it for --task detect")
    if options.io != "uint8":
        raise InputError("--io int8: detectors are converted with uint8 input (as Coral's SSDs); drop --io")
    if options.recipe != "edgekit":
        raise InputError("--recipe: detectors have one recipe; drop --recipe for --task detect")
    mean, std = _uniform("--mean", options.mean, 127.5), _uniform("--std", options.std, 127.5)
    if options.preprocess == "raw":
        mean, std = 0.0, 1.0
    elif options.preprocess == "torch":
        raise InputError("--preprocess torch: detectors need one mean/std for all channels; use --mean/--std")
    return convert_detector(
        options.model,
        options.calib,
        options.out,
        labels=options.labels,
        eval_dir=options.eval,
        num_calib=options.num_calib,
        input_mean=mean,
        input_std=std,
        force=options.force,
        seed=options.seed,
        extensions=options.extensions,
        downscale=options.downscale,
    )


def _uniform(flag: str, value: tuple[float, float, float] | None, default: float) -> float:
    if value is None:
        return default
    if len(set(value)) != 1:
        raise InputError(f"{flag} {','.join(f'{v:g}' for v in value)}: detectors take one value for all channels")
    return value[0]
