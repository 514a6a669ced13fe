"""``edgekit sweep run``: time every variant of a sweep bundle with the real interpreter on this device."""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.device.runtime import default_threads, make_interpreter, parse_device, runtime_name
from edgekit.errors import InputError, ModelError
from edgekit.model.sweep import RESULTS_FORMAT, VERSION, read_bundle, write_json_atomic

logger = logging.getLogger(__name__)

Tick = Callable[[int], None]
ProgressFactory = Callable[[str, int], AbstractContextManager[Tick]]
# The median's 95% confidence half-width is ~1.57 IQR / sqrt(n) (McGill, Tukey & Larsen 1978, the notch of a
# box plot); timing stops once it is within REL_TOL of the median.
NOTCH = 1.57
REL_TOL = 0.02


@dataclass(frozen=True)
class RunOptions:
    """How to time: CPU threads 1..max_threads, optionally an Edge TPU, and the stopping rule."""

    max_threads: int = 0  # 0: every core this process may use
    edgetpu: str | None = None  # an Edge TPU device string, or None for CPU only
    warmup: int = 5
    min_runs: int = 10
    max_runs: int = 300
    max_seconds: float = 3.0  # per variant and target, once min_runs are done

    def check(self) -> None:
        """Raises InputError on a bad count or a device string that is not an Edge TPU."""
        if self.max_threads < 0 or self.warmup < 0 or self.min_runs < 3 or self.max_runs < self.min_runs:
            raise InputError(
                f"--threads {self.max_threads} --warmup {self.warmup} --min-runs {self.min_runs} --max-runs "
                f"{self.max_runs}: need threads >= 0, warmup >= 0, min-runs >= 3 and max-runs >= min-runs"
            )
        if self.max_seconds <= 0:
            raise InputError(f"--max-seconds {self.max_seconds:g}: must be positive")
        if self.edgetpu is not None and not parse_device(self.edgetpu).is_edgetpu:
            raise InputError(
                f"--edgetpu {self.edgetpu!r}: give an Edge TPU device string (edgetpu, edgetpu:usb:0, ...)"
            )


def time_interpreter(interpreter: Any, options: RunOptions) -> dict[str, Any]:
    """Median and spread of ``invoke()`` in ms on one random uint8 input, until the median is stable.

    Returns:
        ``runs``, ``median_ms``, ``p10_ms``, ``p90_ms``, ``iqr_ms``, ``ci95_ms`` (the median's half-width) and
        ``stable`` (the half-width reached `REL_TOL` of the median before ``max_runs``/``max_seconds``).
    """
    detail = interpreter.get_input_details()[0]
    info = np.iinfo(detail["dtype"])
    rng = np.random.default_rng(0)
    interpreter.set_tensor(
        detail["index"], rng.integers(info.min, info.max + 1, detail["shape"], dtype=detail["dtype"])
    )
    for _ in range(options.warmup):
        interpreter.invoke()
    times: list[float] = []
    started = time.perf_counter()
    stable = False
    while len(times) < options.max_runs:
        t0 = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) >= options.min_runs:
            q1, med, q3 = np.percentile(times, (25, 50, 75))
            if NOTCH * (q3 - q1) / math.sqrt(len(times)) <= REL_TOL * med:
                stable = True
                break
            if time.perf_counter() - started > options.max_seconds:
                break
    arr = np.asarray(times)
    q1, med, q3 = np.percentile(arr, (25, 50, 75))
    p10, p90 = np.percentile(arr, (10, 90))
    return {
        "runs": int(arr.size),
        "median_ms": float(med),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "iqr_ms": float(q3 - q1),
        "ci95_ms": float(NOTCH * (q3 - q1) / math.sqrt(arr.size)),
        "stable": stable,
    }


def run_bundle(bundle: str | Path, options: RunOptions, progress: ProgressFactory | None = None) -> dict[str, Any]:
    """Time every variant on CPU threads 1..N (and the Edge TPU when asked for).

    Args:
        bundle: the folder written by ``edgekit sweep build``.
        options: threads, Edge TPU, stopping rule.
        progress: factory of progress bars ``(label, total) -> context manager yielding tick(n)``.

    Returns:
        The results document (`edgekit.model.sweep.RESULTS_FORMAT`).

    Raises:
        InputError: bad bundle or options.
        ModelError: the Edge TPU was asked for but the bundle has no compiled models.
        DeviceError: the Edge TPU (or the runtime) is missing; raised before anything is timed.
    """
    options.check()
    root = Path(bundle)
    data = read_bundle(root)
    threads = options.max_threads or default_threads()
    targets: list[tuple[str, str, int]] = [(f"cpu:{t}", "cpu", t) for t in range(1, threads + 1)]
    if options.edgetpu is not None:
        missing = [v["name"] for v in data["variants"] if not v.get("edgetpu_model")]
        if missing:
            raise ModelError(
                f"{root}: no Edge TPU model for {', '.join(missing)}; rebuild the bundle with edgetpu_compiler on "
                "PATH (edgekit sweep build), or run without --edgetpu"
            )
        # Refuse an absent Edge TPU now, with the factory's own message, rather than after the CPU timings.
        make_interpreter(root / data["variants"][0]["edgetpu_model"], options.edgetpu, 1, probe=False)
        targets.append((str(parse_device(options.edgetpu)), options.edgetpu, 1))
    variants = []
    total = len(data["variants"]) * len(targets)
    bar = progress("timing variants", total) if progress else contextlib.nullcontext(lambda _n: None)
    with bar as tick:
        for v in data["variants"]:
            timings = []
            for i, (label, device, n) in enumerate(targets):
                model = root / (v["edgetpu_model"] if device != "cpu" else v["model"])
                # The forked probe guards against a model that crashes the runtime; once per file is enough.
                interpreter = make_interpreter(model, device, n, probe=i == 0 or device != "cpu")
                timing = time_interpreter(interpreter, options)
                del interpreter
                timings.append({"target": label, "device": device, "threads": n, **timing})
                logger.info("%s on %s: %.2f ms median", v["name"], label, timing["median_ms"])
                tick(1)
            variants.append({**v, "timings": timings})
    return {
        "format": RESULTS_FORMAT,
        "version": VERSION,
        "edgekit": __version__,
        "bundle": str(root),
        "weights": data.get("weights", ""),
        "runtime": runtime_name(),
        "host": {"machine": platform.machine(), "node": platform.node(), "cores": default_threads()},
        "stopping_rule": f"warm-up {options.warmup}, then >= {options.min_runs} runs until the median's 95% "
        f"half-width <= {REL_TOL:.0%} of it, at most {options.max_runs} runs or {options.max_seconds:g} s",
        "variants": variants,
    }


def check_results_path(out: str | Path) -> Path:
    """Raises InputError when ``out`` cannot take the results file (checked before minutes of timing)."""
    path = Path(out)
    if path.is_dir():
        raise InputError(f"--out {path}: is a folder; give a file name such as results.json")
    if not path.parent.is_dir():
        raise InputError(f"--out {path}: folder {path.parent} does not exist")
    return path


def write_results(results: dict[str, Any], out: str | Path) -> Path:
    """Write the results JSON atomically (temporary name, then rename)."""
    path = check_results_path(out)
    write_json_atomic(path, results)
    return path
