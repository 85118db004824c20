"""systemd/: install.sh into a temporary root (twice: idempotent), the unit verified and scored
by systemd-analyze, the udev rules and the example config checked.

install.sh gets a wheel built here from the checkout (pure Python, no build backend, no
network) and `--no-deps --no-index`, so the venv step is real but fast. systemd-analyze tests
skip where it is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import gatewayd
from certs import make_pki
from gatewayd.daemon import plan
from gatewayd.ops.config import parse

pytestmark = pytest.mark.timeout(60)

CHECKOUT = Path(__file__).resolve().parents[2]
SYSTEMD = CHECKOUT / "systemd"
INSTALL = SYSTEMD / "install.sh"
UNIT = "gatewayd.service"
#: The issue's bar for `systemd-analyze security` (0 = locked down, 10 = fully exposed).
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")


def _systemd_version() -> int:
    if ANALYZE is None:
        return 0
    first = subprocess.run(
        [ANALYZE, "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


#: `security --offline` and `verify --root` came with systemd 250 (Debian 12 has 252).
needs_analyze = pytest.mark.skipif(
    _systemd_version() < 250,
    reason="systemd-analyze >= 250 is missing (apt-get install systemd; .ci/run does)",
)


# -- a wheel of the checkout, without a build backend --------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(folder: Path) -> Path:
    """gatewayd, drivers and protocols as an installable py3-none-any wheel."""
    version = gatewayd.__version__
    info = f"gatewayd-{version}.dist-info"
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    drivers = project["entry-points"]["gatewayd.drivers"]
    files: dict[str, bytes] = {}
    for package in ("gatewayd", "drivers", "protocols"):
        for path in sorted((CHECKOUT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(CHECKOUT).as_posix()] = path.read_bytes()
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: gatewayd\nVersion: {version}\n"
        f"Requires-Python: {project['requires-python']}\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    entry_points = "[console_scripts]\ngatewayd = gatewayd.cli:main\n\n[gatewayd.drivers]\n"
    entry_points += "".join(f"{name} = {target}\n" for name, target in drivers.items())
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = folder / f"gatewayd-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


# -- install.sh into a temporary root ------------------------------------------------------------


def run_install(root: Path, wheel: Path) -> str:
    result = subprocess.run(
        ["bash", str(INSTALL)],
        env={
            **os.environ,
            "ROOT": str(root),
            "PYTHON": sys.executable,
            "GATEWAYD_SPEC": str(wheel),
            "PIP_ARGS": "--no-deps --no-index",
        },
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under root: (sha256 or link target, mode, mtime_ns)."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        if path.is_symlink():
            content = f"-> {os.readlink(path)}"
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = "dir"
        found[str(path.relative_to(root))] = (content, stat.st_mode, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, str]:
    """A root that install.sh installed into once, with its output."""
    root = tmp_path_factory.mktemp("root")
    return root, run_install(root, wheel)


def test_install_into_a_temporary_root(installed: tuple[Path, str]) -> None:
    root, output = installed
    assert "created venv /opt/gatewayd/venv" in output
    assert f"installed gatewayd into /opt/gatewayd/venv ({gatewayd.__version__})" in output
    for path in (
        "/etc/systemd/system/gatewayd.service",
        "/etc/udev/rules.d/60-gatewayd.rules",
        "/etc/modules-load.d/gatewayd.conf",
        "/etc/gatewayd/config.example.toml",
    ):
        assert f"installed {path}" in output
    assert "created /etc/gatewayd/config.toml from the example" in output
    assert "created system user" not in output  # users are skipped for another root

    unit = root / "etc/systemd/system/gatewayd.service"
    assert unit.read_text() == (SYSTEMD / UNIT).read_text()  # PREFIX is the default
    assert (root / "etc/udev/rules.d/60-gatewayd.rules").read_bytes() == (
        SYSTEMD / "60-gatewayd.rules"
    ).read_bytes()
    assert (root / "etc/modules-load.d/gatewayd.conf").read_text().split()[-2:] == [
        "cdc_acm",
        "usbserial",
    ]
    config = root / "etc/gatewayd/config.toml"
    assert config.read_bytes() == (SYSTEMD / "config.example.toml").read_bytes()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc/gatewayd").stat().st_mode & 0o777 == 0o750

    # The venv runs at /opt/gatewayd on the target: its scripts say so, not the staging root.
    venv = root / "opt/gatewayd/venv"
    script = (venv / "bin/gatewayd").read_text()
    assert script.startswith("#!/opt/gatewayd/venv/bin/python")
    assert str(root) not in script
    version = subprocess.run(
        [str(venv / "bin/python"), "-m", "gatewayd", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"gatewayd {gatewayd.__version__}"


def test_a_second_install_changes_nothing_and_keeps_the_config(
    installed: tuple[Path, str], wheel: Path
) -> None:
    root, _ = installed
    config = root / "etc/gatewayd/config.toml"
    config.write_text('[hub]\nid = "hub-kitchen"\n')  # the operator's own config
    before = snapshot(root)

    assert run_install(root, wheel).strip() == "gatewayd: nothing changed"
    assert snapshot(root) == before
    assert config.read_text() == '[hub]\nid = "hub-kitchen"\n'

    # A unit edited in place is put back (drop-ins are the way to adapt it), and only it.
    unit = root / "etc/systemd/system/gatewayd.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=60s", "WatchdogSec=0"))
    output = run_install(root, wheel)
    assert output.splitlines() == [
        "  installed /etc/systemd/system/gatewayd.service",
        "gatewayd: 1 change(s) under " + str(root),
    ]
    assert unit.read_text() == (SYSTEMD / UNIT).read_text()


def test_prefix_is_honoured(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    result = subprocess.run(
        ["bash", str(INSTALL), "--no-users"],
        env={
            **os.environ,
            "ROOT": str(root),
            "PREFIX": "/srv/gwd",
            "PYTHON": sys.executable,
            "GATEWAYD_SPEC": str(wheel),
            "PIP_ARGS": "--no-deps --no-index",
        },
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    unit = (root / "etc/systemd/system/gatewayd.service").read_text()
    assert "ExecStart=/srv/gwd/venv/bin/gatewayd run --config /etc/gatewayd/config.toml" in unit
    assert "/opt/gatewayd" not in unit
    assert (root / "srv/gwd/venv/bin/gatewayd").read_text().startswith("#!/srv/gwd/venv/bin/")


def test_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is missing (apt-get install shellcheck)")
    project = INSTALL.parent.parent
    scripts = [INSTALL, project / ".ci/run"]
    scripts += [p for p in (project / "scripts").iterdir() if p.suffix in ("", ".sh")]
    result = subprocess.run(
        [shellcheck, "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        check=False,
        cwd=project,
    )
    assert result.returncode == 0, result.stdout


# -- systemd-analyze -----------------------------------------------------------------------------


@needs_analyze
def test_the_installed_unit_passes_systemd_analyze_verify(installed: tuple[Path, str]) -> None:
    root, _ = installed
    # verify --root resolves the unit's dependencies inside the root: give it the host's targets.
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for folder in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        for target in folder.glob("*.target"):
            if not (units / target.name).exists():
                shutil.copy(target, units / target.name)
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "--man=no", UNIT],
        capture_output=True,
        text=True,
        check=False,
    )
    # Also catches the warnings (unknown keys, keys in the wrong section), not only errors.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_the_unit_scores_at_most_2_5_exposure() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(SYSTEMD / UNIT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for gatewayd\.service: (\d+\.\d+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout


def test_the_unit_declares_what_the_issue_asks() -> None:
    """The settings the daemon's behaviour relies on (systemd-analyze checks the syntax)."""
    lines = set((SYSTEMD / UNIT).read_text().splitlines())
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60s",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "StateDirectory=gatewayd",
        "ConfigurationDirectory=gatewayd",
        "User=gatewayd",
        "SupplementaryGroups=bluetooth dialout",
        "DeviceAllow=char-ttyACM rw",
    ):
        assert line in lines
    # READY may wait 30 s for the broker (gatewayd.ops.health.watchdog.READY_TIMEOUT).
    from gatewayd.ops.health.watchdog import READY_TIMEOUT

    timeout = next(x for x in lines if x.startswith("TimeoutStartSec="))
    assert int(timeout.removeprefix("TimeoutStartSec=").removesuffix("s")) >= READY_TIMEOUT + 30


# -- udev rules and the example config -----------------------------------------------------------

_RULE_KEY = re.compile(r'^(?P<key>[A-Z_]+)(\{[^}]+\})?(?P<op>==|!=|\+=|-=|:=|=)"[^"]*"$')


def test_the_udev_rules_are_well_formed_and_cover_the_dexcom_receiver() -> None:
    text = (SYSTEMD / "60-gatewayd.rules").read_text()
    rules = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    labels = {m for line in rules for m in re.findall(r'LABEL="([^"]+)"', line)}
    for line in rules:
        for part in (p.strip() for p in line.split(",")):
            assert _RULE_KEY.match(part), f"malformed: {part!r} in {line!r}"
        for goto in re.findall(r'GOTO="([^"]+)"', line):
            assert goto in labels
    (dexcom,) = [line for line in rules if '"22a3"' in line]
    for expected in (
        'ATTRS{idProduct}=="0047"',
        'GROUP="dialout"',
        'MODE="0660"',
        'SYMLINK+="dexcom-receiver"',
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
    ):
        assert expected in dexcom


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    data = tomllib.loads((SYSTEMD / "config.example.toml").read_text())
    # The secrets it points at exist on a configured hub; stand them in here.
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    ca = make_pki(tmp_path / "pki").ca_cert
    data["mqtt"] = {**data["mqtt"], "password_file": str(secret), "ca_file": str(ca)}
    data["store"] = {**data.get("store", {}), "path": str(tmp_path / "gatewayd.db")}
    validated = plan(parse(data, tmp_path / "config.toml"))
    assert [device_id for device_id, _, _ in validated.devices] == ["cgm-1"]
