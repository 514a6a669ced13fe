"""The width x resolution sweep shared by both halves: bundle and results formats, published accuracy, the report.

``edgekit sweep build`` (convert/) writes a bundle folder with ``sweep.json``; ``edgekit sweep run`` (device/)
reads it and writes a results JSON; ``edgekit sweep report`` turns results into a markdown table and an SVG.
Nothing here imports TensorFlow or the TFLite runtime.

The picture is a hand-written SVG rather than matplotlib: the report must run on a Pi with only the device extra,
and a scatter with one polyline and one line is a few dozen lines of XML that a test can read back element by
element (``xml.etree``), which a raster image cannot offer.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.model.manifest import write_atomic

BUNDLE_NAME = "sweep.json"
BUNDLE_FORMAT = "edgekit-sweep-bundle"
RESULTS_FORMAT = "edgekit-sweep-results"
VERSION = 1
ARCHS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
WEIGHTS_NOTE = (
    "seeded random weights and synthetic (uniform noise) calibration: these models are for timing only; "
    "an int8 graph's latency does not depend on its weight values"
)

# --- published ImageNet top-1 ------------------------------------------------------------------------------
# Never edit these by hand without a source: each figure is copied from the table named in SOURCES.
SOURCES = {
    "slim_v1": "TF-slim MobileNet_v1 checkpoints table (tensorflow/models research/slim/nets/mobilenet_v1.md, "
    "2018_02_22 float models; the full width x resolution grid of Howard et al. 2017, arXiv:1704.04861 Tables 6-7)",
    "slim_v2": "TF-slim MobileNetV2 checkpoints table (tensorflow/models research/slim/nets/mobilenet/README.md; "
    "Sandler et al. 2018, arXiv:1801.04381)",
    "slim_v3": "TF-slim MobileNetV3 checkpoints table, float, 224 px (tensorflow/models research/slim/nets/"
    "mobilenet/README.md; Howard et al. 2019, arXiv:1905.02244 Table 3)",
}
_V1 = {  # (alpha, size): top-1 %
    (1.0, 224): 70.9, (1.0, 192): 70.0, (1.0, 160): 68.0, (1.0, 128): 65.2,
    (0.75, 224): 68.4, (0.75, 192): 67.2, (0.75, 160): 65.3, (0.75, 128): 62.1,
    (0.5, 224): 63.3, (0.5, 192): 61.7, (0.5, 160): 59.1, (0.5, 128): 56.3,
    (0.25, 224): 49.8, (0.25, 192): 47.7, (0.25, 160): 45.5, (0.25, 128): 41.5,
}  # fmt: skip
_V2 = {
    (1.4, 224): 75.0, (1.3, 224): 74.4,
    (1.0, 224): 71.8, (1.0, 192): 70.7, (1.0, 160): 68.8, (1.0, 128): 65.3, (1.0, 96): 60.3,
    (0.75, 224): 69.8, (0.75, 192): 68.7, (0.75, 160): 66.4, (0.75, 128): 63.2, (0.75, 96): 58.8,
    (0.5, 224): 65.4, (0.5, 192): 63.9, (0.5, 160): 61.0, (0.5, 128): 57.7, (0.5, 96): 51.2,
    (0.35, 224): 60.3, (0.35, 192): 58.2, (0.35, 160): 55.7, (0.35, 128): 50.8, (0.35, 96): 45.5,
}  # fmt: skip
_V3_LARGE = {(1.0, 224): 75.2, (0.75, 224): 73.3}
_V3_SMALL = {(1.0, 224): 67.5, (0.75, 224): 65.4}
_PUBLISHED = {
    "mobilenet_v1": (_V1, "slim_v1"),
    "mobilenet_v2": (_V2, "slim_v2"),
    "mobilenet_v3_large": (_V3_LARGE, "slim_v3"),
    "mobilenet_v3_small": (_V3_SMALL, "slim_v3"),
}


def published_top1(arch: str, alpha: float, size: int) -> tuple[float, str] | None:
    """The published ImageNet top-1 (%) of a variant and its source key in `SOURCES`, or None when unpublished."""
    table, source = _PUBLISHED.get(arch, ({}, ""))
    for (a, s), top1 in table.items():
        if s == size and math.isclose(a, alpha, abs_tol=1e-6):
            return top1, source
    return None


def variant_name(arch: str, alpha: float, size: int) -> str:
    """``mobilenet_v2_0.35_96``: the TF-slim naming, used as the file stem and the key of accuracy tables."""
    return f"{arch}_{alpha:g}_{size}"


# --- bundle and results ------------------------------------------------------------------------------------


def _read_json(path: Path, fmt: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable as JSON ({exc}); {what}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise InputError(
            f"{path}: not an {fmt} file (format {data.get('format') if isinstance(data, dict) else None!r}); {what}"
        )
    if int(data.get("version", 0)) > VERSION:
        raise InputError(
            f"{path}: {fmt} version {data.get('version')} is newer than this edgekit reads ({VERSION}); upgrade edgekit"
        )
    if not isinstance(data.get("variants"), list) or not data["variants"]:
        raise InputError(f"{path}: lists no variants; {what}")
    return data


def read_bundle(bundle: str | Path) -> dict[str, Any]:
    """The bundle's ``sweep.json``, checked: every variant's model file exists inside the bundle.

    Raises:
        InputError: not a bundle, or a model file is missing.
    """
    root = Path(bundle)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the folder written by edgekit sweep build")
    data = _read_json(root / BUNDLE_NAME, BUNDLE_FORMAT, "give the folder written by edgekit sweep build")
    for v in data["variants"]:
        for key in ("model", "edgetpu_model"):
            if v.get(key) and not (root / v[key]).is_file():
                raise InputError(f"{root / v[key]}: listed in {BUNDLE_NAME} but missing; copy the whole bundle folder")
    return data


def read_results(path: str | Path) -> dict[str, Any]:
    """A results JSON written by ``edgekit sweep run``.

    Raises:
        InputError: not such a file, or a variant has no timings.
    """
    data = _read_json(Path(path), RESULTS_FORMAT, "give the file written by edgekit sweep run")
    for v in data["variants"]:
        if not v.get("timings"):
            raise InputError(f"{path}: variant {v.get('name')!r} has no timings; re-run edgekit sweep run")
    return data


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON under a temporary name, then rename it into place."""
    write_atomic(path, json.dumps(data, indent=2) + "\n")


# --- report ------------------------------------------------------------------------------------------------

_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*$")


def parse_budget(text: str) -> float:
    """``50ms``, ``50`` (ms) or ``0.05s`` -> milliseconds.

    Raises:
        InputError: not a positive duration.
    """
    match = _BUDGET.match(text)
    value = float(match.group(1)) * (1000.0 if match.group(2) == "s" else 1.0) if match else 0.0
    if value <= 0:
        raise InputError(f"--budget {text!r}: give a positive latency such as 50ms, 50 or 0.05s")
    return value


def read_accuracy_csv(path: str | Path) -> dict[str, float]:
    """A user's accuracy table: CSV with columns ``name,top1`` (top-1 in %, names as in the bundle).

    Raises:
        InputError: unreadable, wrong header or a value that is not a percentage.
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the accuracy table ({exc})") from None
    if not rows or set(rows[0]) != {"name", "top1"}:
        raise InputError(f"{path}: the accuracy table needs exactly the CSV header 'name,top1' (top-1 in %)")
    table: dict[str, float] = {}
    for i, row in enumerate(rows, start=2):
        try:
            value = float(row["top1"])
        except (TypeError, ValueError):
            value = -1.0
        if not 0.0 <= value <= 100.0:
            raise InputError(f"{path}: line {i}: top1 {row['top1']!r} is not a percentage 0..100")
        table[row["name"].strip()] = value
    return table


@dataclass(frozen=True)
class Row:
    """One variant in the report: its measures, its fastest configuration, its accuracy."""

    name: str
    params: int
    macs: int
    size_bytes: int
    top1: float | None
    top1_source: str  # a SOURCES key, "user", or "" when unpublished
    medians: dict[str, float]  # target -> median ms
    spreads: dict[str, tuple[float, float]]  # target -> (p10, p90) ms
    best_target: str
    best_ms: float
    unstable: frozenset[str] = frozenset()  # targets whose median did not settle within the run limits


@dataclass(frozen=True)
class Fit:
    """Least-squares ``latency_ms = slope * MACs + intercept`` on one target."""

    target: str
    n: int
    slope_ms_per_gmac: float
    intercept_ms: float
    r2: float
    median_rel_error: float


@dataclass(frozen=True)
class Report:
    """What ``edgekit sweep report`` writes and prints."""

    rows: tuple[Row, ...]
    front: tuple[str, ...]  # names on the Pareto front, by latency
    budget_ms: float | None
    pick: Row | None
    fits: tuple[Fit, ...]
    targets: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def pick_line(self) -> str:
        """The recommendation, one line."""
        if self.budget_ms is None:
            return "no --budget given: see the Pareto front in the table"
        if self.pick is None:
            return f"no variant with a known top-1 runs within {self.budget_ms:g} ms on this device"
        p = self.pick
        return (
            f"pick: {p.name} on {p.best_target}: {p.best_ms:.2f} ms (budget {self.budget_ms:g} ms), "
            f"top-1 {p.top1:.1f}% ({'your table' if p.top1_source == 'user' else 'published'})"
        )


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the non-dominated ``(name, latency, accuracy)`` points (lower latency, higher accuracy), by latency."""
    front: list[str] = []
    best = -math.inf
    for name, _lat, acc in sorted(points, key=lambda p: (p[1], -p[2])):
        if acc > best:
            front.append(name)
            best = acc
    return front


def fit_macs(macs: np.ndarray, ms: np.ndarray, target: str) -> Fit | None:
    """The least-squares line of latency on MACs, its R^2 and median relative error; None for fewer than 3 points."""
    if macs.size < 3 or np.ptp(macs) == 0:
        return None
    x = macs / 1e9
    a = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(a, ms, rcond=None)
    pred = slope * x + intercept
    ss_tot = float(np.sum((ms - ms.mean()) ** 2))
    r2 = 1.0 - float(np.sum((ms - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    rel = float(np.median(np.abs(pred - ms) / ms))
    return Fit(target, int(x.size), float(slope), float(intercept), r2, rel)


def build_report(
    results: dict[str, Any], budget_ms: float | None = None, accuracy: dict[str, float] | None = None
) -> Report:
    """Rows, Pareto front, pick and MACs fit from a results file.

    Args:
        results: what `read_results` returned.
        budget_ms: the latency budget; the pick is the most accurate variant whose fastest target meets it.
        accuracy: the user's top-1 table (name -> %); without it the published figures are used.

    Returns:
        The report.
    """
    rows: list[Row] = []
    targets: list[str] = []
    for v in results["variants"]:
        medians = {t["target"]: float(t["median_ms"]) for t in v["timings"]}
        spreads = {t["target"]: (float(t["p10_ms"]), float(t["p90_ms"])) for t in v["timings"]}
        targets.extend(t for t in medians if t not in targets)
        if accuracy is not None:
            top1, source = (accuracy[v["name"]], "user") if v["name"] in accuracy else (None, "")
        else:
            found = published_top1(v["arch"], float(v["alpha"]), int(v["input_size"]))
            top1, source = found if found else (None, "")
        best = min(medians, key=lambda t: medians[t])
        unstable = frozenset(t["target"] for t in v["timings"] if not t.get("stable", True))
        rows.append(
            Row(
                v["name"],
                int(v["params"]),
                int(v["macs"]),
                int(v["size_bytes"]),
                top1,
                source,
                medians,
                spreads,
                best,
                medians[best],
                unstable,
            )
        )
    known = [(r.name, r.best_ms, r.top1) for r in rows if r.top1 is not None]
    front = pareto_front(known)
    pick = None
    if budget_ms is not None:
        fitting = [r for r in rows if r.top1 is not None and r.best_ms <= budget_ms]
        pick = max(fitting, key=lambda r: (r.top1, -r.best_ms), default=None)
    fits = []
    for target in targets:
        pts = [(r.macs, r.medians[target]) for r in rows if target in r.medians]
        fit = fit_macs(np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float), target)
        if fit is not None:
            fits.append(fit)
    notes = [results.get("weights", WEIGHTS_NOTE)]
    if accuracy is None:
        used = sorted({r.top1_source for r in rows if r.top1_source})
        notes.extend(f"top-1 source: {SOURCES[s]}" for s in used)
    missing = [r.name for r in rows if r.top1 is None]
    if missing:
        notes.append(
            f"no {'figure in your table' if accuracy is not None else 'published top-1'} for: {', '.join(missing)}"
        )
    return Report(tuple(rows), tuple(front), budget_ms, pick, tuple(fits), tuple(targets), tuple(notes))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def to_markdown(report: Report, results: dict[str, Any]) -> str:
    """The table (one row per variant, median and p10-p90 per target), the MACs fit and the pick."""
    host = results.get("host", {})
    lines = [
        "# edgekit sweep report",
        "",
        f"Device: {host.get('machine', '?')} ({host.get('cores', '?')} cores), runtime {results.get('runtime', '?')}.",
        "",
        "| variant | params (M) | MACs (M) | size (MB) | top-1 % | "
        + " | ".join(f"{t} median ms (p10-p90)" for t in report.targets)
        + " | front |",
        "|---" * (5 + len(report.targets)) + "|---|",
    ]
    for r in report.rows:
        top1 = f"{r.top1:.1f}" if r.top1 is not None else "n/a (none published)"
        cells = [
            f"{r.medians[t]:.2f}{'*' if t in r.unstable else ''} ({r.spreads[t][0]:.2f}-{r.spreads[t][1]:.2f})"
            if t in r.medians
            else "-"
            for t in report.targets
        ]
        mark = "yes" if r.name in report.front else ""
        lines.append(
            f"| {r.name} | {_mb(r.params)} | {r.macs / 1e6:.0f} | {_mb(r.size_bytes)} | {top1} | "
            f"{' | '.join(cells)} | {mark} |"
        )
    if any(r.unstable for r in report.rows):
        lines += ["", f"\\* the median did not settle ({results.get('stopping_rule', '')}): a busy device; re-run"]
    lines += ["", "## Do MACs predict latency here?", ""]
    if not report.fits:
        lines.append("Too few variants (fewer than 3 distinct MAC counts) for a fit.")
    for f in report.fits:
        lines.append(
            f"- {f.target}: latency = {f.slope_ms_per_gmac:.2f} ms/GMAC x MACs + {f.intercept_ms:.2f} ms over {f.n} "
            f"variants; R^2 = {f.r2:.3f}, median relative error {100 * f.median_rel_error:.1f}%"
        )
    lines += ["", "## Pick", "", report.pick_line(), "", "## Notes", ""]
    lines += [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def to_svg(report: Report, width: int = 760, height: int = 500) -> str:
    """Latency (fastest target per variant) against top-1: points, the Pareto front, the budget line, the pick.

    Variants without a known top-1 sit as hollow squares in a strip under the axis. Every mark carries
    ``class`` and ``data-*`` attributes so the picture can be checked by reading it back.
    """
    # Here, not at the top: xml.sax.saxutils imports urllib.request (http, email, ...), 8 MB of RSS that
    # `edgekit run` would carry for nothing (the CLI imports this module for `edgekit sweep`'s options).
    from xml.sax.saxutils import escape, quoteattr

    left, right, top, bottom = 70, 30, 40, 110
    known = [r for r in report.rows if r.top1 is not None]
    lats = [r.best_ms for r in report.rows] + ([report.budget_ms] if report.budget_ms else [])
    x_max = max(lats) * 1.08
    accs = [r.top1 for r in known if r.top1 is not None] or [0.0, 100.0]
    y_lo, y_hi = math.floor(min(accs) - 2), math.ceil(max(accs) + 2)
    pw, ph = width - left - right, height - top - bottom

    def sx(ms: float) -> float:
        return left + pw * ms / x_max

    def sy(acc: float) -> float:
        return top + ph * (1 - (acc - y_lo) / (y_hi - y_lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Latency vs ImageNet top-1 (fastest target per variant)</text>',
        f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
        f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">median latency (ms)</text>',
        f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" '
        'text-anchor="middle">top-1 (%)</text>',
    ]
    for i in range(6):
        ms = x_max * i / 5
        out.append(f'<text x="{sx(ms):.1f}" y="{top + ph + 16}" text-anchor="middle">{ms:.1f}</text>')
        acc = y_lo + (y_hi - y_lo) * i / 5
        out.append(f'<text x="{left - 6}" y="{sy(acc) + 4:.1f}" text-anchor="end">{acc:.1f}</text>')
    by_name = {r.name: r for r in known}
    if len(report.front) > 1:
        # The front as a staircase: between two front points the best reachable accuracy is the slower one's.
        pts: list[str] = []
        for a, b in zip(report.front, report.front[1:], strict=False):
            ra, rb = by_name[a], by_name[b]
            pts += [f"{sx(ra.best_ms):.2f},{sy(ra.top1 or 0):.2f}", f"{sx(rb.best_ms):.2f},{sy(ra.top1 or 0):.2f}"]
        last = by_name[report.front[-1]]
        pts.append(f"{sx(last.best_ms):.2f},{sy(last.top1 or 0):.2f}")
        out.append(f'<polyline class="front" fill="none" stroke="#d62728" stroke-width="2" points="{" ".join(pts)}"/>')
    if report.budget_ms is not None:
        bx = sx(report.budget_ms)
        out.append(
            f'<line class="budget" data-ms="{report.budget_ms:g}" x1="{bx:.2f}" y1="{top}" x2="{bx:.2f}" '
            f'y2="{top + ph}" stroke="#1f77b4" stroke-dasharray="6,4"/>'
        )
        out.append(f'<text x="{bx + 4:.1f}" y="{top + 12}" fill="#1f77b4">budget {report.budget_ms:g} ms</text>')
    for r in known:
        on_front = r.name in report.front
        cls = "variant front-point" if on_front else "variant"
        out.append(
            f'<circle class="{cls}" data-name={quoteattr(r.name)} data-ms="{r.best_ms:.4f}" data-top1="{r.top1}" '
            f'cx="{sx(r.best_ms):.2f}" cy="{sy(r.top1 or 0):.2f}" r="4" fill="{"#d62728" if on_front else "#555"}"/>'
        )
        out.append(
            f'<text x="{sx(r.best_ms) + 6:.1f}" y="{sy(r.top1 or 0) - 5:.1f}" font-size="9">{escape(r.name)}</text>'
        )
    if report.pick is not None:
        p = report.pick
        out.append(
            f'<circle class="pick" data-name={quoteattr(p.name)} cx="{sx(p.best_ms):.2f}" cy="{sy(p.top1 or 0):.2f}" '
            'r="9" fill="none" stroke="#2ca02c" stroke-width="2"/>'
        )
    strip = top + ph + 58
    unknown = [r for r in report.rows if r.top1 is None]
    if unknown:
        out.append(f'<text x="{left}" y="{strip - 10}">no published top-1:</text>')
    for r in unknown:
        x = sx(r.best_ms)
        out.append(
            f'<rect class="variant no-accuracy" data-name={quoteattr(r.name)} data-ms="{r.best_ms:.4f}" '
            f'x="{x - 4:.2f}" y="{strip - 4}" width="8" height="8" fill="none" stroke="#555"/>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_report(report: Report, results: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``sweep-report.md`` and ``sweep-report.svg`` into ``out_dir`` (each atomically).

    Returns:
        The two paths.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    md, svg = out / "sweep-report.md", out / "sweep-report.svg"
    write_atomic(md, to_markdown(report, results))
    write_atomic(svg, to_svg(report))
    return md, svg
