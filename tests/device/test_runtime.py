"""The runtime module: device strings, refusing bad files before C++ sees them, crash isolation, Edge TPU checks."""

from __future__ import annotations

import os
import signal
import types
from pathlib import Path

import pytest

from edgekit.device import runtime
from edgekit.errors import DeviceError, InputError, ModelError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu", "cpu"),
        ("", "cpu"),
        ("edgetpu", "edgetpu"),
        ("edgetpu:usb", "edgetpu:usb"),
        ("edgetpu:usb:1", "edgetpu:usb:1"),
        ("edgetpu:pci:0", "edgetpu:pci:0"),
        ("usb:0", "edgetpu:usb:0"),
        ("PCI:2", "edgetpu:pci:2"),
    ],
)
def test_device_strings(text: str, expected: str) -> None:
    assert str(runtime.parse_device(text)) == expected


@pytest.mark.parametrize("text", ["gpu", "edgetpu:usb:x", "edgetpu:", "usb:-1", "edgetpu:pci:0:1"])
def test_bad_device_string_names_the_grammar(text: str) -> None:
    with pytest.raises(InputError, match=r"cpu, edgetpu, edgetpu:usb\[:N\]"):
        runtime.parse_device(text)


def test_random_bytes_are_refused_before_the_runtime(tmp_path: Path) -> None:
    bad = tmp_path / "random.tflite"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="not a TFLite model"):
        runtime.make_interpreter(bad)


def test_random_bytes_behind_a_valid_identifier(tmp_path: Path) -> None:
    bad = tmp_path / "forged.tflite"
    bad.write_bytes(b"\x00\xff\xff\x7fTFL3" + os.urandom(4096))
    with pytest.raises(ModelError, match="corrupt TFLite model"):
        runtime.make_interpreter(bad)


def test_truncated_model_is_a_model_error(tmp_path: Path, classifier_dir: Path) -> None:
    whole = (classifier_dir / "model.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match=r"cut\.tflite"):
        runtime.make_interpreter(cut)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="too short"):
        runtime.make_interpreter(empty)
    with pytest.raises(InputError, match="no such model file"):
        runtime.make_interpreter(tmp_path / "nope.tflite")


def test_interpreter_is_ready_to_invoke(classifier_dir: Path) -> None:
    interpreter = runtime.make_interpreter(classifier_dir / "model.tflite", threads=1)
    interpreter.invoke()  # tensors allocated
    assert interpreter.get_output_details()[0]["shape"].tolist() == [1, 10]


def test_a_crash_while_loading_is_contained_in_the_probe(monkeypatch: pytest.MonkeyPatch, classifier_dir: Path) -> None:
    # A model that segfaults the C++ runtime cannot be written on purpose; a runtime that segfaults on load is
    # the same thing from the parent's side. The probe forks, so the SIGSEGV lands in the child only.
    def crash(**_kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(runtime, "_runtime", types.SimpleNamespace(Interpreter=crash))
    with pytest.raises(ModelError, match=r"crashed \(SIGSEGV\)"):
        runtime._probe_in_child(classifier_dir / "model.tflite", allocate=True)


def test_the_parent_works_while_the_probe_loads_and_a_crash_is_still_reported(
    monkeypatch: pytest.MonkeyPatch, classifier_dir: Path
) -> None:
    # `meanwhile` runs in the parent while the forked child is still alive (its pid not yet reaped), and the
    # child's crash is reported after it, as without it.
    children = []

    def crash(**_kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    def meanwhile() -> None:
        children.append(os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT))  # the child, not yet reaped

    monkeypatch.setattr(runtime, "_runtime", types.SimpleNamespace(Interpreter=crash))
    with pytest.raises(ModelError, match=r"crashed \(SIGSEGV\)"):
        runtime._probe_in_child(classifier_dir / "model.tflite", allocate=True, meanwhile=meanwhile)
    assert len(children) == 1 and children[0] is not None
    with pytest.raises(ChildProcessError):  # and reaped by the probe afterwards
        os.waitpid(children[0].si_pid, os.WNOHANG)


def test_float_model_on_edgetpu_is_the_models_fault(float_model: Path) -> None:
    with pytest.raises(ModelError, match=r"input is float32, but --device edgetpu needs a uint8/int8 model"):
        runtime.make_interpreter(float_model, "edgetpu")


def test_edgetpu_goes_through_the_edgetpu_module(monkeypatch: pytest.MonkeyPatch, classifier_dir: Path) -> None:
    import sys

    asked: list[str] = []

    def load_edgetpu_delegate(device: str) -> object:
        asked.append(device)
        raise DeviceError(f"no Edge TPU found for {device}")

    fake = types.ModuleType("edgekit.device.edgetpu")
    fake.load_edgetpu_delegate = load_edgetpu_delegate  # type: ignore[attr-defined]
    fake.runtime_version = lambda: None  # type: ignore[attr-defined]  # no libedgetpu: the version is unknown
    fake.parse_runtime_version = lambda text: None  # type: ignore[attr-defined]
    fake.check_runtime = lambda path, installed: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edgekit.device.edgetpu", fake)
    with pytest.raises(DeviceError, match="no Edge TPU found for edgetpu:usb:1"):
        runtime.make_interpreter(classifier_dir / "model.tflite", "usb:1")
    assert [str(d) for d in asked] == ["edgetpu:usb:1"]  # the plan's DeviceSpec, parsed once
    # --fallback cpu: the same failure runs on the CPU instead.
    interpreter = runtime.make_interpreter(classifier_dir / "model.tflite", "edgetpu", fallback_cpu=True)
    interpreter.invoke()


# LiteRT's Delegate.__del__ touches an attribute its failed __init__ never set; Python reports that as
# "Exception ignored", which pytest turns into a warning. It is the runtime's, and harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_load_delegate_failure_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match=r"libedgetpu-does-not-exist\.so"):
        runtime.load_delegate("libedgetpu-does-not-exist.so", {"device": "usb:0"})
