"""`gatewayd doctor` as a user runs it, and its config, store and security checks.

The command runs for real (the installed script, a real store, the session's mosquitto); the exit
status is 0 with warnings, 1 with a failed check and 2 for an unusable config, and every check is
exactly one line.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatewayd.cli.doctor import SystemProbes, run_doctor
from gatewayd.models import Reading
from gatewayd.ops import config
from gatewayd.ops.doctor.core import Identity, Status
from gatewayd.ops.doctor.files import check_config, check_security, check_store
from gatewayd.ops.doctor.system import ClockState, DiskUsage
from gatewayd.store import Store
from gatewayd.store.snapshot import open_readonly, snapshot
from mosquitto import Mosquitto, free_port
from privileges import NEEDS_ROOT

GATEWAYD = str(Path(sys.executable).parent / "gatewayd")
NOBODY = Identity("nobody", 65534, frozenset({65534}))
CHECKS = ["config", "store", "disk", "broker", "bluetooth", "serial", "clock", "security"]
SERIAL = "SIMCAFE1234"


def write_config(
    folder: Path, url: str, *, password: str, extra: str = "", devices: str = ""
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    secret = folder / "mqtt-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    path = folder / "config.toml"
    path.write_text(
        f'[hub]\nid = "hub-doc"\n\n[store]\npath = "store/gatewayd.db"\n\n'
        f'[mqtt]\nurl = "{url}"\nusername = "gateway"\npassword_file = "mqtt-password"\n'
        f"{extra}\n" + (devices or '[[devices]]\ndriver = "simulator"\nid = "cgm-1"\n')
    )
    return path


def reading(seq: int, at: datetime, device: str = "cgm-1") -> Reading:
    return Reading(device, "simulator", SERIAL, "s1", seq, at, at, 100.0 + seq)


def fill_store(path: Path, count: int = 3, *, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    store = Store(path)
    for seq in range(count):
        store.add(reading(seq, now - timedelta(seconds=count - seq)))
    store.close()


#: The user the doctor checks the files for: whoever runs the tests, who made them (by default,
#: run as root, it is the service user `gatewayd` when the machine has one: a hub where
#: systemd/install.sh ran, and that user cannot write the tests' files).
ME = pwd.getpwuid(os.geteuid()).pw_name


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`gatewayd ARGS`; `doctor` checks for `ME` unless the test names a `--user`."""
    if args[:1] == ("doctor",) and "--user" not in args:
        args = (*args, "--user", ME)
    env = {
        k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "CREDENTIALS_DIRECTORY")
    }
    return subprocess.run(
        [GATEWAYD, *args], capture_output=True, text=True, timeout=30, check=False, env=env
    )


def check_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """check name -> (status, rest) of the one line per check, in the documented order."""
    found: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        status, check, rest = line[:6].strip(), line[6:18].strip(), line[18:]
        assert status in ("ok", "warn", "FAIL", "skip"), line
        assert check not in found, f"two lines for {check}"
        found[check] = (status, rest)
    return found


# --- the command --------------------------------------------------------------------------------


def test_healthy_hub_exits_0_one_line_per_check(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker.url(), password=broker.password)
    fill_store(path.parent / "store" / "gatewayd.db")
    done = run("doctor", "--config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    lines = check_lines(done.stdout)
    assert list(lines) == CHECKS
    assert lines["config"][0] == "ok"
    assert lines["config"][1].startswith(f"{path}: hub hub-doc, 1 device (simulator)")
    assert lines["store"][0] == "ok"
    assert "0600, WAL, quick_check ok, 3 readings, outbox 3" in lines["store"][1]
    assert lines["broker"] == ("ok", f"{broker.url()} reachable, authenticated as gateway (MQTT 5)")
    assert lines["bluetooth"] == ("skip", "no BLE device configured")
    assert lines["serial"] == ("skip", "no serial device configured")
    assert lines["clock"][0] in ("ok", "warn")  # whatever this machine's clock is: never FAIL
    assert broker.password not in done.stdout


def test_wrong_password_exits_1_with_hint(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker.url(), password="wrong-password")
    done = run("doctor", "--config", str(path))
    assert done.returncode == 1
    status, rest = check_lines(done.stdout)["broker"]
    assert status == "FAIL"
    assert "not authorised" in rest
    assert " — check [mqtt] username (gateway) and the password" in rest
    assert "wrong-password" not in done.stdout


def test_unreachable_broker_exits_1(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", password="x")
    done = run("doctor", "--config", str(path), "--timeout", "2")
    assert done.returncode == 1
    assert check_lines(done.stdout)["broker"][0] == "FAIL"


def test_every_broker_url_is_checked_one_line_each(broker: Mosquitto, tmp_path: Path) -> None:
    """`[mqtt] url` lists two nodes, the first down: one broker line each, in order."""
    down = f"mqtt://127.0.0.1:{free_port()}"
    path = write_config(tmp_path, down, password=broker.password)
    path.write_text(
        path.read_text().replace(f'url = "{down}"', f'url = ["{down}", "{broker.url()}"]')
    )
    done = run("doctor", "--config", str(path), "--timeout", "2")
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line[6:18].strip() == "broker"]
    assert [line[:6].strip() for line in lines] == ["FAIL", "ok"]
    assert down.removeprefix("mqtt://") in lines[0]
    assert lines[1].endswith(f"{broker.url()} reachable, authenticated as gateway (MQTT 5)")


def test_bad_config_exits_2_after_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[hub]\nid = "h"\n[mqtt]\nurl = "http://broker"\n')
    done = run("doctor", "--config", str(path))
    assert done.returncode == 2
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"FAIL  config      {path}: mqtt.url: must start with mqtt://")
    assert " — fix that key" in line


def test_unknown_driver_exits_2(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "mqtt://127.0.0.1:1",
        password="x",
        devices='[[devices]]\ndriver = "nope"\nid = "d"\n',
    )
    done = run("doctor", "--config", str(path))
    assert done.returncode == 2
    (line,) = done.stdout.splitlines()
    assert "driver 'nope' is not installed" in line
    assert "gatewayd drivers" in line


def test_unknown_user_is_a_usage_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "mqtt://127.0.0.1:1", password="x")
    done = run("doctor", "--config", str(path), "--user", "no-such-user-here")
    assert done.returncode == 2
    assert done.stderr.strip() == "gatewayd: --user: no such user: no-such-user-here"


def test_json_format(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker.url(), password=broker.password)
    done = run("doctor", "--config", str(path), "--format", "json")
    document = json.loads(done.stdout)
    assert [c["check"] for c in document["checks"]] == CHECKS
    assert document["exit"] == done.returncode
    assert document["ok"] is (done.returncode == 0)
    store = document["checks"][1]
    assert (store["status"], store["message"].endswith("when it first starts)")) == ("warn", True)


def test_serial_option_of_a_device_is_found_and_checked(tmp_path: Path) -> None:
    """A `port`/`path` driver option naming a tty is checked for the daemon's user."""
    from gatewayd.ops.doctor.system import check_serial, serial_path

    tty = tmp_path / "ttyACM0"
    tty.write_bytes(b"")
    tty.chmod(0o600)
    found = serial_path({"driver": "dexcom_receiver", "id": "rx", "port": str(tty)})
    assert found == tty
    result = check_serial("rx", found, NOBODY)
    assert result.status == Status.FAIL
    assert result.line().startswith(
        f"FAIL  serial      rx {tty}: permission denied for user nobody"
    )


def test_injected_probes_full_disk_fails(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker.url(), password=broker.password)
    out = io.StringIO()
    probes = SystemProbes(
        clock=lambda: ClockState(False, "timedatectl"),
        disk_usage=lambda _: DiskUsage(16_000_000_000, 15_990_000_000, 10_000_000),
    )
    code = run_doctor(path, out=out, probes=probes, user="root")
    lines = check_lines(out.getvalue())
    assert code == 1
    assert lines["disk"][0] == "FAIL"
    assert lines["clock"] == (
        "warn",
        "not synchronised (timedatectl) — enable NTP: sudo timedatectl set-ntp true (a Pi has no "
        "real-time clock: until it syncs, received times and TLS certificate checks use a wrong "
        "date)",
    )


def test_warnings_alone_exit_0(broker: Mosquitto, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker.url(), password=broker.password)
    out = io.StringIO()
    probes = SystemProbes(
        clock=lambda: ClockState(False, "adjtimex", "STA_UNSYNC"),
        disk_usage=lambda _: DiskUsage(16_000_000_000, 15_900_000_000, 100_000_000),
    )
    assert run_doctor(path, out=out, probes=probes, user=ME) == 0
    statuses = {k: v[0] for k, v in check_lines(out.getvalue()).items()}
    assert statuses["disk"] == statuses["clock"] == "warn"


# --- config, store and security checks ----------------------------------------------------------


def test_world_writable_config_fails(tmp_path: Path) -> None:
    path = write_config(tmp_path, "mqtt://127.0.0.1:1883", password="x")
    path.chmod(0o666)
    result, plan = check_config(path)
    assert plan is not None  # usable, but not safe
    assert result.status == Status.FAIL
    assert "writable by every user (mode 0666)" in result.message
    assert result.hint is not None
    assert result.hint.startswith(f"chmod o-w {path}")


def store_result(
    path: Path, identity: Identity = NOBODY, now: datetime | None = None
) -> tuple[Status, str, str | None]:
    now = now or datetime.now(UTC)
    snap, error = None, None
    if path.exists():
        try:
            db = open_readonly(path)
            snap = snapshot(db, path, [("cgm-1", "simulator", True)], now)
            db.close()
        except Exception as exc:
            error = str(exc)
    result = check_store(path, identity, snap, error, now)
    assert "\n" not in result.line()
    return result.status, result.message, result.hint


@NEEDS_ROOT
def test_store_world_readable_fails(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    fill_store(path)
    os.chown(path, NOBODY.uid, NOBODY.uid)
    assert store_result(path)[0] == Status.OK
    path.chmod(0o644)
    status, message, hint = store_result(path)
    assert status == Status.FAIL
    assert "gatewayd.db readable by every user (mode 0644)" in message
    assert hint == f"health data: chmod 600 {path}*"
    path.chmod(0o640)
    assert store_result(path)[0] == Status.WARN


def test_store_not_writable_by_the_service_user(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    fill_store(path)  # owned by root, 0600
    status, message, hint = store_result(path, NOBODY)
    assert status == Status.FAIL
    assert "user nobody cannot write it" in message
    assert hint == f"sudo chown nobody: {path}*"


def test_store_not_created_yet(tmp_path: Path) -> None:
    status, message, _ = store_result(tmp_path / "gatewayd.db", Identity.current())
    assert status == Status.WARN
    assert "not created yet" in message
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o755)
    status, message, hint = store_result(folder / "gatewayd.db", NOBODY)
    assert status == Status.FAIL
    assert "user nobody cannot create it" in message
    assert hint is not None
    assert "install -d -o nobody" in hint


def test_store_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    path.chmod(0o600)
    status, message, _ = store_result(path, Identity.current())
    assert status == Status.FAIL
    assert message.startswith(f"{path}: 0600, ")


def test_store_stale_outbox_warns(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    then = datetime.now(UTC) - timedelta(hours=3)
    fill_store(path, now=then)
    status, message, hint = store_result(path, Identity.current())
    assert status == Status.WARN
    assert "outbox 3, the oldest undelivered reading is 3.0 h old" in message
    assert hint is not None
    assert "broker check" in hint


def test_store_read_while_a_writer_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    store = Store(path)
    store.add(reading(0, datetime.now(UTC)))
    with store.transaction() as db:  # the daemon in the middle of a write
        db.execute("INSERT INTO meta VALUES ('test/write', 'in progress')")
        status, message, _ = store_result(path, Identity.current())
    store.close()
    assert status == Status.OK, message
    assert "1 readings, outbox 1" in message


def test_security_plain_mqtt_to_another_host_warns() -> None:
    cfg = config.parse({"hub": {"id": "h"}, "mqtt": {"url": "mqtt://broker.lan"}})
    result = check_security(cfg, None)
    assert result.status == Status.WARN
    assert "plain mqtt:// to broker.lan" in result.message
    assert result.hint is not None
    assert result.hint.startswith("use mqtts://")
    local = check_security(config.parse({"hub": {"id": "h"}}), None)
    assert local.status == Status.OK
    assert local.message.startswith("plain MQTT on loopback")


def test_security_serial_in_a_topic_warns(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    fill_store(path)
    device = f"cgm-{SERIAL.lower()}"
    store = Store(path)
    assert store.add(reading(100, datetime.now(UTC), device=device))
    store.close()
    cfg = config.parse(
        {
            "hub": {"id": "h"},
            "log": {"privacy": "strict"},
            "devices": [{"driver": "simulator", "id": device}, {"driver": "simulator", "id": "x"}],
        }
    )
    db = open_readonly(path)
    snap = snapshot(db, path, [(device, "simulator", True)], datetime.now(UTC))
    db.close()
    result = check_security(cfg, snap)
    assert result.status == Status.WARN
    assert f"topic names contain a sensor serial (device {device})" in result.message
    assert "log privacy strict" in result.message
    assert SERIAL not in result.line()  # the check names the device, not the serial


@pytest.mark.parametrize("url", ["mqtts://localhost:8883"])
def test_security_tls(url: str, tmp_path: Path) -> None:
    cfg = config.parse({"hub": {"id": "h"}, "mqtt": {"url": url}})
    result = check_security(cfg, None)
    assert result.status == Status.OK
    assert result.message.startswith("TLS with certificate verification (system CAs)")


def test_doctor_reads_a_store_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.db"
    fill_store(path)
    before = path.stat().st_mtime_ns, path.read_bytes()
    store_result(path, Identity.current())
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        open_readonly(path)._db.execute("DELETE FROM readings")
