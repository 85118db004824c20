"""`[alerts]` and `[devices.alerts]`: defaults, overrides, and one clear error per mistake."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gatewayd.daemon import Daemon, plan
from gatewayd.errors import ConfigError
from gatewayd.integrations.alerts import SPEC
from gatewayd.integrations.alerts.kinds import Kind
from gatewayd.integrations.alerts.service import AlertService
from gatewayd.integrations.alerts.settings import AlertsOptions, Thresholds, parse
from gatewayd.ops.config import parse as parse_config
from gatewayd.services import specs

FILE = Path("/etc/gatewayd/config.toml")
HEAD = '[hub]\nid = "hub1"\n'
DEVICES = '[[devices]]\ndriver = "simulator"\nid = "cgm1"\n'


def options(toml: str) -> AlertsOptions | None:
    return parse(parse_config(tomllib.loads(HEAD + toml), FILE))


def error(toml: str) -> str:
    with pytest.raises(ConfigError) as caught:
        options(toml)
    return str(caught.value)


def test_not_configured_without_any_alerts_table() -> None:
    assert options(DEVICES) is None


def test_an_empty_alerts_table_turns_alerts_on_with_the_defaults() -> None:
    parsed = options("[alerts]\n" + DEVICES)
    assert parsed is not None
    assert dict(parsed.devices) == {"cgm1": Thresholds()}
    t = parsed.devices["cgm1"]
    assert (t.urgent_low, t.low, t.high, t.very_high) == (54, 70, 180, 250)
    assert (t.signal_loss_minutes, t.predicted_low_minutes, t.realert_minutes) == (20, 20, 30)


def test_device_tables_override_the_alerts_defaults_key_by_key() -> None:
    toml = (
        '[alerts]\nlow = 75\nhigh = 200\ndisabled = ["rapid_rise"]\n'
        + DEVICES
        + "[devices.alerts]\nhigh = 220\nrealert_minutes = 0\n"
        + '[[devices]]\ndriver = "simulator"\nid = "cgm2"\n'
        + '[[devices]]\ndriver = "simulator"\nid = "cgm3"\n[devices.alerts]\nenabled = false\n'
    )
    parsed = options(toml)
    assert parsed is not None
    assert set(parsed.devices) == {"cgm1", "cgm2"}
    one, two = parsed.devices["cgm1"], parsed.devices["cgm2"]
    assert (one.low, one.high, one.realert_minutes) == (75, 220, 0)
    assert (two.low, two.high, two.realert_minutes) == (75, 200, 30)
    assert one.disabled == two.disabled == frozenset({Kind.RAPID_RISE})
    assert not one.enabled(Kind.RAPID_RISE)
    assert one.enabled(Kind.LOW)


def test_a_device_table_alone_turns_alerts_on_for_that_device_only() -> None:
    toml = DEVICES + "[devices.alerts]\nlow = 80\n" + '[[devices]]\ndriver = "x"\nid = "cgm2"\n'
    parsed = options(toml)
    assert parsed is not None
    assert set(parsed.devices) == {"cgm1"}
    assert parsed.devices["cgm1"].low == 80


def test_off_everywhere_means_no_service() -> None:
    assert options("[alerts]\nenabled = false\n" + DEVICES) is None


def test_a_device_can_turn_on_what_the_defaults_turn_off() -> None:
    toml = "[alerts]\nenabled = false\n" + DEVICES + "[devices.alerts]\nenabled = true\n"
    parsed = options(toml)
    assert parsed is not None
    assert set(parsed.devices) == {"cgm1"}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[alerts]\nlowe = 65\n", "/etc/gatewayd/config.toml: alerts.lowe: unknown key"),
        ("[alerts]\nhigh = 'x'\n", "alerts.high: must be a number, got 'x'"),
        ("[alerts]\nlow = 0\n", "alerts.low: must be > 0, got 0"),
        ("[alerts]\nlow = 50\n", "alerts.low: must be above urgent_low (54), got 50"),
        ("[alerts]\nurgent_low = 72\n", "alerts.urgent_low: must be below low (70), got 72"),
        ("[alerts]\nvery_high = 180\n", "alerts.very_high: must be above high (180), got 180"),
        ("[alerts]\nenabled = 1\n", "alerts.enabled: must be true or false, got 1"),
        ("[alerts]\nhysteresis_mgdl = 50\n", "alerts.hysteresis_mgdl: must be <= 40, got 50"),
        ("[alerts]\nrealert_minutes = -1\n", "alerts.realert_minutes: must be >= 0, got -1"),
        ("[alerts]\nsignal_loss_minutes = 0\n", "alerts.signal_loss_minutes: must be > 0, got 0"),
        (
            "[alerts]\nrapid_fall_rate = 1\n",
            "alerts.rapid_fall_rate: must be above rate_hysteresis (1), got 1",
        ),
        ('[alerts]\ndisabled = ["loww"]\n', "alerts.disabled: unknown alert kind 'loww'; known: "),
        ("[alerts]\ndisabled = 'low'\n", "alerts.disabled: must be a list of alert kinds"),
    ],
)
def test_errors_name_the_file_the_key_and_the_reason(toml: str, message: str) -> None:
    assert message in error(toml + DEVICES)


@pytest.mark.parametrize(
    ("device_table", "message"),
    [
        ("lo = 1\n", "devices[0].alerts.lo: unknown key"),
        ("low = 50\n", "devices[0].alerts.low: must be above urgent_low (54), got 50"),
        ("high = 60\n", "devices[0].alerts.high: must be above low (70), got 60"),
    ],
)
def test_device_table_errors_point_into_the_device_table(device_table: str, message: str) -> None:
    assert message in error("[alerts]\n" + DEVICES + "[devices.alerts]\n" + device_table)


def test_an_order_conflict_with_the_defaults_blames_the_key_the_device_set() -> None:
    # [alerts] raised urgent_low; the device lowered low below it: the device's key is wrong.
    toml = "[alerts]\nurgent_low = 60\n" + DEVICES + "[devices.alerts]\nlow = 58\n"
    assert "devices[0].alerts.low: must be above urgent_low (60), got 58" in error(toml)


def test_the_service_is_registered() -> None:
    assert SPEC in specs()
    assert SPEC.name == "alerts"


def test_every_documented_key_is_accepted() -> None:
    keys: dict[str, Any] = {
        "enabled": True,
        "urgent_low": 55,
        "low": 72,
        "high": 190,
        "very_high": 260,
        "hysteresis_mgdl": 4,
        "rapid_fall_rate": 2,
        "rapid_rise_rate": 2.5,
        "rate_hysteresis": 0.5,
        "predicted_low_minutes": 15,
        "signal_loss_minutes": 25,
        "stale_minutes": 8,
        "realert_minutes": 45,
        "disabled": ["battery_low"],
    }
    config = parse_config(
        {"hub": {"id": "h"}, "alerts": keys, "devices": [{"driver": "x", "id": "d"}]}
    )
    parsed = parse(config)
    assert parsed is not None
    t = parsed.devices["d"]
    assert {k: getattr(t, k) for k in keys if k not in {"enabled", "disabled"}} == {
        k: v for k, v in keys.items() if k not in {"enabled", "disabled"}
    }
    assert t.disabled == frozenset({Kind.BATTERY_LOW})


def test_the_daemon_builds_the_service_for_its_enabled_devices(tmp_path: Path) -> None:
    config = parse_config(
        {
            "hub": {"id": "hub1"},
            "store": {"path": str(tmp_path / "store.db")},
            "alerts": {"low": 75},
            "devices": [
                {"driver": "simulator", "id": "cgm1"},
                {"driver": "simulator", "id": "cgm2", "enabled": False},
            ],
        },
        tmp_path / "config.toml",
    )
    daemon = Daemon(plan(config))
    try:
        (service,) = [s for s in daemon.services if isinstance(s, AlertService)]
        assert set(service.thresholds) == {"cgm1"}
        assert service.thresholds["cgm1"].low == 75
        assert service.on_reading in daemon.supervisor.listeners
    finally:
        daemon.store.close()
