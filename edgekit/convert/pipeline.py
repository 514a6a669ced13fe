"""`edgekit convert` for classifiers: load, bake preprocessing, calibrate, quantize, measure, write atomically."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekit import __version__
from edgekit.convert import calibration, report
from edgekit.errors import InputError, ModelError, QualityGateError
from edgekit.model.labels import labels_for_outputs
from edgekit.model.manifest import (
    FORMAT,
    MANIFEST_NAME,
    Downscale,
    InputSpec,
    Manifest,
    OutputSpec,
    Preprocess,
    Quantization,
    ResizePolicy,
)

logger = logging.getLogger(__name__)

Recipe = Literal["edgekit", "textbook"]
Tick = Callable[[int], None]
ProgressFactory = Callable[[str, int], AbstractContextManager[Tick]]
# A hook that adds report sections or output files (e.g. the Edge TPU compile step): gets the finished int8
# model, the temp output folder and the report so far; returns {section title: {key: value}}.
Extension = Callable[[bytes, Path, dict[str, Any]], dict[str, dict[str, Any]]]


@contextlib.contextmanager
def _no_progress(_label: str, _total: int) -> Iterator[Tick]:
    yield lambda _n: None


@dataclass(frozen=True)
class ConvertOptions:
    """Everything `edgekit convert` was asked to do (the CLI fills this in, nothing else reads argv)."""

    model: str
    calib: str
    out: str = "edgekit-model"
    alpha: float | None = None
    input_size: int | None = None
    weights: str | None = None
    num_calib: int = 300
    eval: str | None = None
    io: Literal["uint8", "int8"] = "uint8"
    preprocess: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: ResizePolicy | None = None
    crop_fraction: float | None = None
    downscale: Downscale = "area"
    labels: str | None = None
    min_agreement: float | None = None
    force: bool = False
    recipe: Recipe = "edgekit"
    seed: int = 0
    extensions: tuple[Extension, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ConvertResult:
    """Where the model went and the report written beside it."""

    out: Path
    report: dict[str, Any]
    gate_failure: str | None = None

    def enforce(self) -> None:
        """Raise the quality-gate failure, if any (after the caller has shown the report).

        Raises:
            QualityGateError: top-1 agreement was below ``--min-agreement``.
        """
        if self.gate_failure:
            raise QualityGateError(self.gate_failure)


def check_out(out: Path, force: bool) -> None:
    """Refuse to replace a folder that edgekit did not write, unless forced.

    Raises:
        InputError: ``out`` is a file, or a non-empty folder without an edgekit manifest (and not ``force``).
    """
    if not out.exists():
        if not out.parent.exists():
            raise InputError(f"--out {out}: the parent folder {out.parent} does not exist")
        return
    if not out.is_dir():
        raise InputError(f"--out {out}: exists and is a file; choose another --out")
    if force or not any(out.iterdir()):
        return
    manifest = out / MANIFEST_NAME
    try:
        import json

        ours = json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise InputError(
            f"--out {out}: exists and is not an edgekit model folder; choose another --out or pass --force"
        )


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux; children (none here) are not counted.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def convert_classifier(options: ConvertOptions, progress: ProgressFactory | None = None) -> ConvertResult:
    """Convert a classifier to full-int8 TFLite, measure it against the float model, write the model folder.

    Args:
        options: what to convert and how.
        progress: factory of progress bars ``(label, total) -> context manager yielding tick(n)``.

    Returns:
        The output folder and the report (also written as ``report.json``).

    Raises:
        InputError, ModelError, MissingExtra: bad input (nothing is written).
        A missed ``min_agreement`` is not raised here: the result carries it, ``result.enforce()`` raises it.
    """
    started = time.monotonic()
    progress = progress or _no_progress
    out = Path(options.out)
    check_out(out, options.force)
    if options.num_calib < calibration.MIN_IMAGES:
        raise InputError(f"--num-calib {options.num_calib}: at least {calibration.MIN_IMAGES} images are needed")
    if options.min_agreement is not None and not 0 <= options.min_agreement <= 1:
        raise InputError(f"--min-agreement {options.min_agreement:g}: must be between 0 and 1")
    # Cheap checks on the data first: a typo in --calib should not cost a TensorFlow import.
    calibration.read_sources_check(options.calib, "--calib")
    if options.eval is not None:
        calibration.read_sources_check(options.eval, "--eval")

    from edgekit.convert import quantize, source
    from edgekit.convert.tfl import Runner, import_tf

    tf = import_tf()
    loaded = source.load_model(options.model, options.alpha, options.input_size, options.weights)
    pre, notes = source.resolve_preprocess(
        loaded, options.preprocess, options.mean, options.std, options.resize, options.crop_fraction, options.downscale
    )
    notes = [*loaded.notes, *notes]
    classes = int(loaded.model.outputs[0].shape[-1])
    labels = labels_for_outputs(options.labels, "classify", classes, options.model) if options.labels else loaded.labels
    if labels is not None and len(labels) != classes:
        raise ModelError(f"{options.model}: {len(labels)} labels for {classes} outputs")

    with progress("calibration images", options.num_calib) as tick:
        calib = calibration.load_calibration(options.calib, loaded.size, pre, options.num_calib, options.seed, tick)
    if options.eval is not None:
        with progress("evaluation images", 0) as tick:
            evalset = calibration.load_eval(options.eval, loaded.size, pre, progress=tick)
        eval_source = str(options.eval)
    else:
        calib, evalset, note = calibration.split_holdout(calib, seed=options.seed)
        notes.append(note)
        eval_source = f"{options.calib} (held out)"
    if calib.skipped:
        notes.append(f"unreadable files in --calib skipped: {len(calib.skipped)}")

    params = macs = None
    try:
        from edgekit.convert.zoo import count_macs

        params, macs = count_macs(loaded.model)
    except Exception:  # MACs are information, not a reason to fail (e.g. a wrapped SavedModel has no layers)
        logger.debug("could not count MACs", exc_info=True)

    pixel_model = quantize.bake_preprocess(loaded.model, pre.mean, pre.std)
    float_bytes = quantize.float_tflite(pixel_model)
    search_section: dict[str, Any] = {}
    if options.recipe == "textbook":
        with progress("calibrating", len(calib)) as tick:
            int8_bytes, recipe_steps = quantize.quantize_classifier(
                loaded.model, pre.mean, pre.std, calib.images, options.io, options.recipe, tick
            )
    else:
        with progress("calibrating", len(calib)) as tick:
            search = quantize.search_recipe(
                loaded.model, pre.mean, pre.std, calib.images, options.io, tick, origins=calib.origins
            )
        int8_bytes, recipe_steps = search.model, search.steps_text()
        search_section = {"Recipe search (calibration images, out of fold)": search.section()}

    float_runner, int8_runner = Runner(float_bytes), Runner(int8_bytes)
    with progress("evaluating", 2 * len(evalset)) as tick:
        pf = float_runner(evalset.images, tick)
        pq = int8_runner(evalset.images, tick)
    truth, label_note = _truth(evalset, labels)
    if label_note:
        notes.append(label_note)
    fid = report.fidelity(pf, pq, truth)

    from edgekit.model.tflite import op_histogram, parse_model

    in_q, out_q = int8_runner.input["quantization"], int8_runner.output["quantization"]
    in_dtype, out_dtype = np.dtype(int8_runner.input["dtype"]).name, np.dtype(int8_runner.output["dtype"]).name
    manifest = Manifest(
        task="classify",
        input=InputSpec(
            height=loaded.size[0],
            width=loaded.size[1],
            dtype=in_dtype,
            quantization=Quantization(float(in_q[0]), int(in_q[1])),
        ),
        preprocess=Preprocess(pre.policy, pre.crop_fraction, pre.mean, pre.std, baked=True, downscale=pre.downscale),
        outputs=(
            OutputSpec(
                role="scores",
                shape=tuple(int(d) for d in int8_runner.output["shape"]),
                dtype=out_dtype,
                quantization=Quantization(float(out_q[0]), int(out_q[1])),
            ),
        ),
        labels="labels.txt",
        num_classes=classes,
        source=loaded.source,
        converter={
            "edgekit": __version__,
            "tensorflow": str(tf.__version__),
            "recipe": options.recipe,
            "steps": ", ".join(recipe_steps),
        },
    )
    body: dict[str, Any] = {
        "model": {
            "source": loaded.source.name,
            "arch": loaded.arch,
            "input": f"{loaded.size[0]}x{loaded.size[1]}",
            "preprocess": f"{pre.policy} {pre.crop_fraction:g} ({pre.downscale} downscale), mean "
            f"{_triple(pre.mean)}, std {_triple(pre.std)} baked in",
            "parameters": params,
            "macs": macs,
            "classes": classes,
        },
        "size": {
            "float_bytes": len(float_bytes),
            "int8_bytes": len(int8_bytes),
            "ratio": len(int8_bytes) / len(float_bytes),
        },
        "io": {
            "input": f"{in_dtype} scale {in_q[0]:.6g} zero {in_q[1]}",
            "output": f"{out_dtype} scale {out_q[0]:.6g} zero {out_q[1]}",
        },
        "ops": op_histogram(parse_model(int8_bytes, "model.tflite"), subgraph=None),
        "calibration": {
            "source": str(options.calib),
            "kind": calib.kind,
            "images": len(calib),
            "augmented": calib.augmented,
            "skipped": len(calib.skipped),
        },
        "eval": {"source": eval_source, "images": len(evalset), "held_out": options.eval is None},
        "fidelity": fid.__dict__,
        "recipe": recipe_steps,
        "sections": dict(search_section),
        "notes": notes,
        "output": str(out),
        "timing": {},
    }

    parent = out.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        (tmp / "model.tflite").write_bytes(int8_bytes)
        (tmp / "labels.txt").write_text(
            "\n".join(labels if labels is not None else [str(i) for i in range(classes)]) + "\n", encoding="utf-8"
        )
        for extension in options.extensions:
            body["sections"].update(extension(int8_bytes, tmp, body))
        if (tmp / "model_edgetpu.tflite").is_file():  # written by the Edge TPU extension
            manifest = replace(manifest, edgetpu_model="model_edgetpu.tflite")
        manifest_path = tmp / MANIFEST_NAME
        manifest_path.write_text(manifest.to_json(), encoding="utf-8")
        body["timing"] = {"wall_s": time.monotonic() - started, "peak_rss_mb": _peak_rss_mb()}
        (tmp / "report.json").write_text(report.to_json(body), encoding="utf-8")
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    gate = None
    if options.min_agreement is not None and fid.top1_agreement < options.min_agreement:
        gate = (
            f"int8 top-1 agreement {fid.top1_agreement:.3f} is below --min-agreement {options.min_agreement:g} "
            f"(model written to {out}; see report.json)"
        )
    return ConvertResult(out, body, gate)


def _triple(v: tuple[float, ...]) -> str:
    return "/".join(f"{x:.4g}" for x in v)


def _truth(evalset: calibration.ImageSet, labels: tuple[str, ...] | None) -> tuple[np.ndarray | None, str]:
    """Class index per eval image from its sub-folder name, when the names match the model's labels."""
    if evalset.labels is None:
        return None, ""
    if labels is None:
        return None, "--eval has class folders but the model has no labels: pass --labels for accuracies"
    index = {name.lower(): i for i, name in enumerate(labels)}
    truth = np.array([index.get(name.lower(), -1) for name in evalset.labels])
    unknown = sorted({n for n in evalset.labels if n.lower() not in index})
    note = f"--eval folders not among the labels (ignored for accuracy): {', '.join(unknown[:5])}" if unknown else ""
    return truth, note


def swap_in(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an old edgekit output is replaced only once the new one is whole."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
