"""The ``[tracking]``, ``[events]``, ``[objects]`` and ``[zones]`` tables turned into checked, typed specs.

`edgekit.config` checks each key's type and range; this module checks what needs the model (labels) or
geometry (polygons), once, from `edgekit.device.daemon.prepare`, so ``--validate-config`` refuses the same.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.config import Config
from edgekit.errors import ConfigError


@dataclass(frozen=True)
class Polygon:
    """A polygon as written: (K, 2) points, either fractions of the frame or source pixels."""

    points: np.ndarray
    pixels: bool

    def normalised(self, source_size: tuple[int, int]) -> np.ndarray:
        """The points as fractions of a frame of ``source_size`` (height, width), float32 for OpenCV."""
        if not self.pixels:
            return self.points.astype(np.float32)
        h, w = source_size
        return (self.points / np.array([w, h], np.float64)).astype(np.float32)


@dataclass(frozen=True)
class LabelFilter:
    """``[objects.filters.LABEL]``, checked."""

    min_score: float = 0.0
    min_area: float = 0.0
    max_area: float = 1.0
    mask: tuple[Polygon, ...] = ()


@dataclass(frozen=True)
class ZoneSpec:
    """``[zones.NAME]``, checked."""

    name: str
    polygon: Polygon
    labels: frozenset[str]  # empty: every label
    inertia: int
    loitering: float


@dataclass(frozen=True)
class SnapshotSpec:
    """``[snapshots]``, checked."""

    folder: Path | None
    max_bytes: int
    margin: float
    quality: int


@dataclass(frozen=True)
class EventsSpec:
    """What the event stage of a detection run does (`edgekit.device.events.stage.DetectionEvents`)."""

    iou: float
    min_score: float
    min_hits: int
    window: int
    end_after: float
    events: bool
    score_step: float
    stationary_frames: int
    mask: tuple[Polygon, ...]
    filters: dict[str, LabelFilter]
    zones: tuple[ZoneSpec, ...]
    snapshots: SnapshotSpec | None = None


def build_spec(config: Config, labels: Collection[str], model_name: str, where: str) -> EventsSpec | None:
    """The checked spec of a detection run, or None when tracking is off.

    Args:
        config: the loaded config.
        labels: the model's labels (zone labels and filter names must be among them).
        model_name: the model file's name, for messages.
        where: the config file, first in every message.

    Raises:
        ConfigError: a bad polygon, an unknown label, min_area above max_area; the message names the key path.
    """
    tracking, events, objects = config.tracking, config.events, config.objects
    known = {label.lower(): label for label in labels}

    def label_of(key: str, value: str) -> str:
        found = known.get(value.strip().lower())
        if found is None:
            shown = ", ".join(sorted(labels)[:8]) + (", ..." if len(labels) > 8 else "")
            raise ConfigError(f"{where}: key '{key}': {value!r} is not a label of {model_name} (labels: {shown})")
        return found

    filters: dict[str, LabelFilter] = {}
    for name, f in objects.filters.items():
        key = f"objects.filters.{name}"
        label = label_of(key, name)
        if f.min_area > f.max_area:
            raise ConfigError(f"{where}: key '{key}.min_area' ({f.min_area}) is above max_area ({f.max_area})")
        masks = tuple(parse_polygon(p, f"{key}.mask[{i}]", where) for i, p in enumerate(f.mask))
        filters[label] = LabelFilter(f.min_score, f.min_area, f.max_area, masks)
    zones = []
    for name, z in config.zones.items():
        key = f"zones.{name}"
        polygon = parse_polygon(z.coordinates, f"{key}.coordinates", where)
        zone_labels = frozenset(label_of(f"{key}.labels[{i}]", v) for i, v in enumerate(z.labels))
        zones.append(ZoneSpec(name, polygon, zone_labels, z.inertia, z.loitering))
    mask = tuple(parse_polygon(p, f"objects.mask[{i}]", where) for i, p in enumerate(objects.mask))
    if tracking.window < tracking.min_hits:
        raise ConfigError(
            f"{where}: key 'tracking.window' ({tracking.window}) must be at least tracking.min_hits "
            f"({tracking.min_hits}): an object is confirmed when seen in min_hits of its first window frames"
        )
    if not tracking.enabled:
        return None
    snapshots = None
    s = config.snapshots
    if s.enabled:
        snapshots = SnapshotSpec(Path(s.folder) if s.folder else None, int(s.max_mb * 1024 * 1024), s.margin, s.quality)
    return EventsSpec(
        iou=tracking.iou,
        min_score=tracking.min_score,
        min_hits=tracking.min_hits,
        window=tracking.window,
        end_after=tracking.end_after,
        events=events.enabled,
        score_step=events.score_step,
        stationary_frames=events.stationary_frames,
        mask=mask,
        filters=filters,
        zones=tuple(zones),
        snapshots=snapshots if events.enabled else None,
    )


def parse_polygon(points: Sequence[Sequence[float]], key: str, where: str) -> Polygon:
    """Check a polygon of a config: 3+ [x, y] points, not negative, enclosing an area, edges not crossing.

    All values at most 1 mean fractions of the frame; otherwise the values are source pixels.
    """
    usage = "a polygon of 3 or more [x, y] points (fractions of the frame 0..1, or pixels)"
    if len(points) < 3:
        raise ConfigError(f"{where}: key '{key}' must be {usage}, got {len(points)} point(s)")
    for i, point in enumerate(points):
        if len(point) != 2:
            raise ConfigError(f"{where}: key '{key}[{i}]' must be an [x, y] pair, got {list(point)!r}")
        if min(point) < 0:
            raise ConfigError(f"{where}: key '{key}[{i}]' must not be negative, got {list(point)!r}")
    array = np.asarray(points, np.float64)
    pixels = bool(array.max() > 1.0)
    x, y = array[:, 0], array[:, 1]
    crossing = _crossing_edges(array)
    if crossing is not None:
        a, b = crossing
        raise ConfigError(
            f"{where}: key '{key}': edges {a}-{(a + 1) % len(array)} and {b}-{(b + 1) % len(array)} cross; "
            "list the points in order around the polygon"
        )
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    if area < (1.0 if pixels else 1e-6):
        raise ConfigError(f"{where}: key '{key}' encloses no area (are the points on one line?)")
    return Polygon(array, pixels)


def _crossing_edges(p: np.ndarray) -> tuple[int, int] | None:
    """The first pair of non-adjacent edges that properly intersect, or None (a simple polygon)."""
    n = len(p)

    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    for i in range(n):
        a, b = p[i], p[(i + 1) % n]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            c, d = p[j], p[(j + 1) % n]
            d1, d2, d3, d4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
            if d1 * d2 < 0 and d3 * d4 < 0:
                return i, j
    return None
