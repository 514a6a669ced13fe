"""Coral Edge TPU on the device: find accelerators, load the ``libedgetpu`` delegate, fall back to the CPU.

Device strings (parsed by `edgekit.plan.parse_device`) map onto the delegate's ``device`` option as
Coral documents it for ``load_delegate`` / pycoral's ``make_interpreter``::

    edgetpu          -> {}                   the first Edge TPU found, any bus
    edgetpu:usb      -> {"device": "usb"}    the first USB Accelerator
    edgetpu:usb:N    -> {"device": "usb:N"}  the N-th USB Accelerator
    edgetpu:pci      -> {"device": "pci"}    the first PCIe/M.2 module
    edgetpu:pci:N    -> {"device": "pci:N"}  the N-th PCIe/M.2 module

The delegate library is ``libedgetpu.so.1`` on Linux, ``libedgetpu.1.dylib`` on macOS and ``edgetpu.dll`` on
Windows (Coral's names). Enumeration uses Coral's own pycoral (``python3-pycoral`` from Coral's apt repository;
the unrelated PyPI package of that name is detected and ignored) when it is importable, else the libedgetpu C API
(``edgetpu_list_devices``) through ctypes, else sysfs (USB IDs 1a6e:089a before the runtime first loads firmware,
18d1:9302 after; PCIe ``/dev/apex_N``).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgekit.device.backoff import Backoff
from edgekit.errors import DeviceError
from edgekit.plan import DeviceSpec, parse_device

logger = logging.getLogger(__name__)

LIBRARY_ENV = "EDGEKIT_LIBEDGETPU"
LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
# USB IDs of the Coral USB Accelerator: as it enumerates at power-up (Global Unichip, before the runtime loads
# its firmware) and after the first use (Google).
USB_IDS = {
    ("1a6e", "089a"): "Coral USB Accelerator (firmware not loaded yet)",
    ("18d1", "9302"): "Coral USB Accelerator",
}
INSTALL_RUNTIME = (
    "install the Edge TPU runtime from Coral's apt repository: echo 'deb https://packages.cloud.google.com/apt "
    "coral-edgetpu-stable main' | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list; sudo apt-get update; "
    "sudo apt-get install libedgetpu1-std (https://coral.ai/docs/accelerator/get-started/)"
)
# Re-attach attempts while running on the CPU fallback: first after 5 s, doubling up to once a minute.
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


def library_name(system: str | None = None) -> str:
    """The delegate library: ``$EDGEKIT_LIBEDGETPU`` when set (a build outside the loader's path), else Coral's
    file name on this (or the given) operating system."""
    if system is None and os.environ.get(LIBRARY_ENV):
        return os.environ[LIBRARY_ENV]
    return LIBRARIES.get(system or platform.system(), LIBRARIES["Linux"])


def delegate_options(device: DeviceSpec | str) -> dict[str, str]:
    """The ``load_delegate`` options for an edgekit device string.

    Args:
        device: ``edgetpu``, ``edgetpu:usb``, ``edgetpu:usb:N``, ``edgetpu:pci``, ``edgetpu:pci:N`` (or pycoral's
            ``usb:N`` / ``pci:N``).

    Returns:
        ``{}`` or ``{"device": "usb:0"}`` and so on.

    Raises:
        InputError: not an Edge TPU device string.
    """
    spec = device if isinstance(device, DeviceSpec) else parse_device(device)
    if not spec.is_edgetpu:
        from edgekit.errors import InputError

        raise InputError(f"device {device!r} is not an Edge TPU; use edgetpu, edgetpu:usb[:N] or edgetpu:pci[:N]")
    if spec.bus is None:
        return {}
    return {"device": spec.bus if spec.index is None else f"{spec.bus}:{spec.index}"}


# --- enumeration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeTpu:
    """One Edge TPU found on this machine."""

    type: Literal["usb", "pci"]
    path: str
    source: str = "sysfs"
    usb_id: str | None = None
    speed_mbps: int | None = None
    description: str = ""


def _pycoral_edgetpu() -> Any | None:
    """Coral's ``pycoral.utils.edgetpu`` when importable and genuine; None otherwise."""
    try:
        module = importlib.import_module("pycoral.utils.edgetpu")
    except ImportError:
        return None
    except Exception as exc:  # a broken install (wrong tflite_runtime for this numpy) must not stop us
        logger.info("pycoral is installed but fails to import (%s); using libedgetpu directly", exc)
        return None
    if not callable(getattr(module, "list_edge_tpus", None)):
        logger.warning(
            "a 'pycoral' package without list_edge_tpus is installed: the unrelated PyPI package, not Coral's; "
            "remove it (pip uninstall pycoral) and install python3-pycoral from Coral's apt repository"
        )
        return None
    return module


def list_edge_tpus(root: str | Path = "/") -> list[EdgeTpu]:
    """Edge TPUs on this machine: via Coral's pycoral when present, else libedgetpu, else sysfs.

    Args:
        root: filesystem root for the sysfs/dev scan (tests point it at a fake tree).

    Returns:
        The devices, USB first, in the order the delegate numbers them.
    """
    if str(root) == "/":
        pycoral = _pycoral_edgetpu()
        if pycoral is not None:
            found = []
            for entry in pycoral.list_edge_tpus():
                kind: Literal["usb", "pci"] = "pci" if str(entry.get("type", "")).lower().startswith("pci") else "usb"
                found.append(EdgeTpu(kind, str(entry.get("path", "")), source="pycoral"))
            return found
        listed = _list_with_libedgetpu()
        if listed is not None:
            return listed
    return scan_sysfs(root)


class _EdgeTpuDevice(ctypes.Structure):
    # struct edgetpu_device { enum edgetpu_device_type type; const char* path; }  (tflite/public/edgetpu_c.h)
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


def _load_library() -> Any | None:
    try:
        return ctypes.CDLL(library_name())
    except OSError:
        return None


def _list_with_libedgetpu() -> list[EdgeTpu] | None:
    lib = _load_library()
    if lib is None or not hasattr(lib, "edgetpu_list_devices"):
        return None
    count = ctypes.c_size_t(0)
    lib.edgetpu_list_devices.restype = ctypes.POINTER(_EdgeTpuDevice)
    lib.edgetpu_list_devices.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
    devices = lib.edgetpu_list_devices(ctypes.byref(count))
    found = []
    for i in range(count.value):
        bus: Literal["usb", "pci"] = "pci" if devices[i].type == 0 else "usb"  # EDGETPU_APEX_PCI = 0, USB = 1
        found.append(EdgeTpu(bus, (devices[i].path or b"").decode(errors="replace"), source="libedgetpu"))
    if count.value and hasattr(lib, "edgetpu_free_devices"):
        lib.edgetpu_free_devices(devices)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def scan_sysfs(root: str | Path = "/") -> list[EdgeTpu]:
    """Edge TPUs visible in sysfs and /dev under ``root``: USB Accelerators by vendor:product, PCIe as apex."""
    base = Path(root)
    found: list[EdgeTpu] = []
    usb = base / "sys/bus/usb/devices"
    if usb.is_dir():
        for dev in sorted(usb.iterdir()):
            key = (_read(dev / "idVendor").lower(), _read(dev / "idProduct").lower())
            if key in USB_IDS:
                speed = _read(dev / "speed")
                found.append(
                    EdgeTpu(
                        "usb",
                        str(Path("/") / dev.relative_to(base)),
                        usb_id=":".join(key),
                        speed_mbps=int(float(speed)) if re.fullmatch(r"[\d.]+", speed) else None,
                        description=USB_IDS[key],
                    )
                )
    dev_dir = base / "dev"
    if dev_dir.is_dir():
        for node in sorted(dev_dir.glob("apex_*")):
            found.append(EdgeTpu("pci", str(Path("/") / node.relative_to(base)), description="Coral PCIe/M.2 (apex)"))
    return found


# --- runtime version ---------------------------------------------------------------------------------------


def runtime_version() -> str | None:
    """The installed libedgetpu's version string, e.g. ``BuildLabel(COMPILER=...), RuntimeVersion(14)``."""
    pycoral = _pycoral_edgetpu()
    if pycoral is not None and callable(getattr(pycoral, "get_runtime_version", None)):
        return str(pycoral.get_runtime_version())
    lib = _load_library()
    if lib is None or not hasattr(lib, "edgetpu_version"):
        return None
    lib.edgetpu_version.restype = ctypes.c_char_p
    raw = lib.edgetpu_version()
    return raw.decode(errors="replace") if raw else None


def parse_runtime_version(text: str | None) -> int | None:
    """The number in ``RuntimeVersion(N)``, or None."""
    match = re.search(r"RuntimeVersion\((\d+)\)", text or "")
    return int(match.group(1)) if match else None


def check_runtime(model_path: str | Path, installed: int | None) -> str | None:
    """Compare a compiled model's required Edge TPU runtime with the installed one (`make_interpreter` asks).

    Args:
        model_path: a ``*_edgetpu.tflite``.
        installed: the installed runtime version (`parse_runtime_version`), None when unknown.

    Returns:
        None when compatible (or unknown), else a message saying which side to upgrade.
    """
    from edgekit.model.tflite import read_model

    needed = read_model(model_path).edgetpu_runtime_required
    if needed is None or installed is None or needed <= installed:
        return None
    return (
        f"{model_path}: compiled for Edge TPU runtime {needed} but libedgetpu here is runtime {installed}: "
        f"upgrade libedgetpu1-std from Coral's apt repository (sudo apt-get install --only-upgrade libedgetpu1-std), "
        f"or recompile on the host with edgetpu_compiler --min_runtime_version {installed}"
    )


# --- the delegate ------------------------------------------------------------------------------------------


def load_edgetpu_delegate(device: DeviceSpec | str = "edgetpu", library: str | None = None) -> Any:
    """Load the Edge TPU delegate for ``device`` through the runtime module.

    Args:
        device: an Edge TPU device string (module docstring).
        library: the delegate library; defaults to this platform's Coral name.

    Returns:
        A delegate for ``experimental_delegates``.

    Raises:
        DeviceError: libedgetpu is not installed, or no (matching) Edge TPU is attached or it is busy; the
            message says which, with the fix.
    """
    from edgekit.device import runtime

    library = library or library_name()
    options = delegate_options(device)
    # Check the library first: the runtimes' load_delegate says only "Failed to load delegate from
    # libedgetpu.so.1" for both a missing runtime and a missing device (and LiteRT then prints a stray
    # traceback from the half-built delegate's destructor).
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        raise DeviceError(
            f"--device {device}: the Edge TPU runtime {library} is not installed ({exc}); {INSTALL_RUNTIME}"
        ) from None
    try:
        return runtime.load_delegate(library, options)
    except DeviceError as exc:
        cause = exc.message
    present = list_edge_tpus()
    if not present:
        raise DeviceError(
            f"--device {device}: {library} is installed but no Edge TPU is attached ({cause}); plug the USB "
            "Accelerator into a USB 3 port (or check the PCIe module and the apex driver), then run edgekit doctor"
        )
    listing = ", ".join(f"{d.type}:{d.path}" for d in present)
    raise DeviceError(
        f"--device {device}: cannot open the Edge TPU ({cause}); found {listing}. It may be in use by another "
        "process, or the index is out of range; edgekit doctor checks permissions and the USB link"
    )


class TpuWatcher:
    """While running on the CPU fallback, look for an Edge TPU (a cheap enumeration, no delegate) with a growing
    interval, and call ``on_found`` once when one appears (the daemon then reloads onto it)."""

    def __init__(
        self,
        on_found: Callable[[], None],
        lister: Callable[[], list[EdgeTpu]] = list_edge_tpus,
        first_s: float = RETRY_FIRST_S,
        max_s: float = RETRY_MAX_S,
    ) -> None:
        import threading

        self._on_found = on_found
        self._lister = lister
        self._first, self._max = first_s, max_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgetpu-watch", daemon=True)
        self.checks = 0

    def start(self) -> TpuWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _list(self) -> set[str]:
        try:
            return {f"{d.type}:{d.path}" for d in self._lister()}
        except Exception as exc:  # enumeration must never take the service down
            logger.debug("Edge TPU enumeration failed: %s", exc)
            return set()

    def _run(self) -> None:
        # Only a device that was not there at the start counts: one that is present but unusable (busy, no
        # runtime) would otherwise trigger a reload, fail again and loop.
        baseline = self._list()
        backoff = Backoff(self._first, self._max)
        while not self._stop.wait(backoff.next()):
            self.checks += 1
            new = self._list() - baseline
            if new:
                logger.warning("an Edge TPU appeared (%s): re-attaching", sorted(new)[0])
                self._on_found()
                return
