"""The CLI frame: help, version, and how library errors reach the user."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgekit import __version__
from edgekit.cli import cli
from edgekit.errors import ConfigError, QualityGateError


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_the_two_halves(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "edgekit convert" in result.output
    assert "edgekit run" in result.output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"edgekit, version {__version__}"


@pytest.fixture
def failing_cli() -> click.Group:
    # A throwaway command registered on the real group, to test the group's error mapping in isolation.
    @cli.command("_raise", hidden=True)
    @click.argument("kind")
    def _raise(kind: str) -> None:
        if kind == "config":
            raise ConfigError("edgekit.toml: unknown key 'run.x'")
        raise QualityGateError("int8 agreement 0.80 is below --min-agreement 0.90")

    yield cli
    cli.commands.pop("_raise")


def test_library_error_is_one_line_with_exit_2(runner: CliRunner, failing_cli: click.Group) -> None:
    result = runner.invoke(failing_cli, ["_raise", "config"])
    assert result.exit_code == 2
    assert result.output == "Error: edgekit.toml: unknown key 'run.x'\n"
    assert "Traceback" not in result.output


def test_quality_gate_exits_3(runner: CliRunner, failing_cli: click.Group) -> None:
    result = runner.invoke(failing_cli, ["_raise", "gate"])
    assert result.exit_code == 3
    assert result.output.startswith("Error: int8 agreement 0.80")
