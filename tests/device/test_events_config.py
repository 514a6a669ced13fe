"""The tracking, events, objects and zones tables: `--validate-config` refuses what `edgekit run` refuses, with the
same one-line message naming the key path, and the flags that turn tracking and events off."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import dump_toml

SQUARE = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
RULES: list[tuple[str, dict[str, Any], str]] = [
    ("tracking.min_hits", {"tracking": {"min_hits": 0}}, "key 'tracking.min_hits' must be 1 or more, got 0"),
    ("tracking.end_after", {"tracking": {"end_after": 0.0}}, "key 'tracking.end_after' must be above 0 seconds"),
    ("tracking.iou", {"tracking": {"iou": 1.0}}, "key 'tracking.iou' must be between 0 and 1 (exclusive)"),
    ("window below min_hits", {"tracking": {"min_hits": 4, "window": 2}}, "key 'tracking.window' (2) must be at"),
    ("snapshots.quality", {"snapshots": {"quality": 0}}, "key 'snapshots.quality' must be 1..100, got 0"),
    ("snapshots.max_mb", {"snapshots": {"max_mb": 0.0}}, "key 'snapshots.max_mb' must be above 0, got 0.0"),
    ("events.score_step", {"events": {"score_step": 0.0}}, "key 'events.score_step' must be above 0 and at most 1"),
    ("unknown zone key", {"zones": {"drive": {"coords": SQUARE}}}, "unknown key 'zones.drive.coords'"),
    ("zone points", {"zones": {"drive": {"coordinates": [[0, 0], [1, 1]]}}}, "key 'zones.drive.coordinates' must"),
    ("zone point", {"zones": {"drive": {"coordinates": [[0, 0], [1, 0], [1]]}}}, "'zones.drive.coordinates[2]'"),
    ("zone type", {"zones": {"drive": {"coordinates": "0,0,1,1"}}}, "key 'zones.drive.coordinates' must be a list"),
    (
        "zone crossing",
        {"zones": {"drive": {"coordinates": [[0, 0], [1, 1], [1, 0.2], [0, 1]]}}},
        "key 'zones.drive.coordinates': edges 0-1 and 2-3 cross",
    ),
    (
        "zone label",
        {"zones": {"drive": {"coordinates": SQUARE, "labels": ["unicorn"]}}},
        "key 'zones.drive.labels[0]': 'unicorn' is not a label of ssd_layout.tflite",
    ),
    ("zone inertia", {"zones": {"drive": {"coordinates": SQUARE, "inertia": 0}}}, "'zones.drive.inertia' must be"),
    ("filter label", {"objects": {"filters": {"dog": {"min_score": 0.5}}}}, "key 'objects.filters.dog': 'dog' is"),
    ("filter score", {"objects": {"filters": {"cat": {"min_score": 2.0}}}}, "'objects.filters.cat.min_score' must"),
    (
        "filter areas",
        {"objects": {"filters": {"cat": {"min_area": 0.5, "max_area": 0.1}}}},
        "key 'objects.filters.cat.min_area' (0.5) is above max_area (0.1)",
    ),
    ("mask", {"objects": {"mask": [[[0, 0], [1, 0]]]}}, "key 'objects.mask[0]' must be a polygon of 3 or more"),
    ("label mask", {"objects": {"filters": {"cat": {"mask": [[[0, 0], [-1, 0], [1, 1]]]}}}}, "mask[0][1]' must not"),
]


def _base(ssd_model: Path, video: Path, tmp_path: Path) -> dict[str, Any]:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog_\nbird\nfish\n")
    return {"run": {"model": str(ssd_model), "labels": str(labels), "source": str(video), "frames": 3}}


def _error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("rule", [r for r, _, _ in RULES])
def test_validate_config_refuses_the_bad_tables_the_run_refuses(
    rule: str, ssd_model: Path, video: Path, tmp_path: Path
) -> None:
    changes, fragment = next((c, f) for r, c, f in RULES if r == rule)
    config = tmp_path / "edgekit.toml"
    config.write_text(dump_toml({**_base(ssd_model, video, tmp_path), **changes}))
    runner = CliRunner()
    checked = _error(runner.invoke(cli, ["run", "-c", str(config), "--validate-config"]))
    ran = _error(runner.invoke(cli, ["run", "-c", str(config)]))
    assert checked == ran and checked.startswith(f"Error: {config}: ")
    assert fragment in checked


def test_good_tables_validate_and_print_back(ssd_model: Path, video: Path, tmp_path: Path) -> None:
    tables = {
        **_base(ssd_model, video, tmp_path),
        "zones": {"drive": {"coordinates": [[0, 100], [320, 100], [320, 240], [0, 240]], "labels": ["cat"]}},
        "objects": {"mask": [SQUARE], "filters": {"cat": {"min_score": 0.6, "max_area": 0.5}}},
    }
    config = tmp_path / "edgekit.toml"
    config.write_text(dump_toml(tables))
    runner = CliRunner()
    assert runner.invoke(cli, ["run", "-c", str(config), "--validate-config"]).exit_code == 0
    printed = runner.invoke(cli, ["run", "-c", str(config), "--print-config"]).output
    again = tmp_path / "again.toml"
    again.write_text(printed)
    assert runner.invoke(cli, ["run", "-c", str(again), "--validate-config"]).exit_code == 0
    assert "[zones.drive]" in printed and "[objects.filters.cat]" in printed


def test_no_tracking_flag_leaves_records_without_track_ids(ssd_model: Path, video: Path, tmp_path: Path) -> None:
    args = ["run", "--model", str(ssd_model), "--source", str(video), "--frames", "5", "--stats-interval", "0"]
    on = CliRunner().invoke(cli, [*args, "--threshold", "0.0"])
    off = CliRunner().invoke(cli, [*args, "--no-tracking"])
    assert on.exit_code == 0 and off.exit_code == 0
    results_on = [r for r in map(json.loads, on.output.splitlines()) if r["type"] == "result"]
    results_off = [json.loads(line) for line in off.output.splitlines()]
    assert all("track_id" in d for r in results_on for d in r["detections"]) and results_on[0]["detections"]
    assert all(r["type"] == "result" for r in results_off)
    assert not any("track_id" in d for r in results_off for d in r["detections"])
