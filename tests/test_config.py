"""Strict config: unknown keys and wrong types are errors that name the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.config import Config, dump_toml, load_config, read_secret, to_dict
from edgekit.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edgekit.toml"
    path.write_text(text)
    return path


def test_valid_file_sets_values_and_keeps_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[run]\nmodel = "m/"\nthreads = 2\nthreshold = 1\nsinks = ["stdout"]\n'))
    assert cfg.run.model == "m/"
    assert cfg.run.threads == 2
    assert cfg.run.threshold == 1.0 and isinstance(cfg.run.threshold, float)
    assert cfg.run.top_k == Config().run.top_k


def test_unknown_nested_key_names_file_and_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[run]\nthreds = 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: unknown key 'run.threds'")


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[camera]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'camera'"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[run]\nthreads = "two"\n', "key 'run.threads' must be an integer, got str 'two'"),
        ("[run]\nthreads = true\n", "key 'run.threads' must be an integer, got bool True"),
        ('[run]\ntask = "segment"\n', "key 'run.task' must be one of 'auto', 'classify', 'detect'"),
        ("[run]\nsinks = [1]\n", "key 'run.sinks[0]' must be a string, got int 1"),
        ('[run]\nrealtime = "yes"\n', "key 'run.realtime' must be true or false"),
        ("run = 3\n", "key 'run' must be a table"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[run]\nthreads = 2\n"), {"run.threads": 4, "run.top_k": 1})
    assert (cfg.run.threads, cfg.run.top_k) == (4, 1)
    with pytest.raises(ConfigError, match=r"^command line: key .run.top_k. must be an integer"):
        load_config(None, {"run.top_k": "x"})


def test_dump_roundtrips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[run]\nmodel = "a \\"b\\""\nthreads = 3\n'))
    again = load_config(write(tmp_path, dump_toml(to_dict(cfg))))
    assert again == cfg


def test_secret_prefers_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("from-systemd\n")
    fallback = tmp_path / "pw"
    fallback.write_text("from-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret("mqtt_password", fallback) == "from-systemd"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert read_secret("mqtt_password", fallback) == "from-file"
    assert read_secret("mqtt_password", None) is None
    with pytest.raises(ConfigError, match="password file not found"):
        read_secret("mqtt_password", tmp_path / "nope", what="password")
