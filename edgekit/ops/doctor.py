"""`edgekit doctor`: what this device can do and what is wrong with it, each problem with its fix.

Every check reads files under a root directory (``/`` on a device; a fake sysfs/dev tree in tests), so the
same code judges a real Pi and a recorded one. Checks that must ask the running system (a TCP connect to the
MQTT broker, ``vcgencmd``, package imports) only do so when the root is ``/``, except the broker check.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit.config import Config
from edgekit.errors import EdgekitError
from edgekit.plan import BrokerAddress, MqttSpec, parse_device, parse_sink

logger = logging.getLogger(__name__)

Status = Literal["ok", "info", "warn", "fail"]
_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}

CORAL_PCI_IDS = {("0x1ac1", "0x089a")}
# Raspberry Pi firmware's get_throttled bits (vcgencmd documentation).
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
MIN_FREE_DISK = 1 << 30
MIN_AVAILABLE_MEMORY = 200 << 20
HOT_CELSIUS = 80.0


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    area: str
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"area": self.area, "name": self.name, "status": self.status, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


@dataclass(frozen=True)
class Report:
    """All checks, in display order."""

    checks: tuple[Check, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status in ("warn", "fail"))

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)

    def render(self) -> str:
        """One screen of text."""
        lines = []
        area = ""
        for c in self.checks:
            if c.area != area:
                area = c.area
                lines.append(f"{area}:")
            lines.append(f"  [{_MARK[c.status]}] {c.name}: {c.detail}")
            if c.fix and c.status in ("warn", "fail"):
                lines.append(f"         fix: {c.fix}")
        problems = self.problems
        lines.append(f"{len(problems)} problem(s)" if problems else "no problems found")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": not self.failed,
            "problems": len(self.problems),
            "facts": self.facts,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class Account:
    """Whose access to device nodes is judged: the service account, not necessarily whoever runs doctor."""

    name: str
    uid: int
    gids: tuple[int, ...]

    @classmethod
    def current(cls) -> Account:
        import pwd

        uid = os.getuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, tuple(sorted({os.getgid(), *os.getgroups()})))

    @classmethod
    def named(cls, name: str) -> Account:
        """The account ``name`` with its primary and supplementary groups.

        Raises:
            InputError: no such user.
        """
        import grp
        import pwd

        from edgekit.errors import InputError

        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise InputError(f"--user {name}: no such user on this system") from None
        groups = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)}
        return cls(name, entry.pw_uid, tuple(sorted(groups)))

    def can_read_write(self, path: Path) -> bool:
        """Whether the mode bits and ownership of ``path`` let this account read and write it."""
        try:
            info = path.stat()
        except OSError:
            return False
        if self.uid == 0:
            return True
        mode = info.st_mode
        if info.st_uid == self.uid:
            return bool(mode & stat.S_IRUSR and mode & stat.S_IWUSR)
        if info.st_gid in self.gids:
            return bool(mode & stat.S_IRGRP and mode & stat.S_IWGRP)
        return bool(mode & stat.S_IROTH and mode & stat.S_IWOTH)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().strip("\0")
    except OSError:
        return ""


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def diagnose(
    root: str | Path = "/",
    config: Config | None = None,
    account: Account | None = None,
    *,
    broker_timeout: float = 2.0,
) -> Report:
    """Run every check.

    Args:
        root: filesystem root to inspect (tests use a fake tree).
        config: a loaded `edgekit.config.Config` (for the model device and the MQTT brokers), or None.
        account: whose access to /dev nodes is checked; the current process's by default.
        broker_timeout: seconds for the TCP connect to the broker.

    Returns:
        The report.
    """
    base = Path(root)
    live = base.resolve() == Path("/")
    account = account or Account.current()
    wants_tpu = False
    if config is not None:
        with contextlib.suppress(EdgekitError):  # a bad device string is the config check's to report
            wants_tpu = parse_device(config.run.device).is_edgetpu
    checks: list[Check] = []
    facts: dict[str, Any] = {"root": str(base), "user": account.name}
    checks += _python(live, facts)
    checks += _board(base, live, facts)
    checks += _cameras(base, live, account)
    checks += _coral(base, live, account, wants_tpu, facts)
    checks += _mqtt(config, broker_timeout)
    checks += _resources(base)
    return Report(tuple(checks), facts)


# --- software ----------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _python(live: bool, facts: dict[str, Any]) -> list[Check]:
    area = "software"
    from edgekit import __version__

    checks = [
        Check(area, "python", "ok", f"{platform.python_version()} on {platform.machine()}, edgekit {__version__}")
    ]
    facts["python"] = platform.python_version()
    numpy = _version("numpy")
    checks.append(
        Check(area, "numpy", "ok", numpy)
        if numpy
        else Check(area, "numpy", "fail", "not installed", "pip install 'edgekit[device]'")
    )
    # Found by metadata and module specs, never imported: importing TensorFlow would cost seconds and 570 MB.
    runtimes = [(m, d) for m, d in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime"),
                                    ("tensorflow", "tensorflow")) if _has_module(m)]  # fmt: skip
    if runtimes:
        first, dist = runtimes[0]
        detail = f"{first} {_version(dist) or ''}".strip()
        status: Status = "ok"
        fix = ""
        if first == "tflite_runtime" and numpy and int(numpy.split(".")[0]) >= 2:
            status, fix = "warn", "tflite-runtime wheels are built for numpy 1; pip install ai-edge-litert"
        checks.append(Check(area, "TFLite runtime", status, detail, fix))
        facts["runtime"] = first
    else:
        checks.append(
            Check(
                area,
                "TFLite runtime",
                "fail",
                "none of ai-edge-litert, tflite-runtime, tensorflow",
                "pip install 'edgekit[device]'",
            )
        )
    if _has_module("pycoral"):
        spec = importlib.util.find_spec("pycoral")
        locations = list(spec.submodule_search_locations or []) if spec else []
        genuine = any((Path(p) / "utils" / "edgetpu.py").is_file() for p in locations)
        checks.append(
            Check(area, "pycoral", "ok", "Coral's pycoral is installed")
            if genuine
            else Check(
                area,
                "pycoral",
                "fail",
                "the unrelated PyPI package named pycoral is installed",
                "pip uninstall pycoral; Coral's pycoral comes from Coral's apt repo (python3-pycoral)",
            )
        )
    return checks


def _board(base: Path, live: bool, facts: dict[str, Any]) -> list[Check]:
    model = _read(base / "proc/device-tree/model") or _read(base / "sys/firmware/devicetree/base/model")
    facts["board"] = model or platform.machine()
    if model:
        return [Check("system", "board", "info", model)]
    return []


def _cameras(base: Path, live: bool, account: Account) -> list[Check]:
    area = "cameras"
    checks: list[Check] = []
    nodes = sorted((base / "dev").glob("video*")) if (base / "dev").is_dir() else []
    if nodes:
        blocked = [n.name for n in nodes if not account.can_read_write(n)]
        detail = ", ".join(f"/dev/{n.name}" for n in nodes)
        if blocked:
            checks.append(
                Check(
                    area,
                    "V4L2 devices",
                    "warn",
                    f"{detail}; {account.name} cannot open {', '.join(blocked)}",
                    f"sudo usermod -aG video {account.name} (then log in again)",
                )
            )
        else:
            checks.append(Check(area, "V4L2 devices", "ok", detail))
    else:
        checks.append(Check(area, "V4L2 devices", "info", "no /dev/video* (no USB or CSI camera attached)"))
    is_pi = "raspberry pi" in _read(base / "proc/device-tree/model").lower()
    if live or is_pi:
        if _has_module("picamera2"):
            checks.append(Check(area, "picamera2", "ok", "installed"))
        elif is_pi:
            checks.append(
                Check(
                    area,
                    "picamera2",
                    "warn",
                    "not importable (needed for the Pi camera)",
                    "sudo apt install python3-picamera2, and create the venv with --system-site-packages",
                )
            )
        if _has_module("libcamera"):
            checks.append(Check(area, "libcamera", "ok", "python bindings installed"))
    return checks


# --- Coral -------------------------------------------------------------------------------------------------


def _usb_node(dev: Path, base: Path) -> Path | None:
    bus, num = _read(dev / "busnum"), _read(dev / "devnum")
    if not (bus.isdigit() and num.isdigit()):
        return None
    return base / f"dev/bus/usb/{int(bus):03d}/{int(num):03d}"


def _libedgetpu_files(base: Path) -> list[Path]:
    found: list[Path] = []
    for folder in ("usr/lib", "usr/local/lib", "lib"):
        top = base / folder
        if top.is_dir():
            found += top.glob("libedgetpu.so.1*")
            found += top.glob("*/libedgetpu.so.1*")
    return sorted(set(found))


def _coral(base: Path, live: bool, account: Account, wants_tpu: bool, facts: dict[str, Any]) -> list[Check]:
    from edgekit.device.edgetpu import INSTALL_RUNTIME, USB_IDS, parse_runtime_version, runtime_version, scan_sysfs

    area = "Coral"
    checks: list[Check] = []
    devices = scan_sysfs(base)
    facts["coral_devices"] = [{"type": d.type, "path": d.path, "usb_id": d.usb_id} for d in devices]
    for d in devices:
        if d.type != "usb":
            continue
        dev = base / d.path.lstrip("/")
        name = f"USB Accelerator {dev.name}"
        if d.usb_id == "1a6e:089a":
            checks.append(
                Check(
                    area,
                    name,
                    "info",
                    f"{d.usb_id}: {USB_IDS[('1a6e', '089a')]}; it re-enumerates as 18d1:9302 "
                    "when the runtime first opens it",
                )
            )
        if d.speed_mbps is not None and d.speed_mbps < 5000:
            checks.append(
                Check(
                    area,
                    name,
                    "warn",
                    f"linked at {d.speed_mbps} Mb/s (USB 2): inference is several times slower",
                    "plug it into a USB 3 port (blue) directly, with the USB-C cable it came with, not via a hub",
                )
            )
        elif d.speed_mbps is not None:
            checks.append(Check(area, name, "ok", f"{d.usb_id} at {d.speed_mbps} Mb/s (USB 3)"))
        node = _usb_node(dev, base)
        if node is not None and node.exists() and not account.can_read_write(node):
            checks.append(
                Check(
                    area,
                    name,
                    "fail",
                    f"{account.name} cannot open /{node.relative_to(base)}",
                    f"install libedgetpu1-std (its udev rule gives group plugdev access), then sudo usermod -aG "
                    f"plugdev {account.name} and replug the Accelerator",
                )
            )
    for d in devices:
        if d.type != "pci":
            continue
        node = base / d.path.lstrip("/")
        if account.can_read_write(node):
            checks.append(Check(area, f"PCIe {node.name}", "ok", f"{d.path}, accessible to {account.name}"))
        else:
            info = node.stat()
            checks.append(
                Check(
                    area,
                    f"PCIe {node.name}",
                    "fail",
                    f"{account.name} cannot open {d.path} (mode {stat.filemode(info.st_mode)}, group "
                    f"{_group_name(info.st_gid)})",
                    f'sudo sh -c "echo \'SUBSYSTEM==\\"apex\\", MODE=\\"0660\\", GROUP=\\"apex\\"\' > '
                    f'/etc/udev/rules.d/65-apex.rules"; sudo groupadd -f apex; sudo usermod -aG apex '
                    f"{account.name}; then reboot (Coral's M.2/PCIe guide)",
                )
            )
    # A Coral on the PCIe bus without /dev/apex_*: the gasket/apex driver is missing.
    pci = base / "sys/bus/pci/devices"
    if pci.is_dir() and not any(d.type == "pci" for d in devices):
        for dev in sorted(pci.iterdir()):
            if (_read(dev / "vendor").lower(), _read(dev / "device").lower()) in CORAL_PCI_IDS:
                checks.append(
                    Check(
                        area,
                        f"PCIe {dev.name}",
                        "fail",
                        "Coral PCIe/M.2 module found but no /dev/apex_* node",
                        "install the driver: sudo apt-get install gasket-dkms libedgetpu1-std (Coral's apt "
                        "repo), then reboot; on a Pi 5 also enable PCIe in config.txt",
                    )
                )
    if not devices and not any(c.name.startswith("PCIe") for c in checks):
        checks.append(
            Check(
                area,
                "devices",
                "fail" if wants_tpu else "info",
                "no Coral Edge TPU found",
                "plug in the USB Accelerator (look for 1a6e:089a or 18d1:9302 in lsusb); for M.2/PCIe check "
                "the module seating and the apex driver"
                if wants_tpu
                else "",
            )
        )
    version = runtime_version() if live else None
    files = _libedgetpu_files(base)
    if version:
        checks.append(Check(area, "libedgetpu", "ok", f"runtime {parse_runtime_version(version)} ({version})"))
        facts["libedgetpu"] = version
    elif files:
        checks.append(Check(area, "libedgetpu", "ok", ", ".join(f"/{p.relative_to(base)}" for p in files)))
        facts["libedgetpu"] = str(files[0].name)
    else:
        checks.append(
            Check(
                area,
                "libedgetpu",
                "fail" if (devices or wants_tpu) else "info",
                "not installed",
                INSTALL_RUNTIME if (devices or wants_tpu) else "",
            )
        )
    return checks


# --- network -----------------------------------------------------------------------------------------------


def broker_endpoints(config: Config | None) -> list[BrokerAddress | str]:
    """The broker of every MQTT sink in the config, parsed by the run plan (or why the plan refuses it)."""
    out: list[BrokerAddress | str] = []
    if config is None:
        return out
    for spec in config.run.sinks:
        try:
            sink = parse_sink(spec, config)
        except EdgekitError as exc:
            out.append(exc.message)
            continue
        if isinstance(sink, MqttSpec):
            out.append(sink.address)
    return out


def _mqtt(config: Config | None, timeout: float) -> list[Check]:
    checks = []
    for address in broker_endpoints(config):
        if isinstance(address, str):
            checks.append(Check("network", "MQTT sink", "fail", address, "fix the sink in the config"))
            continue
        host, port = address.host, address.port
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
            checks.append(Check("network", f"MQTT {host}:{port}", "ok", f"reachable ({address})"))
        except OSError as exc:
            checks.append(
                Check(
                    "network",
                    f"MQTT {host}:{port}",
                    "fail",
                    f"cannot connect: {exc.strerror or exc}",
                    "check the broker is running and listening on that port, and the host name/firewall",
                )
            )
    return checks


# --- resources ---------------------------------------------------------------------------------------------


def _meminfo(base: Path) -> dict[str, int]:
    out = {}
    for line in _read(base / "proc/meminfo").splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            out[match.group(1)] = int(match.group(2)) * 1024
    return out


def _throttled(base: Path, live: bool) -> int | None:
    text = _read(base / "sys/devices/platform/soc/soc:firmware/get_throttled")
    if not text and live and shutil.which("vcgencmd"):
        try:
            text = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
    match = re.search(r"(0x[0-9a-fA-F]+|\b[0-9a-fA-F]+\b)", text)
    return int(match.group(1), 16) if match else None


def _resources(base: Path) -> list[Check]:
    area = "system"
    checks: list[Check] = []
    try:
        usage = shutil.disk_usage(base)
        free = usage.free
        checks.append(
            Check(
                area,
                "disk",
                "ok" if free >= MIN_FREE_DISK else "warn",
                f"{free / 2**30:.1f} GiB free",
                "free space: old logs (journalctl --vacuum-size=100M), apt caches (sudo apt clean)",
            )
        )
    except OSError:
        pass
    memory = _meminfo(base)
    if "MemAvailable" in memory:
        available = memory["MemAvailable"]
        checks.append(
            Check(
                area,
                "memory",
                "ok" if available >= MIN_AVAILABLE_MEMORY else "warn",
                f"{available / 2**20:.0f} MiB available of {memory.get('MemTotal', 0) / 2**20:.0f} MiB",
                "stop other services or use a smaller model (lower alpha / input size)",
            )
        )
    temp_text = _read(base / "sys/class/thermal/thermal_zone0/temp")
    if temp_text.lstrip("-").isdigit():
        celsius = int(temp_text) / 1000
        checks.append(
            Check(
                area,
                "CPU temperature",
                "ok" if celsius < HOT_CELSIUS else "warn",
                f"{celsius:.1f} °C",
                "add a heatsink or fan; the Pi throttles at 80-85 °C",
            )
        )
    value = _throttled(base, base.resolve() == Path("/"))
    if value is not None:
        flags = [text for bit, text in THROTTLE_BITS.items() if value >> bit & 1]
        if not flags:
            checks.append(Check(area, "throttling", "ok", f"none (get_throttled=0x{value:x})"))
        else:
            fixes = []
            if value & 0x10001:
                fixes.append("use the official power supply (5 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short cable")
            if value & 0xE000E:
                fixes.append("cool the board (heatsink, fan, case with airflow)")
            now = value & 0xF
            checks.append(
                Check(
                    area, "throttling", "fail" if now else "warn", f"0x{value:x}: {', '.join(flags)}", "; ".join(fixes)
                )
            )
    return checks


def problems_of(report: Report, areas: Iterable[str]) -> list[Check]:
    """The problems in some areas (for callers that gate on, say, only the Coral checks)."""
    wanted = set(areas)
    return [c for c in report.problems if c.area in wanted]


def main_exit_code(report: Report) -> int:
    """0 when nothing failed, 1 otherwise (warnings alone keep 0)."""
    return 1 if report.failed else 0
