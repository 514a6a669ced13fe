"""Run a command under the seccomp rules systemd uses for MemoryDenyWriteExecute= and RestrictAddressFamilies=.

systemd is not PID 1 here, so the tests cannot start the unit; this applies the same kernel filters with
libseccomp (the library systemd uses) and then execs the command, so the real edgekit runs under them.

    python -m tests.ops.sandbox [--mdwe] [--deny-family N ...] [--allow @set ...] [--deny @set ...] -- COMMAND...

--mdwe mirrors systemd's seccomp_memory_deny_write_execute(): EPERM for mmap() asking for PROT_WRITE|PROT_EXEC,
mprotect()/pkey_mprotect() adding PROT_EXEC, and shmat() with SHM_EXEC. --deny-family N makes socket(N, ...)
fail with EAFNOSUPPORT, as RestrictAddressFamilies= does for a family not in its list. --allow/--deny build
SystemCallFilter=@allow... followed by SystemCallFilter=~@deny... with SystemCallErrorNumber=EPERM: every system
call outside the allowed sets (expanded by `systemd-analyze syscall-filter`, so the sets are this systemd's) and
inside the denied ones fails with EPERM.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import mmap
import os
import subprocess
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
SHM_EXEC = 0o100000


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise OSError("libseccomp is not installed")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
    ]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall set such as ``@system-service``, nested sets included."""
    seen = set() if seen is None else seen
    seen.add(group)
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        if item.startswith("@"):
            if item not in seen:
                calls |= expand(item, seen)
        else:
            calls.add(item)
    return calls


def apply_syscall_filter(allow: list[str], deny: list[str]) -> int:
    """Allow-list filter (EPERM for the rest), as systemd builds it; returns how many calls are allowed."""
    lib = _library()
    allowed = set().union(*(expand(g) for g in allow)) - set().union(*(expand(g) for g in deny))
    ctx = lib.seccomp_init(_errno_action(errno.EPERM))
    count = 0
    for name in sorted(allowed):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == -1:  # not a system call on this architecture
            continue
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, None) == 0:
            count += 1
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")
    return count


def apply(mdwe: bool, deny_families: list[int]) -> None:
    """Install the filter on this process (inherited across exec)."""
    lib = _library()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)

    def rule(action: int, syscall: str, arg: int, op: int, a: int, b: int = 0) -> None:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        cmp = ArgCmp(arg, op, a, b)
        rc = lib.seccomp_rule_add_array(ctx, action, number, 1, ctypes.byref(cmp))
        if rc < 0:
            raise OSError(-rc, f"seccomp rule for {syscall}")

    eperm = _errno_action(errno.EPERM)
    if mdwe:
        wx = mmap.PROT_WRITE | mmap.PROT_EXEC
        rule(eperm, "mmap", 2, SCMP_CMP_MASKED_EQ, wx, wx)
        rule(eperm, "mprotect", 2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC)
        rule(eperm, "pkey_mprotect", 2, SCMP_CMP_MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC)
        rule(eperm, "shmat", 2, SCMP_CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC)
    for family in deny_families:
        rule(_errno_action(errno.EAFNOSUPPORT), "socket", 0, SCMP_CMP_EQ, family)
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mdwe", action="store_true")
    parser.add_argument("--deny-family", type=int, action="append", default=[])
    parser.add_argument("--allow", action="append", default=[])
    parser.add_argument("--deny", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    apply(args.mdwe, args.deny_family)
    if args.allow:
        apply_syscall_filter(args.allow, args.deny)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
