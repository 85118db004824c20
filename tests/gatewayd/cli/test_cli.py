"""The `gatewayd` command, run for real: the installed script and `python -m gatewayd`.

Errors a person can fix exit 2 with exactly one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

import gatewayd
from gatewayd import registry
from gatewayd.errors import PluginError

SCRIPT = Path(sys.executable).parent / "gatewayd"
COMMANDS = [
    pytest.param((str(SCRIPT),), id="script"),
    pytest.param((sys.executable, "-m", "gatewayd"), id="module"),
]
HUB = '[hub]\nid = "hub1"\n'


def _simulator_missing() -> str | None:
    try:
        registry.load("simulator")
    except PluginError as exc:
        return f"the simulator driver is not importable yet: {exc}"
    return None


needs_simulator = pytest.mark.skipif(
    _simulator_missing() is not None, reason=_simulator_missing() or ""
)


def run(
    command: tuple[str, ...], *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    environment.update(env or {})
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a usage error (exit 2), checked for shape."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.endswith("\n"), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gatewayd: "), lines[0]
    assert result.stdout == ""
    return lines[0]


# --- --version ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_version(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run(command, "--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == f"gatewayd {gatewayd.__version__}\n"
    assert gatewayd.__version__ == version("gatewayd")
    assert result.stderr == ""


# --- bad configs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadConfig:
    text: str | None  # None: the file does not exist
    key: str
    reason: tuple[str, ...]
    needs_simulator: bool = False
    #: Further files beside the config: name -> text.
    files: tuple[tuple[str, str], ...] = ()


BAD_CONFIGS = {
    "file-missing": BadConfig(None, "", ("file not found",)),
    "toml-syntax": BadConfig('[hub\nid = "x"\n', "", ("not valid TOML",)),
    "unknown-key": BadConfig(HUB + '[mqtt]\nhots = "x"\n', "mqtt.hots", ("unknown key",)),
    "unknown-top-level-key": BadConfig("colour = 1\n" + HUB, "colour", ("unknown key",)),
    "wrong-type": BadConfig(
        HUB + '[mqtt]\nkeepalive = "60"\n', "mqtt.keepalive", ("must be a whole number",)
    ),
    "bool-as-int": BadConfig(
        HUB + "[mqtt]\nkeepalive = true\n", "mqtt.keepalive", ("must be a whole number",)
    ),
    "bad-value": BadConfig(
        HUB + '[mqtt]\nurl = "http://broker"\n', "mqtt.url", ("mqtt:// or mqtts://",)
    ),
    "missing-hub-id": BadConfig("[hub]\n", "hub.id", ("is required",)),
    "missing-hub": BadConfig('[log]\nlevel = "info"\n', "hub", ("is required",)),
    "bad-hub-id": BadConfig('[hub]\nid = "my hub"\n', "hub.id", ("must be 1-64 of",)),
    "missing-password-file": BadConfig(
        HUB + '[mqtt]\nusername = "u"\npassword_file = "nope"\n',
        "mqtt.password_file",
        ("cannot read",),
    ),
    "store-path-is-a-directory": BadConfig(
        HUB + '[store]\npath = "."\n', "store.path", ("is a directory",)
    ),
    "store-path-cannot-be-created": BadConfig(
        HUB + '[store]\npath = "afile/sub/gatewayd.db"\n',
        "store.path",
        ("cannot create the folder", "afile/sub"),
        files=(("afile", "a file, not a folder\n"),),
    ),
    "tls-ca-file-not-pem": BadConfig(
        HUB + '[mqtt]\nurl = "mqtts://b"\nca_file = "ca.pem"\n',
        "mqtt.ca_file",
        ("ca.pem", "not a PEM certificate"),
        files=(("ca.pem", "-----BEGIN CERTIFICATE-----\ngarbage\n"),),
    ),
    "duplicate-device": BadConfig(
        HUB + '[[devices]]\nid = "a"\ndriver = "simulator"\n' * 2,
        "devices[1].id",
        ("duplicate device id",),
    ),
    "bad-driver-option": BadConfig(
        HUB + '[[devices]]\nid = "a"\ndriver = "simulator"\ninterval = "fast"\n',
        "devices[0].interval",
        ("must be a number", "'fast'"),
        needs_simulator=True,
    ),
    "driver-option-range": BadConfig(
        HUB + '[[devices]]\nid = "a"\ndriver = "simulator"\ninterval = 0\n',
        "devices[0].interval",
        ("must be > 0",),
        needs_simulator=True,
    ),
    "unknown-driver-option": BadConfig(
        HUB + '[[devices]]\nid = "a"\ndriver = "simulator"\nintervall = 60\n',
        "devices[0].intervall",
        ("unknown key",),
        needs_simulator=True,
    ),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config(command: tuple[str, ...], case: str, tmp_path: Path) -> None:
    bad = BAD_CONFIGS[case]
    if bad.needs_simulator and (why := _simulator_missing()):
        pytest.skip(why)
    path = tmp_path / "etc" / "gatewayd.toml"
    if bad.text is not None:
        path.parent.mkdir()
        path.write_text(bad.text, encoding="utf-8")
        for name, text in bad.files:
            (path.parent / name).write_text(text, encoding="utf-8")
    line = one_line_error(run(command, "run", "--config", str(path), cwd=tmp_path))
    assert line.startswith("gatewayd: config error: "), line
    assert str(path) in line
    if bad.key:
        assert f": {bad.key}: " in line, line
    for fragment in bad.reason:
        assert fragment in line, (fragment, line)


@pytest.mark.parametrize("command", COMMANDS)
def test_short_config_option(command: tuple[str, ...], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[hub]\n", encoding="utf-8")
    line = one_line_error(run(command, "run", "-c", str(path), cwd=tmp_path))
    assert f"{path}: hub.id: is required" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_relative_config_path_named_as_given(command: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "rel.toml").write_text('[hub]\nid = "a/b"\n', encoding="utf-8")
    line = one_line_error(run(command, "run", "--config", "rel.toml", cwd=tmp_path))
    assert "rel.toml: hub.id: " in line


UNKNOWN_DRIVER = HUB + '[[devices]]\nid = "a"\ndriver = "nope"\n'


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_driver(command: tuple[str, ...], tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.toml"
    path.write_text(UNKNOWN_DRIVER, encoding="utf-8")
    line = one_line_error(run(command, "run", "--config", str(path), cwd=tmp_path))
    assert "'nope'" in line
    assert "not installed" in line
    assert "simulator" in line  # names what is installed


def test_unknown_driver_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.toml"
    path.write_text(UNKNOWN_DRIVER, encoding="utf-8")
    line = one_line_error(run((str(SCRIPT),), "run", "--config", str(path), cwd=tmp_path))
    assert str(path) in line
    assert "devices[0].driver" in line


def test_disabled_device_with_unknown_driver_is_not_loaded(tmp_path: Path) -> None:
    """Only enabled devices' drivers are imported; a bad one shows as the next error."""
    path = tmp_path / "gatewayd.toml"
    path.write_text(
        HUB
        + '[[devices]]\nid = "a"\ndriver = "nope"\nenabled = false\n'
        + '[[devices]]\nid = "b"\ndriver = "nope2"\n',
        encoding="utf-8",
    )
    line = one_line_error(run((str(SCRIPT),), "run", "--config", str(path), cwd=tmp_path))
    assert "'nope2'" in line
    assert "'nope'" not in line


def test_missing_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run((str(SCRIPT),), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage: gatewayd" in result.stderr


# --- drivers ------------------------------------------------------------------------------------


@needs_simulator
@pytest.mark.parametrize("command", COMMANDS)
def test_drivers_lists_simulator(command: tuple[str, ...], tmp_path: Path) -> None:
    result = run(command, "drivers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    plugin = registry.load("simulator")
    lines = result.stdout.splitlines()
    assert f"simulator (virtual) — {plugin.summary}" in lines
    assert "  from drivers.simulator:plugin [gatewayd]" in lines
    assert any(line.strip().startswith("interval") for line in lines)  # the options help


def _broken_dist(root: Path) -> None:
    module = "fakepkg_cli_broken"
    (root / module).mkdir(parents=True)
    (root / module / "__init__.py").write_text("raise RuntimeError('kaputt')\n", "utf-8")
    info = root / "fakedist_cli-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakedist-cli\nVersion: 0.1\n", "utf-8"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [gatewayd.drivers]
            aaa_broken = {module}:plugin
            """
        ),
        "utf-8",
    )


@needs_simulator
def test_drivers_reports_a_broken_plugin_and_goes_on(tmp_path: Path) -> None:
    _broken_dist(tmp_path / "site")
    pythonpath = os.pathsep.join(
        p for p in (str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")) if p
    )
    result = run((str(SCRIPT),), "drivers", cwd=tmp_path, env={"PYTHONPATH": pythonpath})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "aaa_broken: BROKEN: " in result.stdout
    assert "RuntimeError: kaputt" in result.stdout
    assert "simulator (virtual) — " in result.stdout
