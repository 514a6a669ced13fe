"""The device side must run on a Pi without TensorFlow: importing it must not pull TensorFlow in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def _modules_after_import(code: str) -> set[str]:
    # A fresh interpreter: this test process may already hold TensorFlow from the converter tests.
    probe = textwrap.dedent(code) + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_cli_and_every_device_module_import_without_tensorflow() -> None:
    loaded = _modules_after_import(
        """
        import importlib, pkgutil
        import edgekit.cli, edgekit.device, edgekit.model, edgekit.ops
        for pkg in (edgekit.device, edgekit.model, edgekit.ops):
            for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(info.name)
        """
    )
    assert "edgekit.device" in loaded  # the probe really imported the device side
    heavy = sorted(m for m in loaded if m.split(".")[0] in {"tensorflow", "keras", "tf_keras"})
    assert not heavy, f"device side imported {heavy[:5]}"


def test_probe_detects_tensorflow_when_it_is_imported() -> None:
    # Guards the guard: the same probe does see TensorFlow when something imports it.
    loaded = _modules_after_import("import tensorflow")
    assert "tensorflow" in loaded
