"""A botched certificate rotation under a real `gatewayd run` (issue 10.1): the client key is
replaced by garbage while the daemon runs and the broker restarts. The daemon must not die (a
crash loop under systemd): it keeps storing the sensors' readings, reports the broker unavailable
with the reason (log and `gatewayd status`), retries, and delivers everything once the key is
fixed."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from mosquitto import Mosquitto
from polling import wait_until

from integration_support import GATEWAYD, DaemonProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

GARBAGE_KEY = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"


def mtls_config(folder: Path, broker: Mosquitto) -> Path:
    """A config for the broker's client-certificate listener, with copies of the PEM files."""
    assert broker.pki is not None
    folder.mkdir(parents=True)
    for source, name in (
        (broker.pki.ca_cert, "ca.pem"),
        (broker.pki.client_cert, "client.pem"),
        (broker.pki.client_key, "client.key"),
    ):
        shutil.copy(source, folder / name)
    (folder / "client.key").chmod(0o600)
    config = folder / "config.toml"
    config.write_text(
        f'[hub]\nid = "hub-{uuid.uuid4().hex[:8]}"\n\n[store]\npath = "store/gatewayd.db"\n\n'
        f'[mqtt]\nurl = "{broker.url(mtls=True)}"\nca_file = "ca.pem"\n'
        'cert_file = "client.pem"\nkey_file = "client.key"\nbackoff_min = 0.2\nbackoff_max = 1\n\n'
        '[log]\nformat = "json"\n\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-1"\ninterval = 60\nhistory = 86400\n'
        "speed = 60\nwarmup = 0\nmissed_rate = 0\ndropout_rate = 0\n"
    )
    return config


def broker_errors(daemon: DaemonProcess) -> list[str]:
    errors = []
    for line in daemon.log_path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "broker_unavailable":
            errors.append(str(event.get("error")))
    return errors


def outbox(daemon: DaemonProcess) -> int | None:
    """The outbox depth, None while the daemon is still creating its store."""
    try:
        return daemon.outbox_depth() if daemon.store_path.exists() else None
    except sqlite3.OperationalError:
        return None


def status_text(config: Path) -> str:
    return subprocess.run(
        [GATEWAYD, "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


async def test_garbage_key_at_run_time_is_retried_and_readings_are_kept(
    own_broker: Mosquitto, tmp_path: Path
) -> None:
    pki = own_broker.pki
    assert pki is not None
    config = mtls_config(tmp_path / "etc", own_broker)
    key = config.parent / "client.key"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        daemon.start()
        await wait_until(
            lambda: outbox(daemon) == 0 and len(daemon.stored()) >= 5, 30, "delivered over mTLS"
        )
        key.write_text(GARBAGE_KEY)  # the botched rotation
        own_broker.stop()
        own_broker.start()  # the next reconnect loads the garbage
        await wait_until(
            lambda: sum("not a PEM private key" in e for e in broker_errors(daemon)) >= 3,
            30,
            "retries that name the bad key",
        )
        stored = len(daemon.stored())
        await wait_until(lambda: len(daemon.stored()) >= stored + 5, 30, "readings still stored")
        assert daemon.process is not None
        assert daemon.process.poll() is None  # alive: no crash loop
        assert (outbox(daemon) or 0) > 0
        text = status_text(config)
        assert "broker link: unavailable since " in text
        assert f"key_file {key}: not a PEM private key" in text
        shutil.copy(pki.client_key, key)  # the rotation fixed
        await wait_until(lambda: outbox(daemon) == 0, 30, "everything delivered")
        assert daemon.terminate() == 0
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=10)
    assert all("Traceback" not in line for line in daemon.log_path.read_text().splitlines())
