#!/usr/bin/env bash
# `make test-arm64`, part 1: an emulated Raspberry Pi OS userland (Debian bookworm arm64, CPython 3.11) with the
# pinned aarch64 wheels of edgekit[device], cached; then this checkout's own wheel beside it, fresh every run.
#
#   tests/arm64/prepare.sh WORK     ->  WORK/env (shell variables for the tests), WORK/bin/python3 (emulated)
#
# The cache (EDGEKIT_ARM64_CACHE, default ~/.cache/edgekit-arm64) is keyed by this script and the constraints
# file: a change to either builds a new root. Needs root (debootstrap) and qemu-user-static; registers nothing
# with binfmt_misc: every aarch64 process is started through qemu-aarch64-static explicitly.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${1:?usage: prepare.sh WORK}
host_python=${HOST_PYTHON:-$repo/.venv/bin/python}
cache=${EDGEKIT_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgekit-arm64}
constraints=$here/constraints-aarch64.txt
suite=bookworm
qemu=$(command -v qemu-aarch64-static) || { echo "make test-arm64 needs qemu-user-static (apt-get install qemu-user-static)" >&2; exit 1; }
# Raspberry Pi OS bookworm's Python; pip picks aarch64 wheels for it without running anything. The 2.x wheels of
# ai-edge-litert carry only manylinux_2_27: without that tag pip silently falls back to 1.4.0.
pip_target=(--only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux_2_27_aarch64
            --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64)
key=$(cat "$0" "$constraints" | sha256sum | cut -c1-16)
root=$cache/$key/root

debian_mirror() {
    # The Debian archive this machine's apt already uses (one-line .list or deb822 .sources): no host name here.
    "$host_python" - "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/* <<'PY'
import sys
from pathlib import Path

suite, *files = sys.argv[1:]
for name in files:
    path = Path(name)
    if not path.is_file() or path.suffix not in (".list", ".sources"):
        continue
    text = path.read_text()
    if path.suffix == ".list":
        for line in text.splitlines():
            words = [w for w in line.split("#")[0].split() if not w.startswith("[")]
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                sys.exit(print(words[1]))
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                fields[k.strip()] = v.split()
        if "deb" in fields.get("Types", []) and suite in fields.get("Suites", []) and fields.get("URIs"):
            sys.exit(print(fields["URIs"][0]))
sys.exit(f"no Debian {suite} mirror in this machine's apt sources")
PY
}

if [ ! -x "$root/usr/bin/python3.11" ]; then
    [ "$(id -u)" = 0 ] || { echo "building the arm64 root needs root (debootstrap); it is cached in $cache" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "make test-arm64 needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
    echo "arm64 root: building $root (Debian $suite, once per constraints file)"
    mkdir -p "$cache"
    build=$(mktemp -d "$cache/build.XXXXXX")
    # --foreign: only download and unpack, run nothing (the second stage would need binfmt_misc).
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libpython3.11 \
        "$suite" "$build/root" "$(debian_mirror)" >"$build/debootstrap.log" 2>&1 \
        || { tail -20 "$build/debootstrap.log" >&2; exit 1; }
    # The first stage unpacks only the base system; python3 and its libraries lie here as .debs.
    for deb in "$build"/root/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$build/root"; done
    rm -f "$build"/root/var/cache/apt/archives/*.deb
    "$host_python" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target "$build/root/opt/edgekit-deps" \
        "${pip_target[@]}" -r "$constraints"
    # For the resolver check below: the same wheels, offline.
    "$host_python" -m pip download --quiet --disable-pip-version-check --dest "$build/wheels" --no-deps \
        "${pip_target[@]}" -r "$constraints"
    # Roots of older constraints go (a converted model, mobilenet_v2-KEY, stays).
    find "$cache" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9a-f]{16}' -exec rm -rf {} +
    mkdir -p "$cache/$key"
    mv "$build/root" "$build/wheels" "$cache/$key/"
    rm -rf "$build"
fi

# LiteRT's CPU detection reads /proc/cpuinfo, which would be the host's x86 one and crash allocate_tensors();
# qemu's -L serves this file instead: Cortex-A72 cores (a Raspberry Pi 4's), as many as qemu can run at once.
mkdir -p "$root/proc"
for ((i = 0; i < $(nproc); i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n' "$i"
    printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done >"$root/proc/cpuinfo"

# This checkout, as a Pi gets it: its wheel, installed next to (not into) the cached dependencies.
rm -rf "$work"
mkdir -p "$work/bin" "$work/wheel"
"$host_python" -m pip wheel --quiet --disable-pip-version-check --no-deps \
    --wheel-dir "$work/wheel" "$repo" >/dev/null
wheel=$(ls "$work"/wheel/edgekit-*.whl)
"$host_python" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-deps --target "$work/app" "$wheel"
# The wheel's own requirements for [device] must resolve to exactly the pinned set (offline, from those wheels).
"$host_python" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --dry-run --ignore-installed --no-index \
    --find-links "$cache/$key/wheels" --find-links "$work/wheel" -c "$constraints" "${pip_target[@]}" \
    --target "$work/dry" --report "$work/resolved.json" "edgekit[device]"

# The emulated python3, on an emulated Cortex-A72 (a Pi 4's core, as in the cpuinfo above): qemu's default CPU
# offers extensions an A72 lacks, and LiteRT's XNNPACK then picks kernels that gave wrong scores (top-1 changed).
# Started with -0 so that sys.executable is this script: a subprocess of sys.executable
# (an x86 kernel cannot exec an aarch64 binary without binfmt_misc) comes back through qemu too.
cat >"$work/bin/python3" <<SH
#!/bin/sh
export PYTHONPATH="$work/app:/opt/edgekit-deps" PYTHONDONTWRITEBYTECODE=1
exec "$qemu" -cpu cortex-a72 -L "$root" -0 "\$0" "$root/usr/bin/python3.11" "\$@"
SH
chmod +x "$work/bin/python3"
printf 'ROOT=%s\nPYTHON=%s\nWHEEL=%s\nRESOLVED=%s\n' "$root" "$work/bin/python3" "$wheel" "$work/resolved.json" >"$work/env"
echo "arm64 root: $root; edgekit wheel: $(basename "$wheel")"
