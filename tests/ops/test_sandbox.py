"""The unit's MemoryDenyWriteExecute= and AF_NETLINK choices, tested under the kernel filters systemd installs."""

from __future__ import annotations

import ctypes.util
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="libseccomp is not installed")


def _sandboxed(*flags: str, code: str | None = None, argv: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tests.ops.sandbox", *flags, "--", sys.executable]
    command += ["-c", code] if code is not None else (argv or [])
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_the_filter_really_refuses_writable_executable_memory() -> None:
    code = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    assert _sandboxed(code=code).returncode == 0
    refused = _sandboxed("--mdwe", code=code)
    assert refused.returncode == 1 and "PermissionError" in refused.stderr


# What the unit sets: MemoryDenyWriteExecute=yes, RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK,
# SystemCallFilter=@system-service, SystemCallFilter=~@privileged @resources, SystemCallErrorNumber=EPERM.
KEPT_FAMILIES = {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK}
UNIT_RULES = [
    "--mdwe",
    *[arg for family in range(1, 46) if family not in KEPT_FAMILIES for arg in ("--deny-family", str(family))],
    *["--allow", "@system-service", "--deny", "@privileged", "--deny", "@resources"],
]
needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (syscall sets)"
)


@needs_analyze
def test_the_syscall_filter_really_refuses_privileged_calls() -> None:
    code = "import os; os.setuid(os.getuid()); print('ok')"
    assert _sandboxed(code=code).stdout.strip() == "ok"
    refused = _sandboxed(*UNIT_RULES, code=code)
    assert refused.returncode == 1 and "PermissionError" in refused.stderr


@needs_analyze
def test_edgekit_run_works_under_the_units_seccomp_rules(service_model: Path, data_dir: Path) -> None:
    """LiteRT with the XNNPACK delegate, OpenCV decoding a real video, numpy: no W+X page, no mprotect(EXEC),
    no system call outside @system-service minus @privileged and @resources, no other socket family."""
    video = str(data_dir / "video" / "Megamind.avi")
    argv = ["-m", "edgekit", "-v", "run", "--model", str(service_model), "--source", video]
    check = _sandboxed(*UNIT_RULES, argv=[*argv, "--validate-config"])  # the unit's ExecStartPre (forks a probe)
    assert check.returncode == 0, check.stderr
    done = _sandboxed(*UNIT_RULES, argv=[*argv, "--frames", "12", "--stats-interval", "0"])
    assert done.returncode == 0, done.stderr
    assert "XNNPACK delegate" in done.stderr  # the JIT-capable path was really taken
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 12 and all(r["classes"] for r in results)


def test_netlink_is_needed_by_libusb_for_the_usb_coral() -> None:
    if ctypes.util.find_library("usb-1.0") is None:
        pytest.skip("libusb-1.0 is not installed")
    code = (
        "import ctypes, ctypes.util; lib = ctypes.CDLL(ctypes.util.find_library('usb-1.0')); "
        "ctx = ctypes.c_void_p(); print(lib.libusb_init(ctypes.byref(ctx)))"
    )
    assert _sandboxed(code=code).stdout.strip() == "0"
    without = _sandboxed("--deny-family", str(int(socket.AF_NETLINK)), code=code)
    assert without.stdout.strip() != "0"  # LIBUSB_ERROR_OTHER: no hotplug monitor, no libusb
