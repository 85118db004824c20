"""Secrets in the config: refused where every user can read them; systemd credentials.

Every refusal is one `ConfigError` line naming the file, the key and what to do, and never
containing the secret itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from certs import make_pki
from gatewayd.errors import ConfigError
from gatewayd.ops import config, credentials

SECRET = "correct-horse-battery-staple"
HUB = '[hub]\nid = "hub1"\n'
GATEWAYD = str(Path(sys.executable).parent / "gatewayd")


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    # The fallback of an operator's shell must not leak in from the machine running the tests.
    monkeypatch.setattr(credentials, "SERVICE_CREDENTIALS", Path("/nonexistent/credentials"))


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def refused(path: Path, key: str, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert SECRET not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return err


# --- the config file itself ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
def test_world_readable_config_with_inline_password_refused(tmp_path: Path, mode: int) -> None:
    path = write(
        tmp_path / "config.toml",
        HUB + f'[mqtt]\nusername = "u"\npassword = "{SECRET}"\n',
        mode,
    )
    refused(path, "mqtt.password", "readable by every user", f"mode {mode:04o}", "chmod o-r")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_private_config_with_inline_password_accepted(tmp_path: Path, mode: int) -> None:
    path = write(
        tmp_path / "config.toml",
        HUB + f'[mqtt]\nusername = "u"\npassword = "{SECRET}"\n',
        mode,
    )
    assert config.load(path).mqtt.password == SECRET


def test_world_readable_config_without_secret_is_fine(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "pw").chmod(0o600)
    path = write(
        tmp_path / "config.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n',
        0o644,
    )
    assert config.load(path).mqtt.password == SECRET


def test_cli_refuses_world_readable_config_with_one_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        HUB + f'[mqtt]\nusername = "u"\npassword = "{SECRET}"\n',
        0o644,
    )
    done = subprocess.run(
        [GATEWAYD, "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"gatewayd: config error: {path}: mqtt.password: ")
    assert SECRET not in done.stderr + done.stdout


# --- password_file and key_file -----------------------------------------------------------------


def test_world_readable_password_file_refused(tmp_path: Path) -> None:
    write(tmp_path / "pw", SECRET + "\n", 0o644)
    path = write(tmp_path / "c.toml", HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n', 0o600)
    refused(path, "mqtt.password_file", str(tmp_path / "pw"), "readable by every user", "0644")


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440])
def test_private_password_file_accepted(tmp_path: Path, mode: int) -> None:
    write(tmp_path / "pw", f"  {SECRET}\n", mode)
    path = write(tmp_path / "c.toml", HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n', 0o644)
    assert config.load(path).mqtt.password == SECRET


def test_world_readable_key_file_refused(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    write(tmp_path / "ca.pem", pki.ca_cert.read_text(), 0o644)
    write(tmp_path / "client.pem", pki.client_cert.read_text(), 0o644)
    write(tmp_path / "client.key", pki.client_key.read_text(), 0o644)
    text = (
        HUB + '[mqtt]\nurl = "mqtts://broker:8883"\nca_file = "ca.pem"\n'
        'cert_file = "client.pem"\nkey_file = "client.key"\n'
    )
    path = write(tmp_path / "c.toml", text, 0o644)
    refused(path, "mqtt.key_file", "a private key", "readable by every user")
    (tmp_path / "client.key").chmod(0o600)
    assert config.load(path).mqtt.key_file == tmp_path / "client.key"


# --- systemd credentials ------------------------------------------------------------------------


def credentials_dir(tmp_path: Path, name: str = "mqtt-password", value: str = SECRET) -> Path:
    """What systemd's LoadCredential= sets up: a private folder with one file per credential."""
    folder = tmp_path / "credentials"
    folder.mkdir(mode=0o500, exist_ok=True)
    folder.chmod(0o700)
    write(folder / name, value + "\n", 0o400)
    folder.chmod(0o500)
    return folder


def test_password_credential_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_dir(tmp_path)))
    path = write(
        tmp_path / "c.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_credential = "mqtt-password"\n',
        0o644,
    )
    cfg = config.load(path)
    assert cfg.mqtt.password == SECRET
    assert SECRET not in repr(cfg)


def test_password_credential_through_the_cli(tmp_path: Path) -> None:
    """`gatewayd status` under a credentials directory: the credential is read, nothing else
    fails on it (the store does not exist yet, which is the one-line error we get)."""
    folder = credentials_dir(tmp_path)
    path = write(
        tmp_path / "c.toml",
        HUB + '[store]\npath = "db/x.db"\n[mqtt]\nusername = "u"\n'
        'password_credential = "mqtt-password"\n',
        0o644,
    )
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(folder)}
    env.pop("STATE_DIRECTORY", None)
    done = subprocess.run(
        [GATEWAYD, "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert "does not exist yet" in line
    env.pop("CREDENTIALS_DIRECTORY")
    done = subprocess.run(
        [GATEWAYD, "status", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "mqtt.password_credential" in line
    assert "CREDENTIALS_DIRECTORY" in line


def test_password_credential_without_systemd(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_credential = "mqtt-password"\n',
        0o600,
    )
    refused(path, "mqtt.password_credential", "CREDENTIALS_DIRECTORY is not set", "LoadCredential=")


def test_password_credential_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_dir(tmp_path)))
    path = write(
        tmp_path / "c.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_credential = "other"\n',
        0o600,
    )
    refused(path, "mqtt.password_credential", "cannot read", "other")


@pytest.mark.parametrize("name", ["../mqtt-password", "a/b", ".."])
def test_password_credential_name_is_one_path_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_dir(tmp_path)))
    path = write(
        tmp_path / "c.toml",
        HUB + f'[mqtt]\nusername = "u"\npassword_credential = "{name}"\n',
        0o600,
    )
    refused(path, "mqtt.password_credential", "credential name")


def test_password_credential_with_another_password_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_dir(tmp_path)))
    write(tmp_path / "pw", SECRET, 0o600)
    path = write(
        tmp_path / "c.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_file = "pw"\n'
        'password_credential = "mqtt-password"\n',
        0o600,
    )
    refused(path, "mqtt.password_credential", "set one of")


def test_password_credential_needs_username(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials_dir(tmp_path)))
    text = HUB + '[mqtt]\npassword_credential = "mqtt-password"\n'
    path = write(tmp_path / "c.toml", text, 0o600)
    refused(path, "mqtt.username", "is required")


def test_running_service_credentials_used_from_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No $CREDENTIALS_DIRECTORY (an operator's shell): the running service's folder."""
    monkeypatch.setattr(credentials, "SERVICE_CREDENTIALS", credentials_dir(tmp_path))
    path = write(
        tmp_path / "c.toml",
        HUB + '[mqtt]\nusername = "u"\npassword_credential = "mqtt-password"\n',
        0o600,
    )
    assert config.load(path).mqtt.password == SECRET


# --- [log] privacy ------------------------------------------------------------------------------


def test_log_privacy_key(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", HUB + '[log]\nprivacy = "strict"\n', 0o644)
    assert config.load(path).log.privacy == "strict"
    path = write(tmp_path / "c.toml", HUB, 0o644)
    assert config.load(path).log.privacy == "normal"
    path = write(tmp_path / "c.toml", HUB + '[log]\nprivacy = "paranoid"\n', 0o644)
    refused(path, "log.privacy", "normal, strict")
