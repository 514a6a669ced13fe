"""A trained shape detector for tests, benchmarks and demos, cached on disk under a hash of its recipe."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.convert.detect.scenes import SHAPE_CLASSES, load_photos, make_scenes

logger = logging.getLogger(__name__)

# Bump when the model definition, anchors, loss or scene generator change, so stale caches are not reused.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How to train the shape detector; every field goes into the cache key.

    Attributes:
        input_size: square input side.
        alpha: MobileNetV2 width multiplier.
        train_scenes: generated training scenes.
        steps: optimiser steps.
        batch_size: scenes per step.
        learning_rate: peak learning rate.
        seed: seed of scenes, weights and batches.
        stretch: (min, max) width / height of the training scenes before they are squeezed to the square input
            (`make_scenes`): a detector for 4:3 or 16:9 frames under the "stretch" preprocessing.
    """

    input_size: int = 160
    alpha: float = 0.35
    train_scenes: int = 1000
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    stretch: tuple[float, float] = (1.0, 1.0)

    def key(self, photos_dir: str | Path) -> str:
        """Hash of the recipe, the code version and the background photos (names and sizes)."""
        photos = sorted((p.name, p.stat().st_size) for p in Path(photos_dir).iterdir() if p.is_file())
        fields = asdict(self)
        if self.stretch == (1.0, 1.0):  # added later: left out at its default so older trainings stay cached
            del fields["stretch"]
        blob = json.dumps([RECIPE_VERSION, fields, photos], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def trained_shape_detector(photos_dir: str | Path, cache_dir: str | Path, recipe: Recipe | None = None) -> Path:
    """A SavedModel of an SSDLite detector trained on generated scenes, reused from the cache when present.

    Args:
        photos_dir: folder of background photos.
        cache_dir: cache root; the model lands in ``<cache_dir>/ssdlite-shapes-<key>/saved_model``.
        recipe: training recipe (`Recipe()` when omitted).

    Returns:
        The SavedModel directory (``TFLite_Detection_PostProcess`` layout, classes `SHAPE_CLASSES`).
    """
    from edgekit.convert.detect.export import export_detector
    from edgekit.convert.detect.ssdlite import build_ssdlite, train_ssdlite

    recipe = recipe or Recipe()
    folder = Path(cache_dir) / f"ssdlite-shapes-{recipe.key(photos_dir)}"
    saved_model = folder / "saved_model"
    if (saved_model / "saved_model.pb").is_file():
        logger.info("using cached detector %s", saved_model)
        return saved_model
    folder.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(
        load_photos(photos_dir), recipe.train_scenes, recipe.input_size, seed=recipe.seed + 1, stretch=recipe.stretch
    )
    det = build_ssdlite(len(SHAPE_CLASSES), recipe.input_size, recipe.alpha, seed=recipe.seed)
    logger.info("training %s for %d steps", det.model.name, recipe.steps)
    history = train_ssdlite(
        det,
        scenes.images,
        scenes.boxes,
        scenes.classes,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        seed=recipe.seed,
    )
    (folder / "recipe.json").write_text(
        json.dumps({"recipe": asdict(recipe), "labels": SHAPE_CLASSES, "loss": history[-1]}, indent=2),
        encoding="utf-8",
    )
    (folder / "labels.txt").write_text("".join(f"{c}\n" for c in SHAPE_CLASSES), encoding="utf-8")
    # Exported last and atomically: a cache entry with saved_model.pb is always complete.
    return export_detector(det, saved_model)
