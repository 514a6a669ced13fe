"""Exposure score of the rendered systemd units (systemd-analyze security --offline=true); target <= 2.0.

The baseline is the same unit with its hardening block cut off (what a plain Type=notify unit scores), scored in
the same run by the same systemd. Exits 1 when a unit misses the target, 2 when systemd-analyze cannot score.

    python benchmarks/service_security.py [--target 2.0]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.ops import service  # after the path set-up, so this checkout's units are scored


def score(analyze: str, unit: Path) -> tuple[float, list[str]]:
    """The overall exposure and the checks that still cost something."""
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(unit)], capture_output=True, text=True, check=False
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    if match is None:
        raise RuntimeError(f"systemd-analyze security could not score {unit.name}: {done.stderr.strip()}")
    costs = []
    for line in done.stdout.splitlines():
        if line.startswith("✗"):
            parts = line[1:].split()
            costs.append(f"{parts[0]} {parts[-1]}")
    return float(match.group(1)), costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=2.0)
    args = parser.parse_args()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("systemd-analyze is not installed", file=sys.stderr)
        return 2
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    executable = str(Path(sys.executable).parent / "edgekit")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("edgekit.service", "edgekit@.service"):
            text = service.render_unit(name, executable)
            hardened = Path(tmp) / name
            hardened.write_text(text)
            bare = Path(tmp) / "bare" / name
            bare.parent.mkdir(exist_ok=True)
            bare.write_text(text.split("# --- hardening")[0] + "[Install]\nWantedBy=multi-user.target\n")
            try:
                ours, costs = score(analyze, hardened)
                baseline, _ = score(analyze, bare)
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 2
            rows.append((name, baseline, ours, costs))
    print(f"systemd-analyze security --offline=true ({version}); lower is better, target <= {args.target}")
    print(f"{'unit':<18} {'unhardened':>10} {'edgekit':>8} {'ratio':>6}  result")
    missed = False
    for name, baseline, ours, _ in rows:
        ok = ours <= args.target
        missed |= not ok
        print(f"{name:<18} {baseline:>10.1f} {ours:>8.1f} {ours / baseline:>6.2f}  {'OK' if ok else 'MISSED'}")
    print("still exposed (kept on purpose: camera/Coral devices, remote MQTT, /proc/cpuinfo for XNNPACK):")
    for cost in rows[0][3]:
        print(f"  {cost}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
