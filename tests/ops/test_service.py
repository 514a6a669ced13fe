"""`edgekit service`: shipped and rendered units pass systemd-analyze, dry-run equals a real install into a root."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.errors import ConfigError, InputError
from edgekit.ops import service
from tests.conftest import REPO

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
EXECUTABLE = str(Path(sys.executable).parent / "edgekit")
UNITS = ("edgekit.service", "edgekit@.service")


def _offline_security_supported() -> bool:
    if ANALYZE is None:
        return False
    done = subprocess.run([ANALYZE, "security", "--help"], capture_output=True, text=True, check=False)
    return "--offline" in done.stdout


def _verify(path: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", *flags, str(path)], capture_output=True, text=True, env=env, check=False)


def _exposure(path: Path) -> float:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(path)], capture_output=True, text=True, check=False
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@pytest.fixture
def config_file(tmp_path: Path, service_model: Path, data_dir: Path) -> Path:
    path = tmp_path / "porch.toml"
    video = data_dir / "video" / "Megamind.avi"
    path.write_text(f'# the porch camera\n[run]\nmodel = "{service_model}"\nsource = "{video}"\ntop_k = 2\n')
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A target root with an /etc/group that has video and plugdev but no apex (no PCIe Coral)."""
    target = tmp_path / "root"
    (target / "etc").mkdir(parents=True)
    (target / "etc" / "group").write_text("root:x:0:\nvideo:x:44:\nplugdev:x:46:\n")
    return target


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- the shipped units ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNITS)
def test_the_repository_copy_equals_the_packaged_unit(name: str) -> None:
    assert (REPO / "systemd" / name).read_text() == service.shipped_unit(name)


@pytest.mark.parametrize("name", UNITS)
def test_rendering_changes_only_the_executable(name: str) -> None:
    """So verifying a rendered unit verifies the shipped one (whose /opt/edgekit does not exist here)."""
    shipped = service.shipped_unit(name)
    assert service.render_unit(name, service.SHIPPED_EXECUTABLE) == shipped
    assert service.render_unit(name, EXECUTABLE) == shipped.replace(service.SHIPPED_EXECUTABLE, EXECUTABLE)


def test_single_and_template_units_are_hardened_alike() -> None:
    def service_lines(text: str) -> list[str]:
        body = text.split("[Service]", 1)[1]
        return [
            line
            for line in body.splitlines()
            if line and not line.startswith("#") and "%i" not in line and "edgekit.toml" not in line
        ]

    single, template = (service.shipped_unit(n) for n in UNITS)
    assert service_lines(single) == service_lines(template)
    assert "/etc/edgekit/%i.toml" in template and "/etc/edgekit/edgekit.toml" in single


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
@pytest.mark.parametrize("credential", [True, False])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, name: str, credential: bool) -> None:
    unit = tmp_path / name
    unit.write_text(service.render_unit(name, EXECUTABLE, service.existing_groups(), credential=credential))
    done = _verify(unit)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_the_shipped_units_pass_verify_as_they_are(tmp_path: Path, name: str) -> None:
    """Byte for byte, in a root that has /opt/edgekit/bin/edgekit, /bin/kill and the targets the units name."""
    targets = ["sysinit.target", "basic.target", "shutdown.target", "multi-user.target", "network-online.target"]
    host = next((d for d in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")) if d.is_dir()), None)
    if host is None or not all((host / t).exists() for t in targets) or not Path("/bin/kill").exists():
        pytest.skip("this machine has no systemd unit directory to borrow the basic targets from")
    root = tmp_path / "root"
    for sub in ("opt/edgekit/bin", "bin", "lib/systemd/system", "etc/systemd/system"):
        (root / sub).mkdir(parents=True)
    for target in targets:
        shutil.copy(host / target, root / "lib/systemd/system" / target)
    shutil.copy("/bin/kill", root / "bin" / "kill")
    fake = root / "opt/edgekit/bin/edgekit"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = root / "etc/systemd/system" / name
    shutil.copy(REPO / "systemd" / name, unit)
    done = _verify(unit, f"--root={root}")
    assert (done.returncode, done.stderr) == (0, "")
    fake.unlink()  # the check is real: without the executable, verify fails
    assert _verify(unit, f"--root={root}").returncode != 0


@needs_analyze
def test_the_user_unit_passes_verify_for_a_user_manager(tmp_path: Path) -> None:
    unit = tmp_path / "edgekit@.service"
    text = service.render_unit("edgekit@.service", EXECUTABLE, user_mode=True)
    assert "User=" not in text and "DeviceAllow" not in text and "WantedBy=default.target" in text
    assert "--config %E/edgekit/%i.toml" in text and "MemoryDenyWriteExecute=yes" in text
    assert "SupplementaryGroups" not in text and "video:" not in text  # the groups comment went with the key
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = _verify(unit, "--user", env={"XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not _offline_security_supported(), reason="this systemd-analyze has no security --offline")
@pytest.mark.parametrize("name", UNITS)
def test_exposure_score_is_at_most_2(tmp_path: Path, name: str) -> None:
    unit = tmp_path / name
    unit.write_text(service.render_unit(name, EXECUTABLE))
    score = _exposure(unit)
    assert score <= 2.0, f"{name}: exposure {score}"
    # The score is worth something: the same unit without its hardening block scores far worse.
    bare = tmp_path / "bare" / name
    bare.parent.mkdir()
    text = unit.read_text()
    bare.write_text(text.split("# --- hardening")[0] + "[Install]\nWantedBy=multi-user.target\n")
    assert _exposure(bare) > 5.0


def test_missing_groups_are_dropped_from_the_unit() -> None:
    text = service.render_unit("edgekit.service", EXECUTABLE, ["video"])
    assert "\nSupplementaryGroups=video\n" in text
    assert "SupplementaryGroups" not in service.render_unit("edgekit.service", EXECUTABLE, [])


def test_unsafe_executable_paths_are_refused() -> None:
    for bad in ("edgekit", "/opt/my tools/edgekit", "/opt/100%/edgekit", "/opt/$HOME/edgekit"):
        with pytest.raises(InputError, match="absolute path without spaces"):
            service.render_unit("edgekit.service", bad)


# --- install ----------------------------------------------------------------------------------------------------


def _blocks(text: str) -> dict[str, str]:
    """The files of a dry-run listing: path -> content."""
    files = {}
    for match in re.finditer(r"^--- write (\S+) \(mode 0644\)\n(.*?)^--- end$", text, re.MULTILINE | re.DOTALL):
        files[match.group(1)] = match.group(2)
    return files


def test_dry_run_shows_exactly_what_an_install_into_a_root_writes(config_file: Path, root: Path) -> None:
    args = ["service", "install", "--config", str(config_file), "--name", "porch", "--executable", EXECUTABLE]
    code, dry, _ = _invoke(*args, "--dry-run", "--root", str(root))
    assert code == 0
    assert list(root.rglob("*.service")) == []  # a dry run writes nothing
    files = _blocks(dry)
    assert sorted(files) == ["/etc/edgekit/porch.toml", "/etc/systemd/system/edgekit@.service"]
    commands = [line[2:] for line in dry.splitlines() if line.startswith("$ ")]
    assert commands == [
        "useradd --system --user-group --home-dir /var/lib/edgekit --no-create-home --shell /usr/sbin/nologin "
        "--comment 'edgekit camera service' --groups video,plugdev edgekit",
        "systemctl daemon-reload",
        "systemctl enable --now edgekit@porch.service",
    ]

    code, out, _ = _invoke(*args, "--root", str(root))
    assert code == 0, out
    for path, content in files.items():
        assert (root / path.lstrip("/")).read_text() == content
    assert (root / "etc/edgekit/porch.toml").read_bytes() == config_file.read_bytes()  # comments kept
    unit = (root / "etc/systemd/system/edgekit@.service").read_text()
    assert "\nSupplementaryGroups=video plugdev\n" in unit  # no apex group in this root
    assert f"ExecStart={EXECUTABLE} run --config /etc/edgekit/%i.toml" in unit
    assert "not run (--root): systemctl enable --now edgekit@porch.service" in out
    assert "results go to stdout, i.e. the journal" in _invoke(*args, "--dry-run")[1]  # the default sink
    # No password file in this root: systemd would refuse to start with the credential line, so it is off.
    assert "\n# LoadCredential=mqtt_password:/etc/edgekit/mqtt_password\n" in unit
    assert "\nLoadCredential=" not in unit


def test_the_mqtt_password_credential_is_loaded_when_its_file_exists(config_file: Path, root: Path) -> None:
    (root / "etc/edgekit").mkdir(parents=True)
    (root / "etc/edgekit/mqtt_password").write_text("s3cret\n")
    plan, _ = service.install(config_file, root=root, executable=EXECUTABLE)
    unit = (root / "etc/systemd/system/edgekit.service").read_text()
    assert "\nLoadCredential=mqtt_password:/etc/edgekit/mqtt_password\n" in unit
    assert not any("MQTT password" in note for note in plan.notes)
    assert "s3cret" not in unit
    assert not list(root.rglob(".*edgekit-tmp"))


def test_reinstall_restarts_and_an_existing_user_is_kept(config_file: Path, root: Path) -> None:
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nedgekit:x:998:998::/var/lib/edgekit:/bin/false\n")
    service.install(config_file, "porch", root=root, executable=EXECUTABLE)
    plan = service.plan_install(config_file, "porch", root=root, executable=EXECUTABLE)
    assert [c[0] for c in plan.commands] == ["systemctl", "systemctl", "systemctl"]
    assert plan.commands[-1] == ("systemctl", "restart", "edgekit@porch.service")


def test_the_default_name_installs_the_single_unit(config_file: Path, root: Path) -> None:
    plan, _ = service.install(config_file, root=root, executable=EXECUTABLE)
    assert plan.unit == "edgekit.service"
    assert (root / "etc/systemd/system/edgekit.service").read_text().count("--config /etc/edgekit/edgekit.toml") == 2
    # Installing again without --config keeps the installed config.
    again = service.plan_install(None, root=root, executable=EXECUTABLE)
    assert [str(f.path) for f in again.files] == ["/etc/systemd/system/edgekit.service"]


def test_a_config_that_does_not_validate_is_refused_and_nothing_is_written(tmp_path: Path, root: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[run]\nmodel = "{tmp_path}/no-such-model"\nsource = "0"\n')
    code, out, err = _invoke(
        "service", "install", "--config", str(bad), "--root", str(root), "--executable", EXECUTABLE
    )
    assert code == 2
    assert err == f"Error: {bad}: does not validate: {tmp_path}/no-such-model: no such model file\n"
    assert out == ""
    assert not (root / "etc" / "systemd").exists() and not (root / "etc" / "edgekit").exists()

    typo = tmp_path / "typo.toml"
    typo.write_text('[run]\nmodle = "/x"\n')
    code, _, err = _invoke("service", "install", "--config", str(typo), "--dry-run", "--executable", EXECUTABLE)
    assert code == 2 and "unknown key 'run.modle'" in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('model = "models/cls"', "key 'run.model' is a relative path ('models/cls')"),
        ('model = "/home/pi/cls"', "key 'run.model' is /home/pi/cls, which the service cannot see (ProtectHome=yes)"),
        ('model = "/srv/cls"\nlabels = "/root/labels.txt"', "key 'run.labels' is /root/labels.txt"),
        ('model = "/srv/cls"\nsource = "clips/a.mp4"', "key 'run.source' is a relative path"),
        ('model = "/srv/cls"\nsinks = ["file:/srv/out.jsonl"]', "read-only for the service (ProtectSystem=strict)"),
    ],
)
def test_service_specific_config_problems_name_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[run]\n{body}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        service.validate_config(path)


def test_service_checks_allow_cameras_streams_and_state_dir_sinks(tmp_path: Path) -> None:
    from edgekit.config import load_config

    path = tmp_path / "c.toml"
    for source in ("picamera2", "picamera2:1", "/dev/video0", "0", "rtsp://cam.local/stream"):
        path.write_text(f'[run]\nmodel = "/srv/cls"\nsource = "{source}"\nsinks = ["file:/var/lib/edgekit/r.jsonl"]\n')
        service.check_service_config(load_config(path), str(path))
    # A user service sees the home directory.
    path.write_text('[run]\nmodel = "/home/pi/cls"\nsinks = ["file:/home/pi/out.jsonl"]\n')
    service.check_service_config(load_config(path), str(path), user_mode=True)


def test_user_install_goes_to_the_config_home(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/pi/.config")
    plan = service.plan_install(config_file, "porch", user_mode=True, root=tmp_path / "r", executable=EXECUTABLE)
    assert [str(f.path) for f in plan.files] == [
        "/home/pi/.config/systemd/user/edgekit@.service",
        "/home/pi/.config/edgekit/porch.toml",
    ]
    assert plan.commands == (
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "edgekit@porch.service"),
    )
    assert any("loginctl enable-linger" in note for note in plan.notes)


def test_bad_names_and_missing_config(root: Path) -> None:
    code, _, err = _invoke("service", "install", "--name", "../etc", "--root", str(root), "--executable", EXECUTABLE)
    assert code == 2 and err.startswith("Error: --name '../etc': use letters, digits")
    code, _, err = _invoke("service", "install", "--root", str(root), "--executable", EXECUTABLE)
    assert (code, err) == (2, "Error: no config installed at /etc/edgekit/edgekit.toml; pass --config FILE\n")


def test_an_edgekit_in_a_home_directory_is_refused_for_a_system_service(config_file: Path, root: Path) -> None:
    with pytest.raises(InputError, match=r"/home/pi/edgekit/bin/edgekit: the service cannot run edgekit from a home"):
        service.plan_install(config_file, root=root, executable="/home/pi/edgekit/bin/edgekit")


# --- uninstall, status, logs -------------------------------------------------------------------------------------


def test_uninstall_keeps_the_template_while_other_cameras_use_it(config_file: Path, root: Path) -> None:
    service.install(config_file, "porch", root=root, executable=EXECUTABLE)
    service.install(config_file, "garage", root=root, executable=EXECUTABLE)
    template = root / "etc/systemd/system/edgekit@.service"

    code, dry, _ = _invoke("service", "uninstall", "--name", "porch", "--root", str(root), "--dry-run")
    assert code == 0 and "--- remove" not in dry
    assert "$ systemctl disable --now edgekit@porch.service" in dry

    service.uninstall("porch", root=root, purge=True)
    assert template.exists() and not (root / "etc/edgekit/porch.toml").exists()
    code, out, _ = _invoke("service", "uninstall", "--name", "garage", "--root", str(root))
    assert code == 0 and "removed /etc/systemd/system/edgekit@.service" in out
    assert not template.exists() and (root / "etc/edgekit/garage.toml").exists()  # config kept without --purge


def test_status_and_logs_commands() -> None:
    assert service.status_command("porch") == ["systemctl", "status", "--no-pager", "--full", "edgekit@porch.service"]
    assert service.logs_command(user_mode=True, lines=5, follow=True) == [
        "journalctl", "--user-unit", "edgekit.service", "--lines", "5", "--no-pager", "--follow"
    ]  # fmt: skip


def test_apply_reports_a_failing_command(tmp_path: Path) -> None:
    plan = service.Plan("install", "edgekit.service", (), (("systemctl", "daemon-reload"),))

    def failing(command: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 1, "", "Failed to connect to bus: No such file or directory\n")

    with pytest.raises(Exception, match=r"systemctl daemon-reload failed \(exit 1\): Failed to connect to bus"):
        service.apply(plan, None, failing)


def test_status_and_logs_pass_the_tools_exit_code_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, code in (("systemctl", 3), ("journalctl", 0)):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {tmp_path}/calls\nexit {code}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert _invoke("service", "status", "--name", "porch")[0] == 3  # systemctl's "not running"
    assert _invoke("service", "logs", "-n", "7")[0] == 0
    assert (tmp_path / "calls").read_text().splitlines() == [
        "systemctl status --no-pager --full edgekit@porch.service",
        "journalctl --unit edgekit.service --lines 7 --no-pager",
    ]


def test_a_system_install_without_root_says_what_to_do(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.os, "geteuid", lambda: 1000)
    code, out, err = _invoke("service", "install", "--config", str(config_file), "--executable", EXECUTABLE)
    assert (code, out) == (2, "")
    assert err == "Error: installing a system service needs root: run it with sudo, or pass --user or --dry-run\n"
