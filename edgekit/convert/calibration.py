"""Calibration and evaluation images: a folder (recursive) or a video, through the device's own preprocessing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import InputError
from edgekit.model.manifest import Preprocess
from edgekit.model.preprocess import prepare
from edgekit.plan import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})
MIN_IMAGES = 10

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ImageSet:
    """Model-ready uint8 RGB images and where they came from.

    ``images`` is (N, H, W, 3) uint8, already cropped/resized by `edgekit.model.preprocess.prepare`.
    ``labels`` holds a class name per image when the folder had one sub-folder per class, else None.
    ``origins`` names the file (and frame) each image came from; augmented copies repeat their origin.
    """

    images: np.ndarray
    origins: tuple[str, ...]
    labels: tuple[str, ...] | None = None
    skipped: tuple[str, ...] = ()
    augmented: int = 0
    kind: str = "folder"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: Sequence[int] | np.ndarray) -> ImageSet:
        """The images at ``index``, keeping origins and labels aligned."""
        idx = [int(i) for i in index]
        return ImageSet(
            images=self.images[idx],
            origins=tuple(self.origins[i] for i in idx),
            labels=tuple(self.labels[i] for i in idx) if self.labels is not None else None,
            skipped=self.skipped,
            augmented=self.augmented,
            kind=self.kind,
            notes=self.notes,
        )


def _read_image(path: Path) -> np.ndarray | None:
    import cv2

    # imdecode over imread: imread cannot open non-ASCII paths on some platforms, and both return None on junk.
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or min(image.shape[:2]) < 8:
        return None
    return np.ascontiguousarray(image[:, :, ::-1])


def list_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursive, hidden entries skipped), sorted for reproducibility."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _class_of(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) >= 2 else None


def read_sources_check(path: str | Path, what: str = "--calib") -> None:
    """Fail fast (before TensorFlow is imported) on a missing path or an image-less folder.

    Raises:
        InputError: the path does not exist, or is a folder without images.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path}: no such file or folder; give a folder of images or a video file")
    if path.is_dir() and not list_images(path):
        raise InputError(f"{what} {path}: no images found (looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))})")


def read_sources(
    path: str | Path, max_frames: int = 300, what: str = "--calib"
) -> tuple[list[np.ndarray], list[str], list[str | None], list[str], str]:
    """Decode the full-size RGB images of a folder, or frames sampled evenly from a video.

    Args:
        path: a folder of images (searched recursively) or a video file.
        max_frames: how many frames to take from a video (evenly spaced over its length).
        what: the option name, for error messages.

    Returns:
        (images, origins, class names or None per image, skipped file names, kind "folder"|"video").

    Raises:
        InputError: the path does not exist, is empty, or is neither a folder nor a readable video.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path}: no such file or folder; give a folder of images or a video file")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputError(
                f"{what} {path}: no images found (looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        images: list[np.ndarray] = []
        origins: list[str] = []
        classes: list[str | None] = []
        skipped: list[str] = []
        for file in files:
            image = _read_image(file)
            if image is None:
                logger.info("%s: not a readable image, skipped", file)
                skipped.append(str(file.relative_to(path)))
                continue
            images.append(image)
            origins.append(str(file.relative_to(path)))
            classes.append(_class_of(file, path))
        return images, origins, classes, skipped, "folder"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"{what} {path}: a single image is not enough; give a folder of images or a video file")
    frames, origins = _read_video(path, max_frames, what)
    return frames, origins, [None] * len(frames), [], "video"


def _read_video(path: Path, max_frames: int, what: str) -> tuple[list[np.ndarray], list[str]]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"{what} {path}: not a readable video (and not a folder of images)")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            # Some containers do not know their length: decode everything, then sample.
            frames_all: list[np.ndarray] = []
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                frames_all.append(frame)
            count = len(frames_all)
            wanted = _even(count, max_frames)
            picked = [(i, frames_all[i]) for i in wanted]
        else:
            wanted_set = set(_even(count, max_frames))
            picked = []
            # Sequential decode: seeking in MJPEG/H.264 is unreliable across OpenCV backends.
            for index in range(count):
                ok, frame = capture.read()
                if not ok:
                    break
                if index in wanted_set:
                    picked.append((index, frame))
    finally:
        capture.release()
    if not picked:
        raise InputError(f"{what} {path}: no frames could be decoded from this video")
    return [np.ascontiguousarray(f[:, :, ::-1]) for _, f in picked], [f"{path.name}#{i}" for i, _ in picked]


def _even(count: int, wanted: int) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return sorted({round(float(v)) for v in np.linspace(0, count - 1, wanted)})


def random_crop(image: np.ndarray, rng: np.random.Generator, min_area: float = 0.35) -> np.ndarray:
    """A random crop covering ``min_area``..1 of the image with an aspect ratio in 3/4..4/3, maybe mirrored.

    The calibration set only needs activation statistics like the device will see, so mild, label-preserving
    augmentation (Inception-style crops and horizontal flips, no colour changes) is enough.
    """
    h, w = image.shape[:2]
    for _ in range(10):
        area = rng.uniform(min_area, 1.0) * h * w
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw = round(float(np.sqrt(area * aspect)))
        ch = round(float(np.sqrt(area / aspect)))
        if 8 <= cw <= w and 8 <= ch <= h:
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            crop = image[y : y + ch, x : x + cw]
            break
    else:
        crop = image
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def build_set(
    images: Sequence[np.ndarray],
    origins: Sequence[str],
    size: tuple[int, int],
    preprocess: Preprocess,
    count: int | None = None,
    classes: Sequence[str | None] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str], list[str | None], int]:
    """Prepare images for the model; when ``count`` exceeds the images, add seeded random crops/flips.

    Args:
        images: full-size RGB images.
        origins: a name per image.
        size: model (height, width).
        preprocess: the manifest's resize policy (the device's own `prepare` is used).
        count: how many model inputs to make (None: one per image).
        classes: optional class name per image.
        seed: augmentation seed, so a conversion is reproducible.
        progress: called with the number of images done since the last call.

    Returns:
        (N, H, W, 3) uint8 array, origins, classes, number of augmented images.
    """
    total = len(images) if count is None else count
    classes = list(classes) if classes is not None else [None] * len(images)
    rng = np.random.default_rng(seed)
    out = np.empty((total, size[0], size[1], 3), dtype=np.uint8)
    out_origins: list[str] = []
    out_classes: list[str | None] = []
    augmented = 0
    if total <= len(images):
        # Enough images: take an even spread (every image when total == len), never augment.
        order = _even(len(images), total)
    else:
        order = list(range(len(images)))
        extra = total - len(images)
        order += [int(i) for i in rng.permutation(np.resize(np.arange(len(images)), extra))]
    for n, i in enumerate(order):
        image = images[i]
        if n >= len(images) and total > len(images):
            image = random_crop(image, rng)
            augmented += 1
        prepare(image, size, preprocess, out=out[n])
        out_origins.append(origins[i])
        out_classes.append(classes[i])
        if progress is not None:
            progress(1)
    return out, out_origins, out_classes, augmented


def load_calibration(
    path: str | Path,
    size: tuple[int, int],
    preprocess: Preprocess,
    num: int = 300,
    seed: int = 0,
    progress: Progress | None = None,
    what: str = "--calib",
) -> ImageSet:
    """The calibration set: ``num`` model inputs from a folder or video, augmented when there are too few.

    Args:
        path: folder (recursive) or video file.
        size: model input (height, width).
        preprocess: resize policy and crop fraction (the device's).
        num: number of calibration inputs wanted.
        seed: augmentation seed.
        progress: progress callback (images done).
        what: option name for messages.

    Returns:
        The prepared ImageSet (augmented copies come after the originals).

    Raises:
        InputError: missing or empty path, or fewer than 10 readable images.
    """
    if num < 1:
        raise InputError(f"--num-calib {num}: must be at least {MIN_IMAGES}")
    images, origins, classes, skipped, kind = read_sources(path, max_frames=num, what=what)
    if len(images) < MIN_IMAGES:
        detail = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
        raise InputError(
            f"{what} {path}: only {len(images)} usable images{detail}; at least {MIN_IMAGES} are needed, "
            "and a few hundred from the camera's own scene work best"
        )
    array, out_origins, out_classes, augmented = build_set(
        images, origins, size, preprocess, count=num, classes=classes, seed=seed, progress=progress
    )
    labels = tuple(c or "" for c in out_classes) if any(out_classes) else None
    return ImageSet(array, tuple(out_origins), labels, tuple(skipped), augmented, kind)


def load_eval(
    path: str | Path,
    size: tuple[int, int],
    preprocess: Preprocess,
    max_images: int = 1000,
    progress: Progress | None = None,
) -> ImageSet:
    """Held-out evaluation images (no augmentation); sub-folders name the classes when present.

    Raises:
        InputError: missing or empty path.
    """
    images, origins, classes, skipped, kind = read_sources(path, max_frames=max_images, what="--eval")
    if len(images) > max_images:
        keep = _even(len(images), max_images)
        images = [images[i] for i in keep]
        origins = [origins[i] for i in keep]
        classes = [classes[i] for i in keep]
    if not images:
        raise InputError(f"--eval {path}: no readable images")
    array, out_origins, out_classes, _ = build_set(
        images, origins, size, preprocess, classes=classes, progress=progress
    )
    labels = tuple(c or "" for c in out_classes) if all(out_classes) else None
    return ImageSet(array, tuple(out_origins), labels, tuple(skipped), 0, kind)


def split_holdout(calib: ImageSet, fraction: float = 0.2, seed: int = 0) -> tuple[ImageSet, ImageSet, str]:
    """Split a calibration set by source image so that no picture (or its crops) lands on both sides.

    Returns:
        (calibration part, held-out part, a sentence saying what was done).
    """
    originals = sorted(set(calib.origins))
    rng = np.random.default_rng(seed)
    n_hold = max(1, round(len(originals) * fraction))
    held = set(rng.choice(originals, size=n_hold, replace=False).tolist())
    cal_idx = [i for i, o in enumerate(calib.origins) if o not in held]
    hold_idx = [i for i, o in enumerate(calib.origins) if o in held]
    note = (
        f"no --eval given: held out {n_hold} of {len(originals)} calibration sources "
        f"({len(hold_idx)} images) for evaluation; pass --eval for an independent check"
    )
    return calib.subset(cal_idx), calib.subset(hold_idx), note
