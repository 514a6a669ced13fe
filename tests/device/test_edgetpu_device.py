"""Edge TPU device support: real no-libedgetpu behaviour, CPU fallback with real models, simulated pycoral/sysfs."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.device import edgetpu
from edgekit.device.edgetpu import (
    check_runtime,
    delegate_options,
    library_name,
    list_edge_tpus,
    load_edgetpu_delegate,
    parse_runtime_version,
    scan_sysfs,
)
from edgekit.device.runtime import make_interpreter
from edgekit.errors import DeviceError, InputError, ModelError
from tests.tools.edgetpu_stand_in import compiled_model

HAVE_LIBEDGETPU = edgetpu._load_library() is not None


@pytest.fixture
def models(tiny_models: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(stand-in compiled model requiring runtime 14, the real int8 CPU model)."""
    cpu = tmp_path / "model.tflite"
    cpu.write_bytes(tiny_models["int8"].read_bytes())
    return compiled_model(cpu, tmp_path / "model_edgetpu.tflite", min_runtime_version=14), cpu


def _run(interpreter: Any) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.full(inp["shape"], 128, np.uint8))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


@pytest.mark.parametrize(
    ("device", "options"),
    [
        ("edgetpu", {}),
        ("edgetpu:usb", {"device": "usb"}),
        ("edgetpu:usb:1", {"device": "usb:1"}),
        ("edgetpu:pci", {"device": "pci"}),
        ("edgetpu:pci:0", {"device": "pci:0"}),
        ("usb:2", {"device": "usb:2"}),
    ],
)
def test_delegate_options_follow_corals_device_strings(device: str, options: dict[str, str]) -> None:
    assert delegate_options(device) == options


def test_delegate_options_refuse_cpu_and_garbage() -> None:
    with pytest.raises(InputError):
        delegate_options("cpu")
    with pytest.raises(InputError):
        delegate_options("edgetpu:sata:0")


def test_library_names_per_platform() -> None:
    assert library_name("Linux") == "libedgetpu.so.1"
    assert library_name("Darwin") == "libedgetpu.1.dylib"
    assert library_name("Windows") == "edgetpu.dll"


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_no_libedgetpu_is_a_clear_device_error() -> None:
    with pytest.raises(DeviceError) as err:
        load_edgetpu_delegate("edgetpu:usb:0")
    message = err.value.message
    assert message.startswith("--device edgetpu:usb:0: the Edge TPU runtime libedgetpu.so.1 is not installed")
    assert "apt-get install libedgetpu1-std" in message and "\n" not in message


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_runtime_reports_it_for_edgetpu_devices(models: tuple[Path, Path]) -> None:
    compiled, _ = models
    with pytest.raises(DeviceError, match=r"libedgetpu\.so\.1 is not installed"):
        make_interpreter(compiled, "edgetpu", probe=False)


def test_compiled_model_without_a_tpu_is_refused(models: tuple[Path, Path]) -> None:
    compiled, _ = models
    with pytest.raises(ModelError, match="edgetpu-custom-op"):
        make_interpreter(compiled, "cpu", probe=False)


def test_runtime_version_check_says_which_to_upgrade(models: tuple[Path, Path]) -> None:
    compiled, _ = models
    assert parse_runtime_version("BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted), RuntimeVersion(13)") == 13
    assert parse_runtime_version(None) is None
    message = check_runtime(compiled, 13)
    assert message is not None
    assert "compiled for Edge TPU runtime 14 but libedgetpu here is runtime 13" in message
    assert "upgrade libedgetpu1-std" in message and "--min_runtime_version 13" in message
    assert check_runtime(compiled, 14) is None and check_runtime(compiled, None) is None


def _fake_pycoral(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> None:
    package = types.ModuleType("pycoral")
    utils = types.ModuleType("pycoral.utils")
    monkeypatch.setitem(sys.modules, "pycoral", package)
    monkeypatch.setitem(sys.modules, "pycoral.utils", utils)
    monkeypatch.setitem(sys.modules, "pycoral.utils.edgetpu", module)


@pytest.mark.simulated
def test_pycoral_is_used_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: a stand-in for Coral's pycoral.utils.edgetpu (the real one comes from Coral's apt repo)."""
    fake = types.ModuleType("pycoral.utils.edgetpu")
    fake.list_edge_tpus = lambda: [  # type: ignore[attr-defined]
        {"type": "usb", "path": "/sys/bus/usb/devices/2-1"},
        {"type": "pci", "path": "/dev/apex_0"},
    ]
    fake.get_runtime_version = lambda: "BuildLabel(COMPILER=6.3.0,DATE=redacted), RuntimeVersion(14)"  # type: ignore[attr-defined]
    _fake_pycoral(monkeypatch, fake)
    found = list_edge_tpus()
    assert [(d.type, d.path, d.source) for d in found] == [
        ("usb", "/sys/bus/usb/devices/2-1", "pycoral"),
        ("pci", "/dev/apex_0", "pycoral"),
    ]
    assert parse_runtime_version(edgetpu.runtime_version()) == 14


@pytest.mark.simulated
def test_the_unrelated_pypi_pycoral_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_pycoral(monkeypatch, types.ModuleType("pycoral.utils.edgetpu"))
    with caplog.at_level(logging.WARNING, logger="edgekit.device.edgetpu"):
        assert edgetpu._pycoral_edgetpu() is None
    assert "unrelated PyPI package" in caplog.text


def test_sysfs_scan_finds_usb_and_pcie(tmp_path: Path) -> None:
    def usb(name: str, vendor: str, product: str, speed: str) -> None:
        folder = tmp_path / "sys/bus/usb/devices" / name
        folder.mkdir(parents=True)
        (folder / "idVendor").write_text(vendor + "\n")
        (folder / "idProduct").write_text(product + "\n")
        (folder / "speed").write_text(speed + "\n")

    usb("1-1", "1a6e", "089a", "480")
    usb("2-1", "18d1", "9302", "5000")
    usb("1-2", "046d", "0825", "480")  # a webcam
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").write_text("")
    found = scan_sysfs(tmp_path)
    assert [(d.type, d.path, d.usb_id, d.speed_mbps) for d in found] == [
        ("usb", "/sys/bus/usb/devices/1-1", "1a6e:089a", 480),
        ("usb", "/sys/bus/usb/devices/2-1", "18d1:9302", 5000),
        ("pci", "/dev/apex_0", None, None),
    ]
    assert list_edge_tpus(tmp_path) == found
    assert scan_sysfs(tmp_path / "nothing") == []


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_runtime_fallback_runs_the_manifests_cpu_model(models: tuple[Path, Path]) -> None:
    """A converted folder with both models: --device edgetpu with the CPU fallback runs model.tflite for real."""
    from edgekit.device.model import open_model
    from edgekit.model.manifest import InputSpec, Manifest, OutputSpec, Preprocess

    compiled, cpu = models
    Manifest(
        task="classify",
        input=InputSpec(32, 32),
        preprocess=Preprocess(),
        outputs=(OutputSpec("scores", (1, 5), "uint8"),),
        edgetpu_model=compiled.name,
        labels=None,
        num_classes=5,
    ).write(cpu.parent)
    loaded = open_model(cpu.parent, "edgetpu", threads=1, probe=False, fallback_cpu=True)
    np.testing.assert_array_equal(_run(loaded.interpreter), _run(make_interpreter(cpu, "cpu", 1, probe=False)))
    with pytest.raises(DeviceError, match="not installed"):
        open_model(cpu.parent, "edgetpu", threads=1, probe=False)


def _linked_folder(classifier_dir: Path, tmp_path: Path) -> Path:
    """A converted folder whose manifest links a (stand-in) Edge TPU-compiled model beside the CPU one."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(classifier_dir, folder)
    compiled_model(folder / "model.tflite", folder / "model_edgetpu.tflite")
    manifest = json.loads((folder / "edgekit.json").read_text())
    manifest["edgetpu_model"] = "model_edgetpu.tflite"
    (folder / "edgekit.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_edgekit_run_with_fallback_cpu(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    """`edgekit run --device edgetpu --fallback cpu` on a folder that links a compiled and a CPU model."""
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli

    folder = _linked_folder(classifier_dir, tmp_path)
    args = ["run", "--model", str(folder), "--source", str(video), "--frames", "3", "--device", "edgetpu"]
    result = CliRunner().invoke(cli, [*args, "--fallback", "cpu", "--stats-interval", "0"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["type"] for r in records][:3] == ["result"] * 3
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "libedgetpu.so.1 is not installed" in refused.output


@pytest.fixture
def fake_libedgetpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A STAND-IN libedgetpu built from tests/data/stand_in/fake_libedgetpu.c (needs a C compiler)."""
    import shutil
    import subprocess

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stand-in libedgetpu")
    source = Path(__file__).resolve().parents[1] / "data" / "stand_in" / "fake_libedgetpu.c"
    library = tmp_path / "libedgetpu.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    monkeypatch.setenv(edgetpu.LIBRARY_ENV, str(library))
    return library


@pytest.mark.simulated
def test_libedgetpu_c_api_enumerates_and_reports_its_version(
    fake_libedgetpu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "2")
    found = list_edge_tpus()
    assert [(d.type, d.path, d.source) for d in found] == [
        ("usb", "/sys/bus/usb/devices/2-1", "libedgetpu"),
        ("pci", "/dev/apex_0", "libedgetpu"),
    ]
    assert parse_runtime_version(edgetpu.runtime_version()) == 13


@pytest.mark.simulated
def test_installed_runtime_without_a_device(fake_libedgetpu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "0")
    with pytest.raises(DeviceError, match="is installed but no Edge TPU is attached") as err:
        load_edgetpu_delegate("edgetpu:usb")
    assert "edgekit doctor" in err.value.message
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "1")
    with pytest.raises(DeviceError, match=r"cannot open the Edge TPU .*found usb:/sys/bus/usb/devices/2-1"):
        load_edgetpu_delegate("edgetpu:usb:3")


@pytest.mark.simulated
def test_runtime_too_old_for_the_compiled_model(fake_libedgetpu: Path, models: tuple[Path, Path]) -> None:
    compiled, cpu = models  # compiled for runtime 14; the stand-in library says 13
    with pytest.raises(DeviceError, match="compiled for Edge TPU runtime 14 but libedgetpu here is runtime 13"):
        make_interpreter(compiled, "edgetpu", probe=False)
    # With the CPU fallback, `edgekit run` runs the CPU model and says why, before any delegate was loaded.
    reasons: list[str] = []
    interpreter = make_interpreter(
        compiled, "edgetpu", 1, probe=False, fallback_cpu=True, cpu_model=cpu, on_fallback=reasons.append
    )
    np.testing.assert_array_equal(_run(interpreter), _run(make_interpreter(cpu, "cpu", 1, probe=False)))
    assert len(reasons) == 1 and "upgrade libedgetpu1-std" in reasons[0] and "--min_runtime_version 13" in reasons[0]


@pytest.mark.simulated
def test_watcher_reattaches_only_when_a_new_tpu_appears() -> None:
    """Simulated enumeration: nothing, nothing, then a USB Accelerator is plugged in."""
    import threading

    from edgekit.device.edgetpu import EdgeTpu, TpuWatcher

    answers = [[], [], [], [EdgeTpu("usb", "/sys/bus/usb/devices/2-1")]]
    found = threading.Event()
    watcher = TpuWatcher(found.set, lister=lambda: answers.pop(0) if len(answers) > 1 else answers[0], first_s=0.01)
    watcher.start()
    assert found.wait(5)
    watcher.stop()
    assert watcher.checks == 3

    # A device already present (but unusable) at the start does not trigger a reload loop.
    present = [EdgeTpu("pci", "/dev/apex_0")]
    again = threading.Event()
    idle = TpuWatcher(again.set, lister=lambda: present, first_s=0.01, max_s=0.02).start()
    assert not again.wait(0.3)
    idle.stop()
    assert idle.checks >= 3


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_stats_report_the_cpu_fallback(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli

    folder = _linked_folder(classifier_dir, tmp_path)
    args = ["run", "--model", str(folder), "--source", str(video), "--frames", "2", "--device", "edgetpu:usb:0"]
    result = CliRunner().invoke(cli, [*args, "--fallback", "cpu"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    stats = [r for r in records if r["type"] == "stats"]
    assert stats and stats[-1]["device"]["active"] == "cpu" and stats[-1]["device"]["device"] == "edgetpu:usb:0"
    assert "libedgetpu.so.1 is not installed" in stats[-1]["device"]["fallback_reason"]


@pytest.mark.skipif(HAVE_LIBEDGETPU, reason="libedgetpu is installed here")
def test_preview_and_metrics_show_the_cpu_fallback(classifier_dir: Path, video: Path, tmp_path: Path) -> None:
    """After a fallback to the CPU, /api/status and edgekit_edgetpu_state say cpu-fallback, not edgetpu."""
    import json
    import socket
    import threading
    import time
    import urllib.request

    from edgekit.device import daemon

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    started: list[Any] = []
    overrides = {
        "run.model": str(_linked_folder(classifier_dir, tmp_path)),
        "run.source": str(video),
        "run.sinks": ["file:" + str(tmp_path / "out.jsonl")],
        "run.device": "edgetpu",
        "run.fallback": "cpu",
        "run.max_fps": 15.0,
        "run.stats_interval": 0.0,
        "http.listen": f"127.0.0.1:{port}",
    }
    thread = threading.Thread(target=daemon.serve, args=(None, overrides, started.append), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not started and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started, "the pipeline did not start"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as response:
            status = json.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
    finally:
        if started:
            started[-1].stop()
        thread.join(timeout=15)
    assert status["device"] == "edgetpu" and status["edgetpu"] == "cpu-fallback"
    assert 'edgekit_edgetpu_state{state="cpu-fallback"} 1.0' in metrics
    assert 'edgekit_edgetpu_state{state="edgetpu"} 0.0' in metrics
