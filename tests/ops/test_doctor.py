"""`edgekit doctor` against fake sysfs/dev trees (no Coral, USB 2 Coral, PCIe without permission, throttled Pi)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.config import load_config
from edgekit.ops.doctor import Account, Check, Report, diagnose

SERVICE = Account("edgekit", 1000, (1000,))


def _write(root: Path, rel: str, text: str = "", mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def _base(root: Path) -> Path:
    _write(root, "proc/meminfo", "MemTotal:        3884096 kB\nMemAvailable:    3100000 kB\n")
    _write(root, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    return root


def _find(report: Report, area: str, name_part: str) -> Check:
    matches = [c for c in report.checks if c.area == area and name_part in c.name]
    assert matches, f"no {area}/{name_part} check in {[c.name for c in report.checks]}"
    return matches[0]


def test_no_coral(tmp_path: Path) -> None:
    report = diagnose(_base(tmp_path), account=SERVICE)
    devices = _find(report, "Coral", "devices")
    assert devices.status == "info" and devices.detail == "no Coral Edge TPU found"
    assert _find(report, "Coral", "libedgetpu").status == "info"
    assert _find(report, "system", "memory").detail.startswith("3027 MiB available")
    assert _find(report, "system", "CPU temperature").status == "ok"
    assert not report.failed


def test_no_coral_when_the_config_wants_one(tmp_path: Path) -> None:
    config_file = _write(tmp_path, "edgekit.toml", '[run]\ndevice = "edgetpu:usb:0"\n')
    report = diagnose(_base(tmp_path / "root"), load_config(config_file), account=SERVICE)
    devices = _find(report, "Coral", "devices")
    assert devices.status == "fail" and "lsusb" in devices.fix
    libedgetpu = _find(report, "Coral", "libedgetpu")
    assert libedgetpu.status == "fail" and "apt-get install libedgetpu1-std" in libedgetpu.fix
    assert report.failed


def _usb_coral(root: Path, vendor: str, product: str, speed: str, node_mode: int) -> None:
    dev = "sys/bus/usb/devices/2-1"
    _write(root, f"{dev}/idVendor", vendor + "\n")
    _write(root, f"{dev}/idProduct", product + "\n")
    _write(root, f"{dev}/speed", speed + "\n")
    _write(root, f"{dev}/busnum", "2\n")
    _write(root, f"{dev}/devnum", "3\n")
    _write(root, "dev/bus/usb/002/003", "", mode=node_mode)
    _write(root, "usr/lib/x86_64-linux-gnu/libedgetpu.so.1.0", "")


def test_usb_coral_on_usb2(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _usb_coral(root, "18d1", "9302", "480", 0o666)
    report = diagnose(root, account=SERVICE)
    usb = _find(report, "Coral", "USB Accelerator 2-1")
    assert usb.status == "warn" and "480 Mb/s (USB 2)" in usb.detail and "USB 3 port" in usb.fix
    assert _find(report, "Coral", "libedgetpu").status == "ok"
    assert not report.failed and usb in report.problems
    assert "fix: plug it into a USB 3 port" in report.render()


def test_usb_coral_fresh_and_not_accessible(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _usb_coral(root, "1a6e", "089a", "5000", 0o600)
    report = diagnose(root, account=SERVICE)
    checks = [c for c in report.checks if c.name == "USB Accelerator 2-1"]
    assert [c.status for c in checks] == ["info", "ok", "fail"]
    assert "re-enumerates as 18d1:9302" in checks[0].detail
    assert "cannot open /dev/bus/usb/002/003" in checks[2].detail and "plugdev" in checks[2].fix


def test_pcie_coral_without_permission(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _write(root, "dev/apex_0", "", mode=0o600)
    report = diagnose(root, account=SERVICE)
    apex = _find(report, "Coral", "PCIe apex_0")
    assert apex.status == "fail"
    assert "edgekit cannot open /dev/apex_0 (mode -rw-------" in apex.detail
    assert "65-apex.rules" in apex.fix and "usermod -aG apex edgekit" in apex.fix
    # The same node is fine for an account in its group with group rw.
    (root / "dev/apex_0").chmod(0o660)
    member = Account("edgekit", 1000, (1000, (root / "dev/apex_0").stat().st_gid))
    assert _find(diagnose(root, account=member), "Coral", "PCIe apex_0").status == "ok"


def test_pcie_coral_without_driver(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _write(root, "sys/bus/pci/devices/0000:01:00.0/vendor", "0x1ac1\n")
    _write(root, "sys/bus/pci/devices/0000:01:00.0/device", "0x089a\n")
    check = _find(diagnose(root, account=SERVICE), "Coral", "PCIe 0000:01:00.0")
    assert check.status == "fail" and "gasket-dkms" in check.fix


def test_pi_with_throttling(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _write(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0")
    _write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", "50005\n")
    _write(root, "sys/class/thermal/thermal_zone0/temp", "82300\n")
    _write(root, "dev/video0", "", mode=0o660)
    report = diagnose(root, account=SERVICE)
    throttling = _find(report, "system", "throttling")
    assert throttling.status == "fail"
    assert throttling.detail == (
        "0x50005: under-voltage now, throttled now, under-voltage has occurred, throttling has occurred"
    )
    assert "official power supply" in throttling.fix and "heatsink" in throttling.fix
    assert _find(report, "system", "CPU temperature").status == "warn"
    assert _find(report, "system", "board").detail == "Raspberry Pi 4 Model B Rev 1.4"
    video = _find(report, "cameras", "V4L2")
    assert video.status == "warn" and "usermod -aG video edgekit" in video.fix
    assert _find(report, "cameras", "picamera2").status == "warn"


def test_throttling_in_the_past_only_warns(tmp_path: Path) -> None:
    root = _base(tmp_path)
    _write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", "0x50000\n")
    assert _find(diagnose(root, account=SERVICE), "system", "throttling").status == "warn"
    _write(root, "sys/devices/platform/soc/soc:firmware/get_throttled", "0x0\n")
    assert _find(diagnose(root, account=SERVICE), "system", "throttling").status == "ok"


def test_mqtt_broker_reachability(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = listener.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            down = probe.getsockname()[1]  # bound, never listening: connections are refused
            config_file = _write(
                tmp_path,
                "edgekit.toml",
                f'[run]\nsinks = ["stdout", "mqtt://cam@127.0.0.1:{up}/edgekit", "mqtt://127.0.0.1:{down}/x",'
                f' "mqtt://cam:secret@127.0.0.1:{up}/y"]\n',
            )
            report = diagnose(_base(tmp_path / "root"), load_config(config_file), account=SERVICE)
    ok = _find(report, "network", f"MQTT 127.0.0.1:{up}")
    assert ok.status == "ok" and "secret" not in ok.detail
    # A password in the URL: refused as `edgekit run` refuses it (the run plan's message), never echoed.
    refused_url = _find(report, "network", "MQTT sink")
    assert refused_url.status == "fail" and "a password in the URL" in refused_url.detail
    assert "secret" not in refused_url.detail
    refused = _find(report, "network", f"MQTT 127.0.0.1:{down}")
    assert refused.status == "fail" and "cannot connect" in refused.detail


def test_cli_doctor_json_and_exit_code(tmp_path: Path) -> None:
    root = _base(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["doctor", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and any(c["name"] == "devices" for c in data["checks"])
    _write(root, "dev/apex_0", "", mode=0o600)
    result = runner.invoke(cli, ["doctor", "--root", str(root), "--user", "nobody"])
    assert result.exit_code == 1
    assert "[FAIL] PCIe apex_0: nobody cannot open /dev/apex_0" in result.output
    result = runner.invoke(cli, ["doctor", "--root", str(root), "--user", "no-such-user-here"])
    assert (
        result.exit_code == 2
        and result.output.strip() == "Error: --user no-such-user-here: no such user on this system"
    )


@pytest.mark.parametrize("user", ["root"])
def test_root_can_open_everything(tmp_path: Path, user: str) -> None:
    root = _base(tmp_path)
    _write(root, "dev/apex_0", "", mode=0o600)
    assert _find(diagnose(root, account=Account.named(user)), "Coral", "PCIe").status == "ok"
