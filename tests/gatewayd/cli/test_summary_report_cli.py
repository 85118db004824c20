"""`gatewayd report`, run for real on a real store: JSON and text, windows, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from gatewayd.integrations.summaries.inputs import OptionError, parse_time, zone
from gatewayd.integrations.summaries.payload import WINDOW_KEYS
from gatewayd.models import Reading
from gatewayd.store import Store
from gatewayd.store.codec import json_schema

AT = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
VALIDATOR = Draft202012Validator(json_schema("summary"), format_checker=FormatChecker())


def gatewayd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gatewayd: ")
    return lines[0]


def write_setup(tmp_path: Path, summaries: str = "", *, values: list[float] | None = None) -> Path:
    """A config and a store: `values` every 5 minutes back from AT (newest first), plus one
    out-of-range low reading 3 days back."""
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[hub]\nid = "hub-r"\n[store]\npath = "gw.db"\n{summaries}\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-1"\n',
        encoding="utf-8",
    )
    store = Store(tmp_path / "gw.db")
    for i, value in enumerate(values if values is not None else [100.0, 120.0, 140.0]):
        time = AT - timedelta(minutes=5 * (i + 1))
        store.add(
            Reading(
                device="cgm-1",
                driver="simulator",
                serial="SN",
                session="s",
                seq=i,
                time=time,
                received=time,
                glucose_mgdl=value,
            )
        )
    low = AT - timedelta(days=3)
    store.add(
        Reading(
            device="cgm-1",
            driver="simulator",
            serial="SN",
            session="s",
            seq=99999,
            time=low,
            received=low,
            glucose_mgdl=None,
            out_of_range="low",
        )
    )
    store.close()
    return config


def test_json_is_the_summary_payload(tmp_path: Path) -> None:
    write_setup(tmp_path)
    result = gatewayd(
        "report", "--config", "gw.toml", "--device", "cgm-1", "--format", "json",
        "--at", "2026-03-15T12:00:00Z", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    VALIDATOR.validate(payload)
    assert (payload["hub"], payload["device"]) == ("hub-r", "cgm-1")
    day, fortnight = payload["windows"]
    assert tuple(day) == WINDOW_KEYS
    assert (day["window"], day["from"], day["to"]) == (
        "24h",
        "2026-03-14T12:00:00.000Z",
        "2026-03-15T12:00:00.000Z",
    )
    assert (day["n"], day["mean_mgdl"], day["sd_mgdl"], day["gmi_pct"]) == (3, 120.0, 20.0, 6.18)
    assert day["coverage_pct"] == round(100 * 3 / 288, 2)
    assert (fortnight["window"], fortnight["n"], fortnight["days"]) == ("14d", 4, 2)
    assert (fortnight["tbr2_pct"], fortnight["tir_pct"]) == (25.0, 75.0)


def test_days_gives_one_window_and_config_sets_the_interval(tmp_path: Path) -> None:
    write_setup(tmp_path, "[summaries]\ninterval_minutes = 10\n", values=[150.0] * 72)
    result = gatewayd(
        "report", "-c", "gw.toml", "-d", "cgm-1", "--days", "3", "--format", "json",
        "--at", "2026-03-15T12:00:00+00:00", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (window,) = json.loads(result.stdout)["windows"]
    assert (window["window"], window["from"]) == ("3d", "2026-03-12T12:00:00.000Z")
    # 72 readings + the low one over 3 days at 10 minutes (432 expected).
    assert window["n"] == 73
    assert window["coverage_pct"] == round(100 * 73 / 432, 2)
    assert window["days"] == 2


def test_text_is_a_table_of_the_same_numbers(tmp_path: Path) -> None:
    write_setup(tmp_path)
    result = gatewayd(
        "report", "-c", "gw.toml", "-d", "cgm-1", "--at", "2026-03-15T12:00:00Z", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hub hub-r, device cgm-1"
    assert lines[1].split() == ["24h", "14d"]
    rows = {line[:17].strip(): line[17:].split() for line in lines[2:]}
    assert rows["readings"] == ["3", "4"]
    assert rows["mean mg/dL"] == ["120.0", "120.0"]
    assert rows["SD mg/dL"] == ["20.0", "20.0"]
    assert rows["very low <54 %"] == ["0.0", "25.0"]
    assert rows["in range 70-180 %"] == ["100.0", "75.0"]
    assert rows["days with data"] == ["1", "2"]


def test_the_store_is_only_read_even_beside_a_running_daemon(tmp_path: Path) -> None:
    write_setup(tmp_path)
    db = tmp_path / "gw.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    assert gatewayd("report", "-c", "gw.toml", "-d", "cgm-1", cwd=tmp_path).returncode == 0
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before

    daemon_store = Store(db)  # the daemon holds it open and writes
    try:
        time = datetime.now(UTC) - timedelta(minutes=1)
        daemon_store.add(
            Reading(
                device="cgm-1", driver="simulator", serial="SN", session="s", seq=7777,
                time=time, received=time, glucose_mgdl=260.0,
            )
        )  # fmt: skip
        result = gatewayd(
            "report", "-c", "gw.toml", "-d", "cgm-1", "--format", "json", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["windows"][0]["tar2_pct"] == 100.0
    finally:
        daemon_store.close()


@pytest.mark.parametrize(
    ("args", "status", "expected"),
    [
        (("-d", "cgm-9"), 2, "gatewayd: --device: no device 'cgm-9' in gw.toml"),
        (("-d", "cgm-1", "--days", "0"), 2, "gatewayd: --days: must be 1-366"),
        (("-d", "cgm-1", "--at", "noon"), 2, "gatewayd: --at: not an ISO-8601"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, args: tuple[str, ...], status: int, expected: str
) -> None:
    write_setup(tmp_path)
    line = one_line_error(gatewayd("report", "-c", "gw.toml", *args, cwd=tmp_path), status)
    assert line.startswith(expected), line


def test_a_missing_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('[hub]\nid = "h"\n[store]\npath = "none.db"\n')
    line = one_line_error(gatewayd("report", "-c", "gw.toml", "-d", "x", cwd=tmp_path), 1)
    assert line == "gatewayd: no store at none.db (has the daemon run with this config?)"
    assert not (tmp_path / "none.db").exists()


def test_a_bad_summaries_table_is_a_config_error(tmp_path: Path) -> None:
    write_setup(tmp_path, "[summaries]\nevery_minutes = 0\n")
    line = one_line_error(gatewayd("report", "-c", "gw.toml", "-d", "cgm-1", cwd=tmp_path), 2)
    assert line == "gatewayd: config error: gw.toml: summaries.every_minutes: must be > 0, got 0"


def test_times_and_zones_of_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time("2026-03-09", "--from", berlin) == datetime(2026, 3, 9, tzinfo=berlin)
    assert parse_time("2026-03-09", "--to", berlin, end=True) == datetime(
        2026, 3, 10, tzinfo=berlin
    )
    assert parse_time("2026-03-09T08:30", "--to", berlin, end=True) == datetime(
        2026, 3, 9, 7, 30, tzinfo=UTC
    )
    assert parse_time("2026-03-09T08:30:00-05:00", "--at", berlin) == datetime(
        2026, 3, 9, 13, 30, tzinfo=UTC
    )
    with pytest.raises(OptionError, match=r"^--from: not an ISO-8601 date or date-time: '9/3'$"):
        parse_time("9/3", "--from", berlin)

    monkeypatch.setenv("TZ", "America/New_York")
    assert zone(None) == ZoneInfo("America/New_York")
    assert zone("Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    monkeypatch.delenv("TZ")
    local = zone(None)  # /etc/localtime, or UTC without one
    assert datetime(2026, 1, 1, tzinfo=local).utcoffset() is not None
    with pytest.raises(OptionError, match=r"^--tz: unknown time zone 'Nowhere/Town'$"):
        zone("Nowhere/Town")


def test_text_in_mmol_when_the_hub_shows_mmol(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace('id = "hub-r"\n', 'id = "hub-r"\nunit = "mmol/L"\n')
    )
    args = ("report", "-c", "gw.toml", "-d", "cgm-1", "--at", "2026-03-15T12:00:00Z")
    text = gatewayd(*args, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    rows = {" ".join(line.split()[:-2]): line.split()[-2:] for line in text.stdout.splitlines()[2:]}
    assert rows["mean mmol/L"] == [f"{120 / 18.0156:.1f}"] * 2
    assert rows["SD mmol/L"] == [f"{20 / 18.0156:.1f}"] * 2
    assert rows["very low <3.0 %"] == ["0.0", "25.0"]
    assert rows["in range 3.9-10.0 %"] == ["100.0", "75.0"]
    assert "mg/dL" not in text.stdout
    # The JSON is the MQTT payload: mg/dL whatever the hub shows.
    payload = json.loads(gatewayd(*args, "--format", "json", cwd=tmp_path).stdout)
    assert payload["windows"][0]["mean_mgdl"] == 120.0
