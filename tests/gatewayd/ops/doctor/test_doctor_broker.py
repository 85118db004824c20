"""doctor's broker check against the real mosquitto of the test session: each failure says
which step failed (TCP, TLS, MQTT login) and what to change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from certs import make_pki
from gatewayd.ops import config
from gatewayd.ops.config import MqttConfig
from gatewayd.ops.doctor.broker import check_broker
from gatewayd.ops.doctor.core import Status
from mosquitto import Mosquitto, free_port
from subscriber import Subscriber


def mqtt(broker: Mosquitto, **table: Any) -> MqttConfig:
    """The `[mqtt]` table as the config parser makes it (defaults: the plain listener)."""
    base: dict[str, Any] = {
        "url": broker.url(),
        "username": broker.username,
        "password": broker.password,
    }
    base.update(table)
    data = {"hub": {"id": "doctor-test"}, "mqtt": {k: v for k, v in base.items() if v is not None}}
    return config.parse(data, None).mqtt


async def check(cfg: MqttConfig, step_s: float = 3.0) -> tuple[Status, str, str | None]:
    started = time.monotonic()
    result = await check_broker(cfg, step_s=step_s)
    assert time.monotonic() - started < 8
    assert result.check == "broker"
    assert "\n" not in result.line()
    assert cfg.password is None or cfg.password not in result.line()
    return result.status, result.message, result.hint


async def test_ok_plain(broker: Mosquitto) -> None:
    status, message, hint = await check(mqtt(broker))
    assert status == Status.OK
    assert message == f"{broker.url()} reachable, authenticated as gateway (MQTT 5)"
    assert hint is None


async def test_ok_mqtt_311(broker: Mosquitto) -> None:
    status, message, _ = await check(mqtt(broker, protocol="3.1.1"))
    assert status == Status.OK
    assert "(MQTT 3.1.1)" in message


async def test_ok_tls_verified(broker: Mosquitto) -> None:
    assert broker.pki is not None
    cfg = mqtt(broker, url=broker.url(tls=True), ca_file=str(broker.pki.ca_cert))
    status, message, _ = await check(cfg)
    assert status == Status.OK
    assert message.startswith(f"mqtts://localhost:{broker.tls_port} reachable, TLS verified (TLS")
    assert message.endswith("authenticated as gateway (MQTT 5)")


async def test_ok_client_certificate(broker: Mosquitto) -> None:
    assert broker.pki is not None
    cfg = mqtt(
        broker,
        url=broker.url(mtls=True),
        username=None,
        password=None,
        ca_file=str(broker.pki.ca_cert),
        cert_file=str(broker.pki.client_cert),
        key_file=str(broker.pki.client_key),
    )
    status, message, _ = await check(cfg)
    assert status == Status.OK, message
    assert "TLS verified" in message
    assert "connected anonymously" in message  # the certificate is the identity


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_wrong_password(broker: Mosquitto, protocol: str) -> None:
    cfg = mqtt(broker, password="not-the-password", protocol=protocol)
    status, message, hint = await check(cfg)
    assert status == Status.FAIL
    assert message.startswith(f"{broker.url()}: reachable, not authorised (")
    assert hint is not None
    assert "username (gateway)" in hint
    assert "password_file" in hint


async def test_no_credentials_when_the_broker_wants_them(broker: Mosquitto) -> None:
    status, message, hint = await check(mqtt(broker, username=None, password=None))
    assert status == Status.FAIL
    assert "not authorised" in message
    assert hint is not None
    assert "set [mqtt] username and password_file" in hint


async def test_tls_with_the_wrong_ca(broker: Mosquitto, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other-ca")
    cfg = mqtt(broker, url=broker.url(tls=True), ca_file=str(other.ca_cert))
    status, message, hint = await check(cfg)
    assert status == Status.FAIL
    assert message.startswith(f"{broker.url(tls=True)}: TLS certificate verify failed")
    assert hint is not None
    assert "ca_file" in hint
    assert str(other.ca_cert) in hint


async def test_tls_with_system_cas_only(broker: Mosquitto) -> None:
    """No ca_file: the test CA is in no system store, so verification must fail (it is on)."""
    status, message, hint = await check(mqtt(broker, url=broker.url(tls=True)))
    assert status == Status.FAIL
    assert "TLS certificate verify failed" in message
    assert hint == "set [mqtt] ca_file to the CA that signed the broker's certificate"


async def test_tls_hostname_mismatch(broker: Mosquitto, tmp_path: Path) -> None:
    """The server certificate names localhost and 127.0.0.1; another name for the same host."""
    assert broker.pki is not None
    cfg = mqtt(
        broker, url=f"mqtts://[::ffff:127.0.0.1]:{broker.tls_port}", ca_file=str(broker.pki.ca_cert)
    )
    status, message, hint = await check(cfg)
    if "TLS" not in message:  # the TCP step failed: no IPv6 (or no v4-mapped addresses) here
        pytest.skip(f"no IPv4-mapped IPv6 on this machine: {message}")
    assert status == Status.FAIL
    assert "verify failed" in message
    assert hint is not None
    assert "does not name ::ffff:127.0.0.1" in hint


async def test_client_certificate_required(broker: Mosquitto) -> None:
    assert broker.pki is not None
    cfg = mqtt(broker, url=broker.url(mtls=True), ca_file=str(broker.pki.ca_cert))
    status, message, hint = await check(cfg)
    assert status == Status.FAIL
    assert "requires a client certificate" in message or "client certificate" in (hint or "")
    assert hint is not None
    assert "cert_file" in hint


async def test_unreachable_port() -> None:
    port = free_port()
    cfg = config.parse({"hub": {"id": "h"}, "mqtt": {"url": f"mqtt://127.0.0.1:{port}"}}).mqtt
    status, message, hint = await check(cfg)
    assert status == Status.FAIL
    assert message == f"mqtt://127.0.0.1:{port}: 127.0.0.1:{port} refused the connection"
    assert hint is not None
    assert "broker running" in hint


async def test_unresolvable_host() -> None:
    cfg = config.parse({"hub": {"id": "h"}, "mqtt": {"url": "mqtt://no-such-host.invalid"}}).mqtt
    status, message, hint = await check(cfg)
    assert status == Status.FAIL
    assert "cannot resolve no-such-host.invalid" in message
    assert hint is not None


async def test_no_answer_is_a_timeout() -> None:
    """A listener that accepts TCP but never speaks (a black-holed or wrong port)."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with silent:
        cfg = config.parse({"hub": {"id": "h"}, "mqtt": {"url": f"mqtt://127.0.0.1:{port}"}}).mqtt
        status, message, hint = await check(cfg, step_s=1.0)
    assert status == Status.FAIL
    assert "no MQTT answer in 1 s" in message
    assert hint == "is this the broker's MQTT port?"


async def test_plain_client_on_the_tls_port(broker: Mosquitto) -> None:
    cfg = mqtt(broker, url=f"mqtt://localhost:{broker.tls_port}")
    status, message, hint = await check(cfg, step_s=1.0)
    assert status == Status.FAIL
    assert "the port speaks TLS" in message
    assert hint is not None
    assert hint.startswith(f"use mqtts://localhost:{broker.tls_port}")


async def test_tls_client_on_the_plain_port(broker: Mosquitto) -> None:
    assert broker.pki is not None
    cfg = mqtt(broker, url=f"mqtts://localhost:{broker.port}", ca_file=str(broker.pki.ca_cert))
    status, message, hint = await check(cfg, step_s=2.0)
    assert status == Status.FAIL
    assert "TLS handshake failed" in message or "no TLS handshake" in message
    assert hint == f"is port {broker.port} a TLS listener? Use mqtt:// for a plain one"


async def test_doctor_never_disturbs_the_running_daemon(broker: Mosquitto) -> None:
    """The check uses its own client id and no will: a connected client with the daemon's id is
    not kicked off, and no `offline` is published for the hub."""
    cfg = mqtt(broker)
    hub_status = f"gatewayd/{cfg.client_id}/status"
    async with Subscriber(broker, ["gatewayd/#"], client_id=cfg.client_id) as daemon_like:
        status, _, _ = await check(cfg)
        assert status == Status.OK
        # Still connected: a message published after the check reaches it.
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=broker.username, password=broker.password
        ) as other:
            await other.publish("gatewayd/ping", b"1", qos=1)
        await daemon_like.wait_for(lambda m: any(x.topic == "gatewayd/ping" for x in m), 5)
    assert not [m for m in daemon_like.messages if m.topic == hub_status]
