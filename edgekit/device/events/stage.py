"""The event stage of a detection run: filters and masks, the tracker, zones, and the event records it yields.

`edgekit.device.pipeline.Pipeline` hands it each result record (with the frame and its geometry) after
postprocessing; the stage adds each detection's ``track_id`` (null for one filtered or masked out) and returns
the event records to send. It is fed by the results, never reaches back into the loop.

Event records (README, "Tracking and events"): ``{"type": "event", "event": "new" | "update" | "end", "id",
"camera", "label", "start", "end", "score", "top_score", "box", "entered_zones", "current_zones", "stationary",
"has_snapshot", "track_id"}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.device.events.spec import EventsSpec, Polygon
from edgekit.device.events.tracker import Track, Tracker
from edgekit.device.sources.base import Frame
from edgekit.model.preprocess import Geometry

_STILL_IOU = 0.8  # a box overlapping where it stopped this much has not moved


@dataclass
class _ZoneState:
    frames: int = 0  # consecutive frames inside
    since: float = 0.0  # when the current stay began


@dataclass
class _Object:
    """What the stage knows of one confirmed track: its event, zones and stillness."""

    event_id: str
    start: float
    box: Any  # the last detection's pixel box (the record's format)
    score: float
    top_score: float
    label: str
    zones: dict[str, _ZoneState]
    entered: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    anchor: tuple[float, float, float, float] | None = None
    still: int = 0
    stationary: bool = False
    sent: tuple[Any, ...] = ()  # what the last record said (label, zones, stationary)
    sent_top: float = 0.0
    best: tuple[Frame, Any] | None = None  # the snapshot's frame and box (references: frames are immutable)
    best_score: float = -1.0
    has_snapshot: bool = False


class DetectionEvents:
    """Tracks the detections of one camera and turns the tracks into events (see the module docstring).

    Args:
        spec: the checked ``[tracking]``/``[events]``/``[objects]``/``[zones]`` tables.
    """

    def __init__(self, spec: EventsSpec) -> None:
        import cv2

        self._point_in = cv2.pointPolygonTest
        self.spec = spec
        self.tracker = Tracker(spec.iou, spec.min_hits, spec.window, spec.end_after)
        self._objects: dict[int, _Object] = {}
        self._size: tuple[int, int] | None = None
        self._mask: list[np.ndarray] = []  # the masks of every label
        self._label_masks: dict[str, list[np.ndarray]] = {}  # label -> every mask that applies to it
        self._zones: list[tuple[str, np.ndarray, frozenset[str], int, float]] = []
        self._camera = ""
        self._snapshots = spec.snapshots
        self._folder = None
        if spec.snapshots is not None and spec.snapshots.folder is not None:
            from edgekit.device.events.snapshots import SnapshotFolder

            self._folder = SnapshotFolder(spec.snapshots)

    @property
    def needs_frames(self) -> bool:
        """Whether `observe` keeps frames (for snapshots): the pipeline must not drop their images."""
        return self._snapshots is not None

    def _place(self, size: tuple[int, int]) -> None:
        """Polygons as fractions of the frame (pixel ones need the frame's size: known from the first frame)."""
        self._size = size

        def norm(polygons: Sequence[Polygon]) -> list[np.ndarray]:
            return [p.normalised(size) for p in polygons]

        self._mask = norm(self.spec.mask)
        # joined here once, not per detection in _keep
        self._label_masks = {label: self._mask + norm(f.mask) for label, f in self.spec.filters.items() if f.mask}
        self._zones = [(z.name, z.polygon.normalised(size), z.labels, z.inertia, z.loitering) for z in self.spec.zones]

    def _inside(self, polygon: np.ndarray, x: float, y: float) -> bool:
        return bool(self._point_in(polygon, (x, y), False) >= 0)

    def _keep(self, d: dict[str, Any]) -> bool:
        if d["score"] < self.spec.min_score:
            return False
        b = d["box_norm"]
        f = self.spec.filters.get(d["label"])
        if f is not None:
            area = (b["xmax"] - b["xmin"]) * (b["ymax"] - b["ymin"])
            if d["score"] < f.min_score or not f.min_area <= area <= f.max_area:
                return False
        masks = self._label_masks.get(d["label"], self._mask)
        if masks:
            x, y = (b["xmin"] + b["xmax"]) / 2, b["ymax"]  # the bottom centre: where the object stands
            if any(self._inside(m, x, y) for m in masks):
                return False
        return True

    def observe(self, record: dict[str, Any], frame: Frame, geometry: Geometry) -> list[dict[str, Any]]:
        """Take one result record: give each detection its ``track_id``, return the event records due.

        Detections below the score filters, outside the area filters or standing in a mask are not tracked
        (``track_id`` null); the record keeps them, as the detector saw them.

        Args:
            record: a detection result record (each detection gains ``track_id``).
            frame: the frame it is about (its timestamp is the event clock).
            geometry: how the frame went into the model (its source size places pixel polygons).

        Returns:
            Event records, in the order to send them (empty when events are off).
        """
        if geometry.source_size != self._size:
            self._place(geometry.source_size)
        self._camera = record["camera"]
        kept = []
        for d in record["detections"]:
            if self._keep(d):
                kept.append(d)
            else:
                d["track_id"] = None
        boxes = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in (d["box_norm"] for d in kept)]
        ts = frame.timestamp
        tracks, ended = self.tracker.update(boxes, [d["label"] for d in kept], [d["score"] for d in kept], ts)
        for d, t in zip(kept, tracks, strict=True):
            d["track_id"] = t.id
        if not self.spec.events:
            return []
        out = [r for t in ended if t.id in self._objects for r in self._end(t)]
        for d, t in zip(kept, tracks, strict=True):
            if t.confirmed:
                out.extend(self._seen(t, d, frame))
        return out

    def skipped(self, frame: Frame) -> list[dict[str, Any]]:
        """A frame motion gating skipped: never shown to the tracker (see `has_active_objects`)."""
        return []

    def has_active_objects(self) -> bool:
        """Whether a track is open (the motion gate then infers every frame).

        Stationary objects count too: a frame the gate skipped is never shown to the tracker, so it would take a
        parked car for gone after ``end_after`` and end its event. With one in view, gating saves nothing.
        """
        return bool(self.tracker.tracks)

    def finish(self) -> list[dict[str, Any]]:
        """End every open event (the source ended or the run stops): their ``end`` is when each was last seen."""
        if not self.spec.events:
            return []
        tracks = {t.id: t for t in self.tracker.tracks}
        out = [r for tid in list(self._objects) if tid in tracks for r in self._end(tracks[tid])]
        self._objects.clear()
        return out

    def _seen(self, t: Track, d: dict[str, Any], frame: Frame) -> list[dict[str, Any]]:
        ts = frame.timestamp
        obj = self._objects.get(t.id)
        new = obj is None
        if obj is None:
            # os.urandom, not secrets.token_hex: `secrets` imports hashlib (OpenSSL), +4 MB of peak RSS per run.
            obj = _Object(
                f"{t.first_seen:.6f}-{os.urandom(3).hex()}",
                t.first_seen,
                d["box"],
                d["score"],
                d["score"],
                t.label,
                {z[0]: _ZoneState() for z in self._zones},
            )
            self._objects[t.id] = obj
        obj.box, obj.score, obj.label = d["box"], d["score"], t.label
        obj.top_score = max(obj.top_score, d["score"])
        if self._snapshots is not None and d["score"] > obj.best_score and frame.image.size:
            x0, y0, x1, y1 = t.box
            if x0 > 0.002 and y0 > 0.002 and x1 < 0.998 and y1 < 0.998:  # the whole object is in the picture
                obj.best, obj.best_score = (frame, d["box"]), d["score"]
        self._update_zones(obj, t, ts)
        self._update_still(obj, t.box)
        said = (obj.label, tuple(obj.current), tuple(obj.entered), obj.stationary)
        if new:
            kind = "new"
        elif said != obj.sent or obj.top_score - obj.sent_top >= self.spec.score_step - 1e-9:
            kind = "update"
        else:
            return []
        obj.sent, obj.sent_top = said, obj.top_score
        return [self._record(kind, obj, t, None)]

    def _update_zones(self, obj: _Object, t: Track, ts: float) -> None:
        x0, _, x1, y1 = t.box
        x, y = (x0 + x1) / 2, y1
        current = []
        for name, polygon, labels, inertia, loitering in self._zones:
            state = obj.zones[name]
            if (not labels or obj.label in labels) and self._inside(polygon, x, y):
                if state.frames == 0:
                    state.since = ts
                state.frames += 1
                if state.frames >= inertia and ts - state.since >= loitering:
                    current.append(name)
                    if name not in obj.entered:
                        obj.entered.append(name)
            else:
                state.frames = 0
        obj.current = current

    def _update_still(self, obj: _Object, box: tuple[float, float, float, float]) -> None:
        a = obj.anchor
        if a is not None:
            w = min(a[2], box[2]) - max(a[0], box[0])
            h = min(a[3], box[3]) - max(a[1], box[1])
            inter = max(w, 0.0) * max(h, 0.0)
            union = (a[2] - a[0]) * (a[3] - a[1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
            if union > 0 and inter / union >= _STILL_IOU:
                obj.still += 1
                obj.stationary = obj.still >= self.spec.stationary_frames
                return
        obj.anchor, obj.still, obj.stationary = box, 0, False

    def _end(self, t: Track) -> list[dict[str, Any]]:
        """The end record, after the snapshot record when there is a snapshot."""
        obj = self._objects.pop(t.id)
        obj.current = []
        out = []
        if self._snapshots is not None and obj.best is not None:
            from edgekit.device.events.snapshots import render

            frame, box = obj.best
            jpeg = render(frame.image, box, self._snapshots.margin, self._snapshots.quality, frame.color)
            if self._folder is not None:
                self._folder.save(f"{self._camera}-{obj.label}-{obj.event_id}.jpg", jpeg)
            out.append(
                {"type": "snapshot", "camera": self._camera, "label": obj.label, "id": obj.event_id, "jpeg": jpeg}
            )
            obj.has_snapshot = True
        out.append(self._record("end", obj, t, t.last_seen))
        return out

    def _record(self, kind: str, obj: _Object, t: Track, end: float | None) -> dict[str, Any]:
        return {
            "type": "event",
            "event": kind,
            "id": obj.event_id,
            "camera": self._camera,
            "label": obj.label,
            "start": round(obj.start, 3),
            "end": None if end is None else round(end, 3),
            "score": obj.score,
            "top_score": obj.top_score,
            "box": obj.box,
            "entered_zones": list(obj.entered),
            "current_zones": list(obj.current),
            "stationary": obj.stationary,
            "has_snapshot": obj.has_snapshot,
            "track_id": t.id,
        }
