"""The conversion report: what the model costs and what quantization changed, as JSON and as a printed table."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENT = 0.5  # float top-1 probability above which a prediction counts as confident
MIN_JUDGE = 30  # below this many images a rate is printed with "too few images to judge"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the rate ``k / n`` (95 % for z = 1.96); (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> str:
    """``k/n = x% (95% CI a-b%)``, or a plain statement when there is nothing or too little to judge."""
    if n <= 0:
        return "n/a (no images)"
    lo, hi = wilson(k, n)
    text = f"{k}/{n} = {100 * k / n:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"
    return text + (": too few images to judge" if n < MIN_JUDGE else "")


@dataclass(frozen=True)
class Fidelity:
    """How the int8 model's outputs compare with the float model's on the same images."""

    images: int
    top1_agreement: float
    confident_images: int
    confident_agreement: float | None
    top5_containment: float
    mean_abs_dp: float
    max_abs_dp: float
    float_accuracy: float | None = None
    int8_accuracy: float | None = None
    labelled_images: int = 0


def fidelity(
    float_probs: np.ndarray,
    int8_probs: np.ndarray,
    truth: np.ndarray | None = None,
) -> Fidelity:
    """Compare two (N, classes) probability arrays.

    Args:
        float_probs: the float model's outputs (the reference).
        int8_probs: the int8 model's dequantized outputs.
        truth: optional class index per image (-1 where unknown) for accuracies.

    Returns:
        Agreement of top-1 classes (all images, and those where the float model is confident), whether the
        float top-1 class is among the int8 top-5, mean and max absolute probability difference, accuracies.
    """
    a = float_probs.argmax(axis=1)
    b = int8_probs.argmax(axis=1)
    same = a == b
    confident = float_probs.max(axis=1) > CONFIDENT
    k = min(5, int8_probs.shape[1])
    top5 = np.argpartition(-int8_probs, k - 1, axis=1)[:, :k]
    contained = (top5 == a[:, None]).any(axis=1)
    diff = np.abs(float_probs - int8_probs)
    float_acc = int8_acc = None
    labelled = 0
    if truth is not None:
        known = truth >= 0
        labelled = int(known.sum())
        if labelled:
            float_acc = float((a[known] == truth[known]).mean())
            int8_acc = float((b[known] == truth[known]).mean())
    return Fidelity(
        images=len(a),
        top1_agreement=float(same.mean()),
        confident_images=int(confident.sum()),
        confident_agreement=float(same[confident].mean()) if confident.any() else None,
        top5_containment=float(contained.mean()),
        mean_abs_dp=float(diff.mean()),
        max_abs_dp=float(diff.max()),
        float_accuracy=float_acc,
        int8_accuracy=int8_acc,
        labelled_images=labelled,
    )


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def rows(report: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The report as titled sections of (name, value) text rows, shared by the rich and plain renderings."""
    sections: list[tuple[str, list[tuple[str, str]]]] = []
    m = report["model"]
    sections.append(
        (
            "Model",
            [
                ("source", m["source"]),
                ("input", f"{m['input']} uint8 RGB ({m['preprocess']})"),
                ("parameters", f"{m['parameters']:,}" if m.get("parameters") is not None else "n/a"),
                ("multiply-adds", f"{m['macs'] / 1e6:,.1f} M" if m.get("macs") is not None else "n/a"),
                ("classes", str(m["classes"])),
            ],
        )
    )
    s = report["size"]
    ops = report.get("ops", {})
    sections.append(
        (
            "TFLite",
            [
                ("float32 size", _fmt_bytes(s["float_bytes"])),
                ("int8 size", f"{_fmt_bytes(s['int8_bytes'])} ({s['ratio']:.2f}x float)"),
                ("input / output", f"{report['io']['input']} / {report['io']['output']}"),
                ("ops", ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))),
            ],
        )
    )
    c = report["calibration"]
    cal_text = f"{c['images']} images from {c['source']}"
    if c.get("augmented"):
        cal_text += f" ({c['augmented']} augmented crops/flips)"
    if c.get("skipped"):
        cal_text += f", unreadable files skipped: {c['skipped']}"
    f = report["fidelity"]
    e = report["eval"]
    fid_rows = [
        ("calibration", cal_text),
        ("evaluation", f"{f['images']} images from {e['source']}"),
        ("top-1 agreement", rate(round(f["top1_agreement"] * f["images"]), f["images"])),
        (
            f"top-1 agreement, float p>{CONFIDENT:g}",
            rate(round((f["confident_agreement"] or 0) * f["confident_images"]), f["confident_images"]),
        ),
        ("top-5 containment", rate(round(f["top5_containment"] * f["images"]), f["images"])),
        ("mean |Δp|", f"{f['mean_abs_dp']:.5f} (max {f['max_abs_dp']:.3f})"),
    ]
    if f.get("float_accuracy") is not None:
        fid_rows.append(
            (
                "accuracy float / int8",
                f"{_pct(f['float_accuracy'])} / {_pct(f['int8_accuracy'])} on {f['labelled_images']} labelled"
                + (": too few images to judge" if f["labelled_images"] < MIN_JUDGE else ""),
            )
        )
    fid_rows.append(("recipe", ", ".join(report.get("recipe", [])) or "textbook"))
    sections.append(("Fidelity (int8 vs float)", fid_rows))
    for title, content in report.get("sections", {}).items():
        sections.append((title, [(str(k), _text(v)) for k, v in content.items()]))
    t = report["timing"]
    sections.append(
        (
            "Run",
            [
                ("wall time", f"{t['wall_s']:.1f} s"),
                ("peak memory", f"{t['peak_rss_mb']:.0f} MB"),
                ("output", report["output"]),
            ]
            + [("note", n) for n in report.get("notes", [])],
        )
    )
    return sections


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {_text(x)}" for k, x in v.items())
    return str(v)


def to_json(report: Mapping[str, Any]) -> str:
    """The report as pretty JSON (what ``--json`` prints and ``report.json`` holds)."""
    return json.dumps(report, indent=2) + "\n"


def to_text(report: Mapping[str, Any]) -> str:
    """Plain-text rendering, for logs and terminals without rich."""
    lines = []
    for title, items in rows(report):
        lines.append(title)
        width = max(len(k) for k, _ in items)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in items)
    return "\n".join(lines) + "\n"


def to_rich(report: Mapping[str, Any]) -> Any:
    """A rich Table of the report (the CLI prints it when rich is installed)."""
    from rich.table import Table

    table = Table(title="edgekit convert", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for i, (title, items) in enumerate(rows(report)):
        table.add_row(f"[underline]{title}[/]", "", end_section=False)
        for k, v in items:
            table.add_row(k, v, end_section=False)
        if i < len(rows(report)) - 1:
            table.add_section()
    return table
