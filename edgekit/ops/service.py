"""`edgekit service`: install, remove and look at the systemd unit that runs `edgekit run` on a device.

An install is computed first as a `Plan` (every file with its content, every command), then either printed
(``--dry-run``), written into another root directory (``--root``, for tests and for preparing an SD-card image;
no command runs), or carried out. So what ``--dry-run`` shows is, byte for byte, what an install writes.

The unit files ship inside the package (``edgekit/ops/units/``; the top-level ``systemd/`` folder holds the same
files for people who read the repository). Rendering changes only what differs per machine: the path of the
``edgekit`` script of the environment doing the install, the groups that exist here, and, for ``--user``, the
parts a user manager cannot do.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

from edgekit.config import Config, load_config
from edgekit.errors import ConfigError, EdgekitError, InputError
from edgekit.plan import is_live_source

SHIPPED_EXECUTABLE = "/opt/edgekit/bin/edgekit"
"""The ExecStart path in the shipped units (the README's install location); rendering replaces it."""

DEFAULT_NAME = "edgekit"
SERVICE_USER = "edgekit"
DEVICE_GROUPS = ("video", "plugdev", "apex")
"""video: cameras and dma_heap; plugdev: USB Coral (libedgetpu's udev rule); apex: PCIe/M.2 Coral."""

CREDENTIAL_FILE = "mqtt_password"
"""The MQTT password file beside the configs; the unit loads it as the systemd credential of the same name."""
SYSTEM_UNIT_DIR = PurePosixPath("/etc/systemd/system")
SYSTEM_CONFIG_DIR = PurePosixPath("/etc/edgekit")
STATE_DIR = PurePosixPath("/var/lib/edgekit")
LOGS_DIR = PurePosixPath("/var/log/edgekit")
# ProtectHome=yes makes these invisible to the service.
HIDDEN_DIRS = (PurePosixPath("/home"), PurePosixPath("/root"), PurePosixPath("/run/user"))

# A user manager cannot switch users, filter devices or build mount namespaces without privileges, so a
# --user unit drops these (and the comments above them); the seccomp-based hardening stays.
_SYSTEM_ONLY_KEYS = frozenset(
    {
        "User",
        "Group",
        "SupplementaryGroups",
        "StateDirectoryMode",
        "LogsDirectoryMode",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "ProtectProc",
        "RestrictNamespaces",
        "RemoveIPC",
        "KeyringMode",
        "PrivateIPC",
        "DevicePolicy",
        "DeviceAllow",
        "Wants",
        "After",
    }
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNSAFE_PATH = re.compile(r"[\s\"'\\%$;]")


# --- naming -------------------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """Validate a service name (the config's base name and, for several cameras, the template instance).

    Raises:
        InputError: not a plain name.
    """
    if not _NAME.fullmatch(name):
        raise InputError(f"--name {name!r}: use letters, digits, '.', '_' or '-' (at most 64), e.g. --name porch")
    return name


def unit_name(name: str) -> str:
    """``edgekit.service`` for the default name, ``edgekit@NAME.service`` (an instance of the template) else."""
    return "edgekit.service" if name == DEFAULT_NAME else f"edgekit@{name}.service"


def unit_file_name(name: str) -> str:
    """The file that defines `unit_name` (the template for instances)."""
    return "edgekit.service" if name == DEFAULT_NAME else "edgekit@.service"


def shipped_unit(file_name: str) -> str:
    """The text of a unit file shipped in the package (``edgekit.service`` or ``edgekit@.service``)."""
    return (resources.files("edgekit.ops") / "units" / file_name).read_text(encoding="utf-8")


# --- rendering ----------------------------------------------------------------------------------------------


def render_unit(
    file_name: str,
    executable: str,
    groups: Sequence[str] = DEVICE_GROUPS,
    user_mode: bool = False,
    credential: bool = True,
) -> str:
    """The unit file for this machine.

    Args:
        file_name: ``edgekit.service`` or ``edgekit@.service``.
        executable: absolute path of the ``edgekit`` script systemd runs.
        groups: the device groups that exist here (systemd refuses to start with an unknown group).
        user_mode: render for the user manager (``systemctl --user``).
        credential: the MQTT password file exists; without it the LoadCredential= line is commented out, since
            systemd fails the start (243/CREDENTIALS) when a credential file named by path is missing.

    Returns:
        The unit text.
    """
    check_executable(executable)
    text = shipped_unit(file_name).replace(SHIPPED_EXECUTABLE, executable)
    if not credential:
        text = re.sub(
            r"^(LoadCredential=mqtt_password:.*)$",
            rf"# \1\n# (no {CREDENTIAL_FILE} at install time: create it, then run edgekit service install again)",
            text,
            flags=re.MULTILINE,
        )
    if user_mode:
        return _user_unit(text)
    present = [g for g in DEVICE_GROUPS if g in groups]
    text = re.sub(
        r"^SupplementaryGroups=.*\n",
        f"SupplementaryGroups={' '.join(present)}\n" if present else "",
        text,
        flags=re.MULTILINE,
    )
    return text


def _user_unit(text: str) -> str:
    out: list[str] = [
        "# Rendered by `edgekit service install --user`. A user manager cannot sandbox devices or the file",
        "# system; install the system unit (without --user) on a device that runs unattended.",
    ]
    comments: list[str] = []
    text = text.replace(str(SYSTEM_CONFIG_DIR) + "/", "%E/edgekit/")
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(line)
            continue
        key = stripped.split("=", 1)[0] if "=" in stripped else ""
        if key in _SYSTEM_ONLY_KEYS:
            comments = []
            continue
        out.extend(comments)
        comments = []
        if key == "WantedBy":
            line = "WantedBy=default.target"
        out.append(line)
    out.extend(comments)
    return "\n".join(out[:2] + out[2 + _header_length(out[2:]) :]) + "\n"


def _header_length(lines: list[str]) -> int:
    """The shipped file's leading comment block (it describes the system unit)."""
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return n


def check_executable(executable: str) -> str:
    """An ExecStart path systemd takes literally: absolute, no spaces, quotes, '%' or '$'.

    Raises:
        InputError: it is not.
    """
    if not executable.startswith("/") or _UNSAFE_PATH.search(executable):
        raise InputError(
            f"{executable}: the edgekit script for the unit must be an absolute path without spaces, quotes, "
            "'%' or '$'; install edgekit into a venv such as /opt/edgekit"
        )
    return executable


def default_executable() -> str:
    """The ``edgekit`` script of the environment running this code (a venv's bin/, not the resolved python).

    Raises:
        InputError: there is none beside the interpreter.
    """
    candidate = Path(sys.executable).parent / "edgekit"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise InputError(
            f"no edgekit script beside {sys.executable}; install edgekit into this environment "
            "(pip install 'edgekit[device]') or pass --executable PATH"
        )
    return str(candidate)


# --- the machine ---------------------------------------------------------------------------------------------


def _etc_names(root: Path | None, file: str) -> set[str] | None:
    """Names in ``ROOT/etc/group`` or ``ROOT/etc/passwd``; None when there is no root or no such file."""
    if root is None:
        return None
    path = root / "etc" / file
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    return {line.split(":", 1)[0] for line in lines if line and not line.startswith("#")}


def existing_groups(root: Path | None = None) -> list[str]:
    """The device groups that exist (in ``ROOT/etc/group`` when there is one, else on this machine)."""
    names = _etc_names(root, "group")
    if names is not None:
        return [g for g in DEVICE_GROUPS if g in names]
    found = []
    for group in DEVICE_GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            continue
        found.append(group)
    return found


def user_exists(root: Path | None = None) -> bool:
    """Whether the ``edgekit`` account exists (in ``ROOT/etc/passwd`` for a root that has one)."""
    names = _etc_names(root, "passwd")
    if names is not None:
        return SERVICE_USER in names
    if root is not None:
        return False
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return False
    return True


def user_config_home() -> PurePosixPath:
    """$XDG_CONFIG_HOME, or ~/.config (what systemd's %E is for a user manager)."""
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    return PurePosixPath(xdg) if xdg.startswith("/") else PurePosixPath(Path.home()) / ".config"


# --- the config ------------------------------------------------------------------------------------------------


def check_service_config(config: Config, where: str, user_mode: bool = False) -> None:
    """What a config must satisfy to run as a service, beyond ``edgekit run --validate-config``.

    The service runs from its state directory as another user behind ProtectSystem=strict and ProtectHome=yes:
    relative paths would point somewhere else, homes are invisible and only the state and log directories are
    writable.

    Raises:
        ConfigError: naming the key and what to do.
    """
    run = config.run
    paths: list[tuple[str, str]] = [("run.model", run.model)]
    if run.labels:
        paths.append(("run.labels", run.labels))
    if run.source and not is_live_source(run.source):
        paths.append(("run.source", run.source))
    for key, value in paths:
        if not value:
            continue
        if not value.startswith("/"):
            raise ConfigError(
                f"{where}: key '{key}' is a relative path ({value!r}); a service does not start in your "
                "directory, so use an absolute path"
            )
        if not user_mode and any(_under(value, hidden) for hidden in HIDDEN_DIRS):
            raise ConfigError(
                f"{where}: key '{key}' is {value}, which the service cannot see (ProtectHome=yes); move it to "
                f"{STATE_DIR}/ and point '{key}' there"
            )
    for i, spec in enumerate(run.sinks):
        if not spec.startswith("file:"):
            continue
        target = spec[len("file:") :].split("?", 1)[0]
        if not target.startswith("/"):
            raise ConfigError(
                f"{where}: key 'run.sinks[{i}]' writes to a relative path ({target!r}); use an absolute one"
            )
        if not user_mode and not (_under(target, STATE_DIR) or _under(target, LOGS_DIR)):
            raise ConfigError(
                f"{where}: key 'run.sinks[{i}]' writes to {target}, which is read-only for the service "
                f"(ProtectSystem=strict); write under {STATE_DIR}/ or {LOGS_DIR}/"
            )


def _under(path: str, parent: PurePosixPath) -> bool:
    return PurePosixPath(os.path.normpath(path)).is_relative_to(parent)


def validate_config(path: Path, user_mode: bool = False) -> Config:
    """Refuse a config the service would fail on: the service checks, then ``edgekit run --validate-config``.

    The second check runs as a subprocess of this Python, exactly the command the unit's ExecStartPre runs, so a
    config that passes here starts there.

    Raises:
        ConfigError: the first error, as one line.
    """
    config = load_config(path)
    check_service_config(config, str(path), user_mode)
    command = [sys.executable, "-m", "edgekit", "run", "--validate-config", "--config", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error: ")]
        detail = errors[-1][len("Error: ") :] if errors else (lines[-1] if lines else f"exit {done.returncode}")
        raise ConfigError(f"{path}: does not validate: {detail}")
    return config


# --- plans ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileChange:
    """A file to write (``content``) or to remove (``content is None``), at its path on the target system."""

    path: PurePosixPath
    content: bytes | None
    mode: int = 0o644


@dataclass(frozen=True)
class Plan:
    """Everything an install or uninstall does, in order: files first, then commands."""

    action: str
    unit: str
    files: tuple[FileChange, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """The dry-run text: each file with its full content, then each command."""
        out: list[str] = []
        for change in self.files:
            if change.content is None:
                out.append(f"--- remove {change.path}")
                continue
            text = change.content.decode("utf-8")
            out.append(f"--- write {change.path} (mode {change.mode:04o})")
            out.append(text[:-1] if text.endswith("\n") else text)
            out.append("--- end")
        out.extend("$ " + shlex.join(command) for command in self.commands)
        out.extend(f"# {note}" for note in self.notes)
        return "\n".join(out) + "\n"


def _systemctl(user_mode: bool, *args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args) if user_mode else ("systemctl", *args)


def plan_install(
    config_path: Path | None,
    name: str = DEFAULT_NAME,
    user_mode: bool = False,
    root: Path | None = None,
    executable: str | None = None,
) -> Plan:
    """What installing the service would do (nothing is validated or changed here; see `install`).

    Args:
        config_path: the config to copy; None keeps the one already installed under that name.
        name: the config and instance name (``edgekit`` -> edgekit.service, else edgekit@NAME.service).
        user_mode: install for ``systemctl --user``.
        root: the target system's root directory (None: this machine).
        executable: the edgekit script for ExecStart (default: the one beside this Python).

    Returns:
        The plan.
    """
    check_name(name)
    exe = check_executable(executable) if executable else default_executable()
    if not user_mode and any(_under(exe, hidden) for hidden in HIDDEN_DIRS):
        raise InputError(
            f"{exe}: the service cannot run edgekit from a home directory (ProtectHome=yes hides it); install it "
            "under /opt: sudo python3 -m venv --system-site-packages /opt/edgekit && "
            "sudo /opt/edgekit/bin/pip install 'edgekit[device,pi]', then run /opt/edgekit/bin/edgekit service install"
        )
    unit = unit_name(name)
    config_dir = config_dir_for(user_mode)
    unit_dir = user_config_home() / "systemd" / "user" if user_mode else SYSTEM_UNIT_DIR
    target_config = config_dir / f"{name}.toml"
    unit_path = unit_dir / unit_file_name(name)
    files: list[FileChange] = []
    if config_path is None:
        if not _on_target(root, target_config).is_file():
            raise InputError(f"no config installed at {target_config}; pass --config FILE")
    else:
        try:
            files.append(FileChange(target_config, Path(config_path).read_bytes(), 0o644))
        except OSError as exc:
            raise ConfigError(f"{config_path}: cannot read config file ({exc.strerror})") from None
    groups = [] if user_mode else existing_groups(root)
    credential = _on_target(root, config_dir / CREDENTIAL_FILE).is_file()
    content = render_unit(unit_file_name(name), exe, groups, user_mode, credential).encode()
    files.insert(0, FileChange(unit_path, content, 0o644))
    reinstall = _on_target(root, unit_path).exists()

    commands: list[tuple[str, ...]] = []
    notes: list[str] = []
    if not user_mode and not user_exists(root):
        useradd = ["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR), "--no-create-home"]
        useradd += ["--shell", "/usr/sbin/nologin", "--comment", "edgekit camera service"]
        if groups:
            useradd += ["--groups", ",".join(groups)]
        commands.append((*useradd, SERVICE_USER))
    commands.append(_systemctl(user_mode, "daemon-reload"))
    commands.append(_systemctl(user_mode, "enable", "--now", unit))
    if reinstall:
        # enable --now leaves a running service on its old config and unit.
        commands.append(_systemctl(user_mode, "restart", unit))
    if not credential:
        notes.append(
            f"no MQTT password: {config_dir / CREDENTIAL_FILE} does not exist, so the unit loads none; to use one, "
            "create that file (mode 0600) and run edgekit service install again"
        )
    if user_mode:
        notes.append(f"to start at boot without a login: loginctl enable-linger {pwd.getpwuid(os.getuid()).pw_name}")
    if not user_mode and "video" not in groups:
        notes.append("no 'video' group here: the service will not be able to open cameras")
    return Plan("install", unit, tuple(files), tuple(commands), tuple(notes))


def plan_uninstall(
    name: str = DEFAULT_NAME, user_mode: bool = False, root: Path | None = None, purge: bool = False
) -> Plan:
    """What removing the service would do: stop and disable it, remove its unit (and config with ``purge``).

    The template ``edgekit@.service`` stays while other instances still have a config; the ``edgekit`` account
    and the state directory stay (the journal and results may still be wanted).
    """
    check_name(name)
    unit = unit_name(name)
    config_dir = config_dir_for(user_mode)
    unit_dir = user_config_home() / "systemd" / "user" if user_mode else SYSTEM_UNIT_DIR
    files: list[FileChange] = []
    unit_path = unit_dir / unit_file_name(name)
    others = [p for p in _on_target(root, config_dir).glob("*.toml") if p.stem not in (name, DEFAULT_NAME)]
    if (name == DEFAULT_NAME or not others) and _on_target(root, unit_path).exists():
        files.append(FileChange(unit_path, None))
    config = config_dir / f"{name}.toml"
    if purge and _on_target(root, config).exists():
        files.append(FileChange(config, None))
    commands = [_systemctl(user_mode, "disable", "--now", unit), _systemctl(user_mode, "daemon-reload")]
    # Files are removed after `disable`: apply() runs commands first for an uninstall.
    return Plan("uninstall", unit, tuple(files), tuple(commands))


def config_dir_for(user_mode: bool) -> PurePosixPath:
    """Where installed configs live: /etc/edgekit, or ~/.config/edgekit for a user service."""
    return user_config_home() / "edgekit" if user_mode else SYSTEM_CONFIG_DIR


def _on_target(root: Path | None, path: PurePosixPath) -> Path:
    return Path(path) if root is None else root / path.relative_to("/")


# --- carrying a plan out --------------------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(command), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise EdgekitError(
            f"{command[0]} not found: this machine does not run systemd; use --root DIR to write the files only"
        ) from None


def apply(plan: Plan, root: Path | None = None, runner: Runner = _run) -> list[str]:
    """Carry out a plan: write or remove its files (into ``root`` when given) and, without a root, run its commands.

    Files are written to a temporary name and renamed, so a unit or config is never half-written.

    Returns:
        One line per step done (for the CLI to print).

    Raises:
        EdgekitError: a command failed (its stderr's last line is in the message).
    """
    done: list[str] = []

    def run_commands() -> None:
        for command in plan.commands:
            shown = shlex.join(command)
            if root is not None:
                done.append(f"not run (--root): {shown}")
                continue
            result = runner(command)
            if result.returncode != 0:
                why = (result.stderr or result.stdout or "").strip().splitlines()
                raise EdgekitError(f"{shown} failed (exit {result.returncode}): {why[-1] if why else 'no output'}")
            done.append(f"ran: {shown}")

    if plan.action == "uninstall":
        run_commands()
    for change in plan.files:
        target = _on_target(root, change.path)
        if change.content is None:
            target.unlink(missing_ok=True)
            done.append(f"removed {change.path}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.edgekit-tmp")
        tmp.write_bytes(change.content)
        tmp.chmod(change.mode)
        os.replace(tmp, target)
        done.append(f"wrote {change.path}")
    if plan.action == "install":
        run_commands()
    return done


def install(
    config_path: Path | None,
    name: str = DEFAULT_NAME,
    user_mode: bool = False,
    root: Path | None = None,
    executable: str | None = None,
    dry_run: bool = False,
) -> tuple[Plan, list[str]]:
    """Validate the config, then install the service (or, with ``dry_run``, only plan it).

    Args:
        config_path: the config to install (None: keep the installed one).
        name: config and instance name.
        user_mode: ``systemctl --user``.
        root: write into this root directory instead of the machine, and run no command.
        executable: the edgekit script for ExecStart.
        dry_run: change nothing.

    Returns:
        The plan, and the steps done (empty for a dry run).

    Raises:
        ConfigError: the config does not validate (nothing is written).
        InputError: a system install without root privileges, or a bad name or path.
    """
    plan = plan_install(config_path, name, user_mode, root, executable)
    installed = config_dir_for(user_mode) / f"{name}.toml"
    config = validate_config(Path(config_path) if config_path else _on_target(root, installed), user_mode)
    if any(spec in ("stdout", "-") for spec in config.run.sinks):
        note = "results go to stdout, i.e. the journal (one line per frame); a camera left running for months "
        note += "is better served by an mqtt:// or file: sink"
        plan = dataclasses.replace(plan, notes=(*plan.notes, note))
    if dry_run:
        return plan, []
    if root is None and not user_mode and os.geteuid() != 0:
        raise InputError("installing a system service needs root: run it with sudo, or pass --user or --dry-run")
    return plan, apply(plan, root)


def uninstall(
    name: str = DEFAULT_NAME,
    user_mode: bool = False,
    root: Path | None = None,
    purge: bool = False,
    dry_run: bool = False,
) -> tuple[Plan, list[str]]:
    """Stop, disable and remove the service (see `plan_uninstall`).

    Returns:
        The plan, and the steps done (empty for a dry run).
    """
    plan = plan_uninstall(name, user_mode, root, purge)
    if dry_run:
        return plan, []
    if root is None and not user_mode and os.geteuid() != 0:
        raise InputError("removing a system service needs root: run it with sudo, or pass --user or --dry-run")
    return plan, apply(plan, root)


def status_command(name: str = DEFAULT_NAME, user_mode: bool = False) -> list[str]:
    """``systemctl status`` for the service (the CLI runs it and passes its exit code on)."""
    return list(_systemctl(user_mode, "status", "--no-pager", "--full", unit_name(check_name(name))))


def logs_command(name: str = DEFAULT_NAME, user_mode: bool = False, lines: int = 50, follow: bool = False) -> list[str]:
    """``journalctl`` for the service's messages (the CLI runs it and passes its exit code on)."""
    unit = unit_name(check_name(name))
    command = ["journalctl", "--user-unit" if user_mode else "--unit", unit, "--lines", str(lines), "--no-pager"]
    return [*command, "--follow"] if follow else command


def run_tool(command: Sequence[str]) -> int:
    """Run systemctl/journalctl attached to the terminal.

    Returns:
        Its exit code.
    """
    try:
        return subprocess.call(list(command))
    except FileNotFoundError:
        raise EdgekitError(f"{command[0]} not found: this machine does not run systemd") from None
