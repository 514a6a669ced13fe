"""The one module that imports the TFLite runtime (ai_edge_litert -> tflite_runtime -> tensorflow.lite).

Everything else on the device side gets interpreters and delegates from here, so the fallback chain, the thread
count, the device-string grammar and the "is it the model or the device?" error wording live in one place.

Device strings (the same grammar as pycoral's ``make_interpreter``, with an explicit ``edgetpu`` prefix)::

    cpu                  the CPU (XNNPACK), the default
    edgetpu              the first Edge TPU found, whatever its bus
    edgetpu:usb          the first USB Edge TPU;    edgetpu:usb:N  the N-th one
    edgetpu:pci          the first PCIe Edge TPU;   edgetpu:pci:N  the N-th one
    usb, usb:N, pci:N    accepted as in pycoral and read as edgetpu:usb..., edgetpu:pci...
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekit.errors import DeviceError, InputError, ModelError
from edgekit.plan import DeviceSpec, parse_device

logger = logging.getLogger(__name__)

# A .tflite is a FlatBuffer whose 4-byte file identifier (bytes 4..8) is "TFL3" (tensorflow/lite/schema).
TFLITE_IDENTIFIER = b"TFL3"
# Smallest header that can hold the root offset, the identifier and a minimal root table.
_MIN_MODEL_BYTES = 16

_RUNTIME_CHAIN = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
_runtime: ModuleType | None = None
_runtime_name = ""


def runtime_module() -> ModuleType:
    """The interpreter module, imported once: LiteRT first, then tflite-runtime, then full TensorFlow.

    Returns:
        A module with ``Interpreter`` and ``load_delegate``.

    Raises:
        MissingExtra: none of the three is importable.
    """
    global _runtime, _runtime_name
    if _runtime is not None:
        return _runtime
    failures = []
    for name in _RUNTIME_CHAIN:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            failures.append(f"{name.split('.')[0]} ({exc})")
            continue
        except Exception as exc:  # tflite_runtime built for numpy 1 raises AttributeError etc. under numpy 2
            failures.append(f"{name.split('.')[0]} (broken: {type(exc).__name__}: {exc})")
            continue
        _runtime, _runtime_name = module, name.split(".")[0]
        if failures:
            logger.info("TFLite runtime: %s (skipped: %s)", _runtime_name, "; ".join(failures))
        return module
    from edgekit.errors import MissingExtra

    raise MissingExtra(
        "a TFLite runtime (ai-edge-litert, tflite-runtime or tensorflow)",
        "device",
        "pip install 'edgekit[device]'  (tried: " + "; ".join(failures) + ")",
    )


def runtime_name() -> str:
    """Which runtime `runtime_module` picked (``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow``)."""
    runtime_module()
    return _runtime_name


# --- device strings ----------------------------------------------------------------------------------------


# The grammar and its parser live in `edgekit.plan` (the run plan parses the device string once); re-exported
# here because this module documents the strings.
__all__ = ["DeviceSpec", "make_interpreter", "parse_device"]


def default_threads() -> int:
    """Threads for the CPU interpreter when the user says 0: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --- model files -------------------------------------------------------------------------------------------


def check_tflite_file(path: str | Path) -> int:
    """Refuse a file that cannot be a TFLite model before any C++ code parses it.

    Args:
        path: the .tflite file.

    Returns:
        Its size in bytes.

    Raises:
        InputError: the file does not exist or cannot be read.
        ModelError: too short, or not a TFLite FlatBuffer (wrong identifier, root offset outside the file).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise InputError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder without edgekit.json; give the .tflite or a converted folder") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read model ({exc.strerror})") from None
    if size < _MIN_MODEL_BYTES:
        raise ModelError(f"{path}: {size} bytes is too short to be a TFLite model; the file is truncated or empty")
    (root,) = struct.unpack("<I", head[:4])
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"{path}: not a TFLite model (no 'TFL3' identifier); give the .tflite written by edgekit convert "
            "or the TFLite converter"
        )
    if root < 8 or root >= size:
        raise ModelError(f"{path}: corrupt TFLite model (root table offset {root} outside the {size}-byte file)")
    return size


def _probe_in_child(path: Path, allocate: bool, meanwhile: Callable[[], object] | None = None) -> None:
    """Load the model in a forked child first, so a model that crashes the C++ runtime cannot take us down.

    The FlatBuffer verifier catches malformed files, but a well-formed file can still describe tensors that the
    kernels mishandle. A fork costs a few milliseconds (the pages are shared) and runs before any worker thread
    exists; if threads already run (a SIGHUP reload) the probe is skipped and the verifier alone protects us.
    While the child loads, allocates and invokes (20-60 ms on a 2-core machine, most of it on the other core),
    the parent runs ``meanwhile``: start-up work it needs next that does not touch the TFLite runtime (imports).
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return
    module = runtime_module()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code
        code = 0
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # its runtime chatter would repeat the parent's
            faulthandler.disable()  # a crash here is reported by the parent, in one line
            interpreter = module.Interpreter(model_path=str(path), num_threads=1)
            if allocate:
                interpreter.allocate_tensors()
                interpreter.invoke()
        except BaseException:
            code = 3  # an ordinary error: the parent loads the model itself and reports it properly
        os._exit(code)
    try:
        if meanwhile is not None:
            meanwhile()
    finally:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        import signal

        name = signal.Signals(os.WTERMSIG(status)).name
        raise ModelError(f"{path}: the TFLite runtime crashed ({name}) loading this model; the file is corrupt")


# --- interpreters ------------------------------------------------------------------------------------------


def load_delegate(library: str, options: dict[str, Any] | None = None) -> Any:
    """Load a TFLite external delegate (``libedgetpu.so.1``, ...) through the selected runtime.

    Args:
        library: shared library name or path.
        options: delegate options (for libedgetpu: ``{"device": "usb:0"}``).

    Returns:
        The delegate object to pass to the interpreter.

    Raises:
        DeviceError: the library is missing or the delegate refused to start (device absent or busy).
    """
    module = runtime_module()
    try:
        return module.load_delegate(library, options or {})
    except (ValueError, OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        raise DeviceError(f"cannot load delegate {library} with {options or {}}: {detail}") from None


def make_interpreter(
    model_path: str | Path,
    device: DeviceSpec | str = "cpu",
    threads: int = 0,
    *,
    probe: bool = True,
    fallback_cpu: bool = False,
    cpu_model: str | Path | None = None,
    on_fallback: Callable[[str], None] | None = None,
    meanwhile: Callable[[], object] | None = None,
) -> Any:
    """Create an interpreter with tensors allocated, on the CPU or an Edge TPU.

    Args:
        model_path: the .tflite file (for an Edge TPU, the ``*_edgetpu.tflite`` compiled one).
        device: the plan's device (or a device string, module docstring).
        threads: CPU threads for XNNPACK; 0 means every core available to this process.
        probe: load the model once in a forked child first (see `_probe_in_child`).
        fallback_cpu: for an Edge TPU device, run on the CPU when the Edge TPU cannot be opened.
        cpu_model: what the CPU fallback runs when ``model_path`` is compiled for the Edge TPU (the manifest's
            plain int8 model); a compiled model cannot run on the CPU.
        on_fallback: called with the reason when the CPU fallback is taken (for the stats record).
        meanwhile: run while the probe's child loads the model (see `_probe_in_child`); not run without a probe.

    Returns:
        A ready interpreter (``allocate_tensors`` done).

    Raises:
        InputError: bad device string or missing file.
        ModelError: the file is not a (loadable) TFLite model, or does not suit the device (float on Edge TPU).
        DeviceError: the runtime or the accelerator is missing or unusable.
    """
    path = Path(model_path)
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    check_tflite_file(path)
    module = runtime_module()
    num_threads = threads if threads > 0 else default_threads()
    if probe:
        _probe_in_child(path, allocate=not spec.is_edgetpu, meanwhile=meanwhile)
    # A CPU interpreter without allocated tensors is cheap and tells us the input type before a delegate is
    # touched, so "float model on an Edge TPU" is reported as the model's problem, not the device's.
    cpu = _build(module, path, num_threads, delegates=None)
    if spec.is_edgetpu:
        dtype = _dtype_name(cpu.get_input_details()[0]["dtype"])
        if dtype not in ("uint8", "int8"):
            raise ModelError(
                f"{path}: input is {dtype}, but --device {spec} needs a uint8/int8 model; convert it with "
                "edgekit convert (full-integer, the default) and run the *_edgetpu.tflite it writes"
            )
        del cpu
        try:
            # Coral support lives beside us, imported only when asked for.
            edgetpu = importlib.import_module("edgekit.device.edgetpu")
        except ImportError:
            raise DeviceError(f"--device {spec}: this edgekit was built without Edge TPU support") from None

        try:
            # Before the delegate loads: a model compiled for a newer runtime would fail inside it, unexplained.
            mismatch = edgetpu.check_runtime(path, edgetpu.parse_runtime_version(edgetpu.runtime_version()))
            if mismatch:
                raise DeviceError(mismatch)
            delegate = edgetpu.load_edgetpu_delegate(spec)
        except DeviceError as exc:
            if not fallback_cpu:
                raise
            fallback = Path(cpu_model) if cpu_model is not None else path
            logger.warning("%s; falling back to %s on the CPU", exc.message, fallback.name)
            if on_fallback is not None:
                on_fallback(exc.message)
            return _allocate(_build(module, fallback, num_threads, None), fallback)
        return _allocate(_build(module, path, num_threads, [delegate]), path, spec)
    return _allocate(cpu, path)


@contextlib.contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Hide the runtime's C++ chatter ("INFO: Created TensorFlow Lite XNNPACK delegate") unless -v was given.

    It is written straight to file descriptor 2, around Python's logging. Errors still reach us, as the
    exception the interpreter raises. Only while no other thread could be writing to stderr at the same time.
    """
    if logger.isEnabledFor(logging.INFO) or threading.active_count() > 1:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _build(module: ModuleType, path: Path, threads: int, delegates: list[Any] | None) -> Any:
    try:
        with _native_stderr_quiet():
            return module.Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if delegates:
            raise DeviceError(f"{path}: the delegate refused this model: {text}") from None
        raise ModelError(f"{path}: not a loadable TFLite model ({text}); re-export or re-convert it") from None
    except RuntimeError as exc:
        text = " ".join(str(exc).split())
        raise ModelError(f"{path}: the TFLite runtime cannot load this model ({text})") from None


def _allocate(interpreter: Any, path: Path, spec: DeviceSpec | None = None) -> Any:
    try:
        with _native_stderr_quiet():
            interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if "edgetpu-custom-op" in text and spec is None:
            raise ModelError(
                f"{path}: compiled for the Edge TPU (edgetpu-custom-op) but the device is the CPU; "
                "run it with --device edgetpu or use the plain model.tflite"
            ) from None
        if spec is not None:
            raise DeviceError(f"{path}: cannot prepare the model on {spec} ({text})") from None
        raise ModelError(f"{path}: cannot prepare the model ({text}); it may need ops this runtime lacks") from None
    return interpreter


def _dtype_name(dtype: Any) -> str:
    import numpy as np

    return np.dtype(dtype).name
