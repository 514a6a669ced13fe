"""Events of a classification stream: the top class changed and held, its score moved, it gave way to another.

A class "holds" when it is the top class of ``hold`` frames in a row, so a single-frame flicker (or a few, below
``hold``) neither ends an event nor starts one; that is what `--only-changes` lacks. The records follow the event
contract the detection events use (``"type": "event"``), with the detection-only fields empty.

    new     a class held ``hold`` frames and is not the current event's; ``start`` is the first of those frames
    update  the event's class is top and its score moved by more than ``step`` since the last record it sent
    end     another class (or no class above the threshold) held ``hold`` frames, or the stream ended; ``end`` is
            the first frame of the run that replaced it (or the last frame seen)

A frame that motion gating skipped did not change, so it keeps the last inferred class (`unchanged`): it counts
towards a hold, and an event holds through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


class ClassEvents:
    """Turns each frame's top class into event records (see the module).

    Args:
        camera: the name the per-frame records carry.
        hold: frames in a row a class must be top before it counts (1: every change counts).
        step: how far the score must move (0..1) for an ``update``.
    """

    def __init__(self, camera: str, hold: int, step: float) -> None:
        self.camera = camera
        self.hold = hold
        self.step = step
        self._run_id: int | None = None  # the class of the current run of frames (None: no class)
        self._run_start = 0.0
        self._run_length = 0
        self._event: dict[str, Any] | None = None  # the record of the open event
        self._event_class: int | None = None
        self._sent_score = 0.0
        self._last_ts = 0.0
        self._last_top: Mapping[str, Any] | None = None

    def update(self, top: Mapping[str, Any] | None, ts: float) -> list[dict[str, Any]]:
        """One inferred frame.

        Args:
            top: the frame's top class (``{"id", "label", "score"}`` of the result), or None when none passed.
            ts: the frame's capture time (epoch seconds, as the result's ``ts``).

        Returns:
            The event records this frame causes, in order (often none).
        """
        self._last_ts, self._last_top = ts, top
        class_id = None if top is None else int(top["id"])
        if class_id != self._run_id or self._run_length == 0:
            self._run_id, self._run_start, self._run_length = class_id, ts, 0
        self._run_length += 1
        out: list[dict[str, Any]] = []
        if self._event is not None and class_id == self._event_class:
            assert top is not None
            score = float(top["score"])
            self._event["top_score"] = max(self._event["top_score"], score)
            self._event["score"] = score
            if abs(score - self._sent_score) > self.step:
                self._sent_score = score
                out.append(self._record("update"))
            return out
        if self._run_length < self.hold:
            return out
        if self._event is not None:
            out.append(self._close(self._run_start))
        if top is not None:
            score = float(top["score"])
            self._event_class, self._sent_score = class_id, score
            self._event = {
                "id": f"{self._run_start:.3f}-{os.urandom(3).hex()}",
                "label": top.get("label") or str(class_id),
                "start": self._run_start,
                "score": score,
                "top_score": score,
            }
            out.append(self._record("new"))
        return out

    def unchanged(self, ts: float) -> list[dict[str, Any]]:
        """A frame that was not inferred because it did not change: the last frame's top class again."""
        return self.update(self._last_top, ts)

    # The pipeline's event stage (`edgekit.device.pipeline.EventStage`), like the detection events.
    needs_frames = False  # class events keep no images

    def observe(self, record: dict[str, Any], frame: Any, geometry: Any) -> list[dict[str, Any]]:
        """One classification result record: its top class (or none) at the frame's capture time."""
        classes = record["classes"]
        return self.update(classes[0] if classes else None, frame.timestamp)

    def skipped(self, frame: Any) -> list[dict[str, Any]]:
        """A frame motion gating skipped: it counts towards the hold (see `unchanged`)."""
        return self.unchanged(frame.timestamp)

    def has_active_objects(self) -> bool:
        """Nothing is tracked: an unchanged picture keeps its class, so gating may skip it."""
        return False

    def finish(self) -> list[dict[str, Any]]:
        """The stream ended: the open event's ``end`` (at the last frame seen), if there is one."""
        return [self._close(self._last_ts)] if self._event is not None else []

    def _close(self, end: float) -> dict[str, Any]:
        record = self._record("end", end)
        self._event, self._event_class = None, None
        return record

    def _record(self, kind: str, end: float | None = None) -> dict[str, Any]:
        event = self._event
        assert event is not None
        return {
            "type": "event",
            "event": kind,
            "id": event["id"],
            "camera": self.camera,
            "label": event["label"],
            "start": _ms(event["start"]),
            "end": None if end is None else _ms(end),
            "score": event["score"],
            "top_score": event["top_score"],
            "box": None,
            "entered_zones": [],
            "current_zones": [],
            "stationary": False,
            "has_snapshot": False,
            "track_id": None,
        }


def _ms(ts: float) -> float:
    return int(ts * 1000 + 0.5) / 1000  # round(ts, 3) for ts > 0, as the results' "ts"
