"""The unit's MemoryDenyWriteExecute= and AF_NETLINK choices, tested under the kernel filters systemd installs."""

from __future__ import annotations

import ctypes.util
import json
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


def test_edgekit_run_works_under_memory_deny_write_execute(service_model: Path, shared_data: Path) -> None:
    """LiteRT with the XNNPACK delegate, OpenCV decoding a real video, numpy: no W+X page, no mprotect(EXEC)."""
    argv = ["-m", "edgekit", "-v", "run", "--model", str(service_model), "--source"]
    argv += [str(shared_data / "video" / "Megamind.avi"), "--frames", "12", "--stats-interval", "0"]
    done = _sandboxed("--mdwe", argv=argv)
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
