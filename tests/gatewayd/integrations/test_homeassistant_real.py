"""The real Home Assistant (2025.4.4, its own Python 3.13 venv) against the real mosquitto and
the real daemon (`gatewayd run` with two simulated CGMs): the entities it creates from the
discovery, their states, their devices, and their availability on a clean stop and a kill -9.

The venv is built once (`home_assistant_harness.prepare`) in `$GATEWAYD_HA_VENV`, else
`.venv-ha/` at the top of the work tree (git-ignored; `.ci/run` builds it before the tests).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import home_assistant_harness as ha_harness
from gatewayd.integrations.homeassistant import DIRECTION_NAMES
from home_assistant_harness import HomeAssistant
from mosquitto import Mosquitto

from integration_support import DaemonProcess, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TOP = Path(__file__).resolve().parents[3]
#: The simulator replays an hour of history at once, then reads every 5 minutes.
SIMULATED = "history = 3600\nspeed = 36000\nwarmup = 0\ndropout_rate = 0\nmissed_rate = 0\n"


@pytest.fixture(scope="session")
def ha_python() -> Path:
    python = ha_harness.find_python()
    if python is None:
        pytest.skip(
            "no Python 3.13 (pyenv's 3.13.x, python3.13 on PATH or $GATEWAYD_HA_PYTHON): "
            f"Home Assistant {ha_harness.VERSION} needs one"
        )
    venv = Path(os.environ.get("GATEWAYD_HA_VENV", TOP / ".venv-ha"))
    return ha_harness.prepare(venv, python)


@pytest.fixture
def home_assistant(ha_python: Path, tmp_path: Path, broker: Mosquitto) -> Iterator[HomeAssistant]:
    with ha_harness.running(ha_python, tmp_path / "homeassistant", broker) as ha:
        yield ha


def by_name(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    """Every entity's state object, by its friendly name ("<device> <entity>")."""
    return {s["attributes"].get("friendly_name", ""): s for s in ha.states().values()}


def having(ha: HomeAssistant, *names: str) -> dict[str, dict[str, Any]] | None:
    """`by_name`, once every one of `names` exists."""
    states = by_name(ha)
    return states if all(name in states for name in names) else None


def known(ha: HomeAssistant, name: str) -> dict[str, dict[str, Any]] | None:
    """`by_name`, once entity `name` has a state (neither unknown nor unavailable)."""
    states = having(ha, name)
    ok = states is not None and states[name]["state"] not in {"unknown", "unavailable"}
    return states if ok else None


def newest(store: Path, device: str) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        (record,) = db.execute(
            "SELECT record FROM readings WHERE device = ? ORDER BY time_ms DESC LIMIT 1", (device,)
        ).fetchone()
    finally:
        db.close()
    return dict(json.loads(record))


def retained(broker: Mosquitto, topic: str) -> dict[str, Any]:
    """The retained message of `topic`, read by a fresh subscriber."""
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", broker.username,
         "-P", broker.password, "-t", topic, "-C", "1", "-W", "10"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def test_home_assistant_shows_the_hub_and_its_cgms(
    home_assistant: HomeAssistant, broker: Mosquitto, tmp_path: Path
) -> None:
    ha = home_assistant
    hub = f"hub-{os.urandom(4).hex()}"
    config = write_config(
        tmp_path / "hub",
        broker,
        {"cgm-a": SIMULATED + "[devices.alerts]\nlow = 75\n", "cgm-b": SIMULATED},
        hub=hub,
        # Summaries every 6 s, not 15 min: the first one, at start, saw no reading yet.
        extra='[homeassistant]\nunit = "mg/dL"\n[summaries]\nevery_minutes = 0.1\n',
    )
    daemon = DaemonProcess(config, tmp_path / "gatewayd.log")
    hub_name = f"gatewayd {hub}"
    daemon.start()
    try:
        names = ha.wait(
            lambda h: having(
                h, f"{hub_name} Last delivery", "cgm-b Time in range (14d)", "cgm-a Alert"
            ),
            "the entities of the hub and both CGMs",
        )
        # Entities: the alert only where alerts are configured.
        assert "cgm-b Alert" not in names
        for device in ("cgm-a", "cgm-b"):
            for entity in ("Glucose", "Trend", "Direction", "Last reading", "Link",
                           "Time in range (24h)", "Time below 70 mg/dL (14d)",
                           "Time above 180 mg/dL (14d)", "GMI (14d)", "CV (14d)",
                           "Mean glucose (14d)"):  # fmt: skip
                assert f"{device} {entity}" in names, (device, entity)

        # States: the newest stored reading, in words for the direction.
        def settled(h: HomeAssistant) -> tuple[dict[str, Any], dict[str, Any]] | None:
            n = by_name(h)
            want = newest(daemon.store_path, "cgm-a")
            state = n["cgm-a Glucose"]["state"]
            if state in {"unknown", "unavailable"}:
                return None
            value = want["glucose_mgdl"]
            if value is None:  # LO / HI show as Nightscout's 39 / 401
                value = 39.0 if want["out_of_range"] == "low" else 401.0
            return (n, want) if float(state) == value else None

        names, want = ha.wait(settled, "cgm-a Glucose = the newest stored reading")
        glucose = names["cgm-a Glucose"]
        assert glucose["attributes"]["unit_of_measurement"] == "mg/dL"
        assert glucose["attributes"]["device_class"] == "blood_glucose_concentration"
        assert glucose["attributes"]["state_class"] == "measurement"
        direction = names["cgm-a Direction"]
        assert direction["attributes"]["direction"] == want["direction"]
        assert direction["state"] == DIRECTION_NAMES.get(want["direction"], "unknown")
        assert names["cgm-a Link"]["state"] == "connected"

        # The summary sensors: the retained summary's values.
        names = ha.wait(lambda h: known(h, "cgm-b Time in range (14d)"), "the summary sensors")
        summary = retained(broker, f"gatewayd/{hub}/cgm-b/summary")
        window = next(w for w in summary["windows"] if w["window"] == "14d")
        assert float(names["cgm-b Time in range (14d)"]["state"]) == pytest.approx(
            window["tir_pct"], abs=0.01
        )
        assert float(names["cgm-b Mean glucose (14d)"]["state"]) == pytest.approx(
            window["mean_mgdl"], abs=0.01
        )
        assert names["cgm-b GMI (14d)"]["attributes"]["state_class"] == "measurement"

        # The devices: model and firmware as the sensor reported them, under the hub.
        glucose_id = names["cgm-a Glucose"]["entity_id"]
        hub_id = names[f"{hub_name} Connectivity"]["entity_id"]
        device = f"device_id('{glucose_id}')"
        assert ha.template(f"{{{{ device_attr({device}, 'model') }}}}") == "Simulated CGM"
        assert ha.template(f"{{{{ device_attr({device}, 'manufacturer') }}}}") == "gatewayd"
        assert ha.template(f"{{{{ device_attr({device}, 'sw_version') }}}}") not in {"", "None"}
        assert (
            ha.template(
                f"{{{{ device_attr({device}, 'via_device_id') == device_id('{hub_id}') }}}}"
            )
            == "True"
        )

        # The hub: connected, nothing waiting, a recent delivery.
        names = ha.wait(lambda h: known(h, f"{hub_name} Last delivery"), "the last delivery")
        assert names[f"{hub_name} Connectivity"]["state"] == "on"
        assert names[f"{hub_name} Readings waiting"]["state"] == "0"

        # Availability: a clean stop says offline at once.
        def offline(h: HomeAssistant) -> bool:
            states = by_name(h)
            return (
                states["cgm-a Glucose"]["state"] == "unavailable"
                and states[f"{hub_name} Connectivity"]["state"] == "off"
            )

        daemon.terminate()
        ha.wait(offline, "unavailable after a clean stop")
        assert by_name(ha)["cgm-b Time in range (14d)"]["state"] == "unavailable"
        # ... and so does the broker, for the hub, on a kill -9.
        daemon.start()
        ha.wait(lambda h: by_name(h)["cgm-a Glucose"]["state"] != "unavailable", "back")
        daemon.kill()
        ha.wait(offline, "unavailable after kill -9")
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.terminate()
    # Nothing Home Assistant disliked in what the hub announced.
    complaints = [
        line for line in ha.log.read_text(errors="replace").splitlines()
        if ("WARNING" in line or "ERROR" in line) and ("mqtt" in line.lower() or hub in line)
    ]  # fmt: skip
    assert complaints == []
