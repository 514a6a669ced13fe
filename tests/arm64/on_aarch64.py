"""Runs inside the emulated Pi: refuse unless this process is aarch64, then run the wheel's `edgekit` or a script.

python3 on_aarch64.py edgekit ARGS...      the `edgekit` console script the installed wheel declares
python3 on_aarch64.py SCRIPT.py ARGS...    a script of tests/arm64 (it imports the installed edgekit)
"""

from __future__ import annotations

import platform
import runpy
import sys
from importlib.metadata import entry_points

if platform.machine() != "aarch64":
    sys.exit(f"on_aarch64.py: this process runs on {platform.machine()}, not aarch64: the emulation is not in use")
what, *args = sys.argv[1:]
sys.argv = [what, *args]
if what == "edgekit":
    (script,) = entry_points(group="console_scripts", name="edgekit")
    sys.exit(script.load()())
runpy.run_path(what, run_name="__main__")
