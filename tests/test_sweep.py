"""edgekit sweep: a real 3 widths x 2 sizes grid built, timed with the real interpreter, and reported."""

from __future__ import annotations

import json
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.model.sweep import published_top1

ALPHAS = ("0.35", "0.5", "0.75")
SIZES = ("96", "128")
SVG = "{http://www.w3.org/2000/svg}"
FAST = ["--warmup", "1", "--min-runs", "3", "--max-runs", "20", "--max-seconds", "0.2", "--threads", "2", "-q"]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "bundle"
    args = ["sweep", "build", "--out", str(out), "-q"]
    for a in ALPHAS:
        args += ["--alpha", a]
    for s in SIZES:
        args += ["--size", s]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def results(bundle: Path) -> Path:
    out = bundle.parent / "results.json"
    result = CliRunner().invoke(cli, ["sweep", "run", str(bundle), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out


def _report(results: Path, out: Path, *extra: str) -> tuple[str, dict[str, Any], ET.Element]:
    result = CliRunner().invoke(cli, ["sweep", "report", str(results), "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(results.read_text()), ET.parse(out / "sweep-report.svg").getroot()


def test_bundle_lists_every_variant_with_its_measures(bundle: Path) -> None:
    data = json.loads((bundle / "sweep.json").read_text())
    names = [v["name"] for v in data["variants"]]
    assert names == [f"mobilenet_v2_{a}_{s}" for a in ALPHAS for s in SIZES]
    assert "random weights" in data["weights"]
    for v in data["variants"]:
        assert (bundle / v["model"]).stat().st_size == v["size_bytes"] > 0
        assert v["preflight"]["ops_total"] > 0
    by = {v["name"]: v for v in data["variants"]}
    # MACs grow with width and with resolution (about quadratically in the side).
    assert by["mobilenet_v2_0.35_96"]["macs"] < by["mobilenet_v2_0.5_96"]["macs"] < by["mobilenet_v2_0.75_96"]["macs"]
    ratio = by["mobilenet_v2_0.75_128"]["macs"] / by["mobilenet_v2_0.75_96"]["macs"]
    assert 1.6 < ratio < (128 / 96) ** 2 * 1.05
    # Parameters depend on width only.
    assert by["mobilenet_v2_0.5_96"]["params"] == by["mobilenet_v2_0.5_128"]["params"]


def test_every_variant_is_timed_on_each_thread_count(bundle: Path, results: Path) -> None:
    data = json.loads(results.read_text())
    assert len(data["variants"]) == len(ALPHAS) * len(SIZES)
    for v in data["variants"]:
        assert [t["target"] for t in v["timings"]] == ["cpu:1", "cpu:2"]
        for t in v["timings"]:
            assert t["runs"] >= 3 and 0 < t["p10_ms"] <= t["median_ms"] <= t["p90_ms"]


def test_report_front_pick_and_picture(results: Path, tmp_path: Path) -> None:
    data = json.loads(results.read_text())
    best = {v["name"]: min(t["median_ms"] for t in v["timings"]) for v in data["variants"]}
    budget = statistics.median(best.values())
    output, _, svg = _report(results, tmp_path, "--budget", f"{budget}ms")

    top1 = {v["name"]: published_top1(v["arch"], v["alpha"], v["input_size"]) for v in data["variants"]}
    assert all(t is not None for t in top1.values())
    acc = {n: t[0] for n, t in top1.items() if t is not None}
    circles = {c.get("data-name"): c for c in svg.iter(f"{SVG}circle") if "variant" in c.get("class", "").split()}
    assert set(circles) == set(best)
    front = {n for n, c in circles.items() if "front-point" in c.get("class", "").split()}

    def dominates(a: str, b: str) -> bool:
        return best[a] <= best[b] and acc[a] >= acc[b] and (best[a] < best[b] or acc[a] > acc[b])

    assert front
    for f in front:
        assert not any(dominates(o, f) for o in best), f"{f} is on the front but dominated"
    for o in set(best) - front:
        assert any(dominates(f, o) for f in front), f"{o} is off the front but not dominated"
    # The front line passes through every front point.
    line = next(svg.iter(f"{SVG}polyline"))
    assert line.get("class") == "front"
    vertices = {tuple(round(float(x), 1) for x in p.split(",")) for p in (line.get("points") or "").split()}
    for f in front:
        assert (round(float(circles[f].get("cx") or 0), 1), round(float(circles[f].get("cy") or 0), 1)) in vertices
    # The budget line separates the points that meet it from those that do not.
    budget_line = next(e for e in svg.iter(f"{SVG}line") if e.get("class") == "budget")
    bx = float(budget_line.get("x1") or 0)
    for name, c in circles.items():
        assert (float(c.get("cx") or 0) <= bx) == (best[name] <= budget)
    # The pick meets the budget and is the most accurate that does; it is printed and ringed.
    under = [n for n in best if best[n] <= budget]
    expected = max(under, key=lambda n: (acc[n], -best[n]))
    assert f"pick: {expected} " in output
    rings = [c for c in svg.iter(f"{SVG}circle") if c.get("class") == "pick"]
    assert [r.get("data-name") for r in rings] == [expected]
    md = (tmp_path / "sweep-report.md").read_text()
    assert all(f"| {n} |" in md for n in best)
    assert "R^2 = " in md and "median relative error" in md


def test_user_accuracy_table_and_a_variant_without_a_figure(results: Path, tmp_path: Path) -> None:
    table = tmp_path / "acc.csv"
    table.write_text("name,top1\nmobilenet_v2_0.35_96,90\nmobilenet_v2_0.5_96,10\n")
    output, _, svg = _report(results, tmp_path / "r", "--accuracy", str(table), "--budget", "10s")
    assert "pick: mobilenet_v2_0.35_96 " in output and "your table" in output
    hollow = {r.get("data-name") for r in svg.iter(f"{SVG}rect") if "no-accuracy" in r.get("class", "")}
    assert hollow == {f"mobilenet_v2_{a}_{s}" for a in ALPHAS for s in SIZES} - {
        "mobilenet_v2_0.35_96",
        "mobilenet_v2_0.5_96",
    }
    assert "n/a" in (tmp_path / "r" / "sweep-report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{results}", "--budget", "fast"], "--budget 'fast': give a positive latency"),
        (["report", "{results}", "--budget", "0ms"], "--budget '0ms': give a positive latency"),
        (["report", "{bundle}/sweep.json"], "not an edgekit-sweep-results file"),
        (["report", "{results}", "--accuracy", "{results}"], "needs exactly the CSV header 'name,top1'"),
        (["run", "{results}"], "not a folder; give the folder written by edgekit sweep build"),
        (["run", "{bundle}", "--edgetpu", "edgetpu"], "no Edge TPU model for mobilenet_v2_0.35_96"),
        (["run", "{bundle}", "--edgetpu", "cpu"], "--edgetpu 'cpu': give an Edge TPU device string"),
        (["run", "{bundle}", "--out", "{bundle}"], "is a folder; give a file name"),
        (["build", "--alpha", "3", "--out", "{bundle}/../x"], "--alpha 3: a width multiplier must be in (0, 2]"),
        (["build", "--size", "8", "--out", "{bundle}/../x"], "--size 8: the input size must be 32..512"),
        (["build", "--out", "{results}"], "exists and is not a sweep bundle"),
    ],
)
def test_bad_input_is_one_line_exit_2(bundle: Path, results: Path, args: list[str], message: str) -> None:
    filled = [a.format(bundle=bundle, results=results) for a in args]
    before = sorted(p.name for p in bundle.parent.iterdir())
    result = CliRunner().invoke(cli, ["sweep", *filled, "-q"] if filled[0] in ("run", "build") else ["sweep", *filled])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert sorted(p.name for p in bundle.parent.iterdir()) == before  # nothing half-written


@pytest.mark.simulated
def test_compiled_variants_and_an_absent_edgetpu(
    stand_in_compiler: Path,
    tmp_path: Path,
) -> None:
    """With (a stand-in) edgetpu_compiler on PATH the bundle carries compiled models; no Edge TPU: a clear refusal."""
    from edgekit.device import edgetpu

    out = tmp_path / "bundle"
    built = CliRunner().invoke(cli, ["sweep", "build", "--out", str(out), "--alpha", "0.35", "--size", "96", "-q"])
    assert built.exit_code == 0, built.output
    (variant,) = json.loads((out / "sweep.json").read_text())["variants"]
    assert variant["edgetpu_model"] == "mobilenet_v2_0.35_96_edgetpu.tflite"
    assert (out / variant["edgetpu_model"]).is_file() and "compiled" in built.output
    if edgetpu._load_library() is not None:
        pytest.skip("libedgetpu is installed here: the refusal needs a machine without it")
    ran = CliRunner().invoke(cli, ["sweep", "run", str(out), "--edgetpu", "edgetpu", "--out", str(tmp_path / "r.json")])
    assert ran.exit_code == 2, ran.output
    assert "--device edgetpu: the Edge TPU runtime libedgetpu.so.1 is not installed" in ran.output
    assert not (tmp_path / "r.json").exists()
