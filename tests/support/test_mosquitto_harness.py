"""The test broker harness itself (mosquitto): auth, TLS, restart, kill."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import aiomqtt
import pytest

from mosquitto import Mosquitto, free_port, wait_for_port
from subscriber import Subscriber

pytestmark = pytest.mark.timeout(30)


def _client(
    broker: Mosquitto,
    *,
    username: str | None = None,
    password: str | None = None,
    port: int | None = None,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> aiomqtt.Client:
    return aiomqtt.Client(
        host,
        port if port is not None else broker.port,
        username=username,
        password=password,
        identifier=f"harness-{uuid.uuid4().hex[:8]}",
        tls_context=tls,
        timeout=5,
    )


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


async def _roundtrip(client: aiomqtt.Client, topic: str) -> bytes:
    """Publish to `topic` through `client` and read it back through the same client."""
    await client.subscribe(topic, qos=1)
    await client.publish(topic, b"ping", qos=1)
    async with asyncio.timeout(5):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("no message")


async def _read_until_disconnected(client: aiomqtt.Client, within: float) -> None:
    async with asyncio.timeout(within):
        async for _ in client.messages:
            pass


async def test_password_auth_accepts_the_configured_user(broker: Mosquitto) -> None:
    async with _client(broker, username=broker.username, password=broker.password) as client:
        assert await _roundtrip(client, f"harness/{uuid.uuid4().hex}") == b"ping"


@pytest.mark.parametrize(
    ("username", "password"),
    [(None, None), ("gateway", "not-the-password"), ("nobody", "s3cret-test-password")],
    ids=["anonymous", "wrong-password", "unknown-user"],
)
async def test_auth_rejects(broker: Mosquitto, username: str | None, password: str | None) -> None:
    client = _client(broker, username=username, password=password)
    with pytest.raises(aiomqtt.MqttCodeError) as caught:
        async with client:
            pass
    # 5 = CONNACK "not authorised" (3.1.1); 135 = "Not authorized" (5.0).
    assert caught.value.rc in (5, 135)


async def test_tls_listener_with_the_test_ca(broker: Mosquitto) -> None:
    assert broker.pki is not None
    tls = ssl.create_default_context(cafile=str(broker.pki.ca_cert))
    async with _client(
        broker,
        host="localhost",
        port=broker.tls_port,
        tls=tls,
        username=broker.username,
        password=broker.password,
    ) as client:
        assert await _roundtrip(client, f"harness/{uuid.uuid4().hex}") == b"ping"


async def test_tls_listener_still_requires_a_password(broker: Mosquitto) -> None:
    assert broker.pki is not None
    tls = ssl.create_default_context(cafile=str(broker.pki.ca_cert))
    client = _client(broker, host="localhost", port=broker.tls_port, tls=tls)
    with pytest.raises(aiomqtt.MqttCodeError):
        async with client:
            pass


async def test_mtls_listener_accepts_the_client_certificate(broker: Mosquitto) -> None:
    assert broker.pki is not None
    tls = ssl.create_default_context(cafile=str(broker.pki.ca_cert))
    tls.load_cert_chain(broker.pki.client_cert, broker.pki.client_key)
    async with _client(broker, host="localhost", port=broker.mtls_port, tls=tls) as client:
        assert await _roundtrip(client, f"harness/{uuid.uuid4().hex}") == b"ping"


async def test_mtls_listener_refuses_a_client_without_certificate(broker: Mosquitto) -> None:
    assert broker.pki is not None
    tls = ssl.create_default_context(cafile=str(broker.pki.ca_cert))
    # With TLS 1.3 the server's refusal arrives after the client's handshake completed, and
    # aiomqtt then waits for its full timeout; TLS 1.2 makes the refusal a handshake error.
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    client = _client(
        broker,
        host="localhost",
        port=broker.mtls_port,
        tls=tls,
        username=broker.username,
        password=broker.password,
    )
    with pytest.raises(aiomqtt.MqttError) as caught:
        async with client:
            pass
    assert "timed out" not in str(caught.value)


async def test_restart_keeps_ports_and_forgets_retained(own_broker: Mosquitto) -> None:
    ports = (own_broker.port, own_broker.tls_port, own_broker.mtls_port)
    topic = f"harness/{uuid.uuid4().hex}"
    async with _client(
        own_broker, username=own_broker.username, password=own_broker.password
    ) as client:
        await client.publish(topic, b"kept?", qos=1, retain=True)

    own_broker.stop()
    assert not own_broker.running
    assert all(_refuses(port) for port in ports)

    own_broker.start()
    assert own_broker.running
    assert (own_broker.port, own_broker.tls_port, own_broker.mtls_port) == ports
    # Persistence is off: the retained message did not survive. A marker published after the
    # subscription proves the subscription works, and that nothing retained came before it.
    async with Subscriber(own_broker, [topic]) as sub:
        async with _client(
            own_broker, username=own_broker.username, password=own_broker.password
        ) as client:
            await client.publish(topic, b"marker", qos=1)
        messages = await sub.wait_for(lambda m: len(m) >= 1, timeout=5)
    assert [m.payload for m in messages] == [b"marker"]


async def test_kill_drops_connected_clients_at_once(own_broker: Mosquitto) -> None:
    client = _client(own_broker, username=own_broker.username, password=own_broker.password)
    async with client:
        await client.subscribe("harness/#", qos=1)
        own_broker.stop(kill=True)
        assert not own_broker.running
        # Far below the client's 5 s timeout: the socket closes with the process.
        with pytest.raises(aiomqtt.MqttError):
            await _read_until_disconnected(client, within=2)
    assert _refuses(own_broker.port)
    own_broker.stop()  # stopping a stopped broker is a no-op
    assert not own_broker.running


def test_start_is_idempotent_and_stop_twice_is_harmless(tmp_path: Path) -> None:
    server = Mosquitto(tmp_path / "m")
    server.start()
    try:
        first = server._process
        server.start()
        assert server._process is first
        assert not _refuses(server.port)
    finally:
        server.stop()
    server.stop()
    assert not server.running
    assert _refuses(server.port)


def test_wait_for_port_times_out_on_a_closed_port() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=str(port)):
        wait_for_port(port, timeout=0.2)


def test_wait_for_port_reports_a_dead_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(RuntimeError, match="exited with 3"):
            wait_for_port(free_port(), timeout=10, process=process)
    finally:
        process.wait()


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)  # no outgoing connection can take them as source


def _listening(port: int) -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen()
    return taken


def test_a_first_start_moves_off_a_port_another_program_took(tmp_path: Path) -> None:
    taken_port = free_port()
    server = Mosquitto(tmp_path / "broker", port=taken_port)
    with _listening(taken_port):
        server.start()
        try:
            assert server.running
            assert server.port != taken_port
            assert not _refuses(server.port)
        finally:
            server.stop()


def test_a_restart_keeps_its_ports_and_a_refused_one_says_why(tmp_path: Path) -> None:
    server = Mosquitto(tmp_path / "broker")
    server.start()
    port = server.port
    server.stop()
    with _listening(port), pytest.raises(RuntimeError, match="Address already in use"):
        server.start()
    assert server.port == port
    assert not server.running
