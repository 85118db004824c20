"""The broker check: a real connection, step by step, so a failure says which step failed.

1. TCP: name resolution, refused, no answer (timeout), unreachable;
2. TLS (mqtts://): the daemon's own TLS context (`gatewayd.mqtt.publisher.tls_context`: verification
   always on), so "certificate verify failed" here is what the daemon would hit; then a short read
   that catches a broker demanding or refusing a client certificate (TLS 1.3 says so only after
   the handshake);
3. MQTT: CONNECT with the configured credentials and protocol; "not authorised" and the other
   CONNACK refusals, or no CONNACK at all (a plain client on a TLS port).

The check connects as `<client_id>-doctor` with no will: reusing the daemon's client id would
disconnect the running daemon, and its will would announce the hub `offline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from gatewayd.errors import TlsFileError
from gatewayd.mqtt.publisher import tls_context
from gatewayd.ops.config import MqttConfig
from gatewayd.ops.doctor.core import Result, fail, ok

#: aiomqtt/paho log socket errors as warnings; the check reports them itself.
_QUIET = logging.getLogger("gatewayd.ops.doctor.mqtt")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False
#: How long to wait after the TLS handshake for a broker that rejects the client certificate.
_ALERT_WAIT = 0.3
#: CONNACK codes meaning "who you are is not accepted" (3.1.1 return codes, MQTT 5 reason codes).
_AUTH = {4, 5, 134, 135, 138}


@dataclass(frozen=True, slots=True)
class _Step:
    """A failed step: what happened and what to do."""

    message: str
    hint: str | None = None


def doctor_client(cfg: MqttConfig, *, timeout: float, suffix: str = "doctor") -> aiomqtt.Client:
    """A client with the daemon's credentials, TLS and protocol, its own client id, no will."""
    return aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.password,
        identifier=f"{cfg.client_id or 'gatewayd'}-{suffix}",
        protocol=(
            aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311
        ),
        tls_context=tls_context(cfg),
        timeout=timeout,
        logger=_QUIET,
    )


async def check_broker(cfg: MqttConfig, *, step_s: float = 5.0) -> Result:
    """Reach, verify and log in to the configured broker, as the daemon would."""
    url = cfg.url
    step = await _tcp(cfg, step_s)
    if step is not None:
        return fail("broker", f"{url}: {step.message}", step.hint)
    parts = ["reachable"]
    if cfg.tls:
        tls = await _tls(cfg, step_s)
        if isinstance(tls, _Step):
            return fail("broker", f"{url}: {tls.message}", tls.hint)
        parts.append(f"TLS verified ({tls})")
    step = await _mqtt(cfg, step_s)
    if step is not None:
        return fail("broker", f"{url}: {', '.join(parts)}, {step.message}", step.hint)
    who = f"authenticated as {cfg.username}" if cfg.username else "connected anonymously"
    parts.append(f"{who} (MQTT {cfg.protocol})")
    return ok("broker", f"{url} {', '.join(parts)}")


async def _tcp(cfg: MqttConfig, step_s: float) -> _Step | None:
    where = f"{cfg.host}:{cfg.port}"
    try:
        async with asyncio.timeout(step_s):
            _, writer = await asyncio.open_connection(cfg.host, cfg.port)
    except socket.gaierror as exc:
        return _Step(
            f"cannot resolve {cfg.host} ({exc.strerror})", "check [mqtt] url and the hub's DNS"
        )
    except ConnectionRefusedError:
        return _Step(
            f"{where} refused the connection",
            "is the broker running and listening on this port? (systemctl status mosquitto)",
        )
    except TimeoutError:
        return _Step(
            f"no answer from {where} in {step_s:g} s",
            "check the host and port, the network and any firewall between the hub and the broker",
        )
    except OSError as exc:
        return _Step(f"{where}: {exc.strerror or exc}", "check the network route to the broker")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _verify_hint(cfg: MqttConfig, exc: ssl.SSLCertVerificationError) -> str:
    reason = (exc.verify_message or "").lower()
    if "hostname" in reason or "ip address mismatch" in reason:
        return f"the broker's certificate does not name {cfg.host}: use the name it was issued to"
    if "expired" in reason or "not yet valid" in reason:
        return "renew the broker's certificate, and check the hub's clock (see the clock check)"
    if cfg.ca_file is not None:
        return f"[mqtt] ca_file ({cfg.ca_file}) is not the CA that signed the broker's certificate"
    return "set [mqtt] ca_file to the CA that signed the broker's certificate"


async def _tls(cfg: MqttConfig, step_s: float) -> str | _Step:
    """The TLS version on success, else the failed step."""
    try:
        context = tls_context(cfg)
    except (TlsFileError, ssl.SSLError, OSError) as exc:
        return _Step(
            f"cannot load the client certificate/key: {exc}",
            "check [mqtt] cert_file and key_file (a PEM certificate and its matching key)",
        )
    assert context is not None  # noqa: S101 - cfg.tls
    try:
        async with asyncio.timeout(step_s):
            reader, writer = await asyncio.open_connection(
                cfg.host, cfg.port, ssl=context, server_hostname=cfg.host
            )
    except ssl.SSLCertVerificationError as exc:
        return _Step(f"TLS certificate verify failed: {exc.verify_message}", _verify_hint(cfg, exc))
    except (OSError, EOFError) as exc:  # ssl.SSLError and ConnectionError are OSErrors
        reason = str(getattr(exc, "reason", None) or exc)
        if "ALERT" in reason.upper():  # the broker rejected us during the handshake (TLS 1.2)
            return _Step(
                f"the broker refused the TLS handshake ({reason})",
                "it may require (another) client certificate: check [mqtt] cert_file, key_file",
            )
        return _Step(
            f"TLS handshake failed ({reason})",
            f"is port {cfg.port} a TLS listener? Use mqtt:// for a plain one",
        )
    except TimeoutError:
        return _Step(
            f"no TLS handshake in {step_s:g} s",
            f"is port {cfg.port} a TLS listener? Use mqtt:// for a plain one",
        )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        version = ssl_object.version() if ssl_object is not None else "TLS"
        return await _after_handshake(cfg, reader) or str(version)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _after_handshake(cfg: MqttConfig, reader: asyncio.StreamReader) -> _Step | None:
    """A broker that wants (another) client certificate says so right after the handshake."""
    try:
        async with asyncio.timeout(_ALERT_WAIT):
            data = await reader.read(1)
    except TimeoutError:
        return None  # silence: it waits for our CONNECT, as it should
    except (ssl.SSLError, ConnectionError) as exc:
        reason = str(getattr(exc, "reason", None) or exc)
        if "CERTIFICATE_REQUIRED" in reason.upper() or cfg.cert_file is None:
            return _Step(
                f"the broker requires a client certificate ({reason})",
                "set [mqtt] cert_file and key_file",
            )
        return _Step(
            f"the broker refused the client certificate ({reason})",
            "the broker does not trust [mqtt] cert_file: issue it from the broker's client CA",
        )
    if not data:
        return _Step(
            "the broker closed the connection after the TLS handshake",
            "it may require (another) client certificate: check [mqtt] cert_file and key_file",
        )
    return None


def _code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    return rc if isinstance(rc, int) else None


async def _mqtt(cfg: MqttConfig, step_s: float) -> _Step | None:
    try:
        async with asyncio.timeout(step_s + 1.0), doctor_client(cfg, timeout=step_s):
            return None
    except aiomqtt.MqttCodeError as exc:
        return _refused(cfg, exc)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError) or "timed out" in text.lower():
            if not cfg.tls and await _speaks_tls(cfg, step_s):
                return _Step(
                    f"no MQTT answer in {step_s:g} s: the port speaks TLS",
                    f"use mqtts://{cfg.host}:{cfg.port} (with ca_file if the CA is private)",
                )
            return _Step(f"no MQTT answer in {step_s:g} s", "is this the broker's MQTT port?")
        return _Step(f"MQTT connection failed: {text}")


def _refused(cfg: MqttConfig, exc: aiomqtt.MqttCodeError) -> _Step:
    code = _code(exc)
    reason = str(exc.rc) if exc.rc is not None else str(exc)
    if code in _AUTH:
        if cfg.username is None:
            hint = (
                "the broker wants a login: set [mqtt] username and password_file "
                "(or password_credential)"
            )
        else:
            hint = (
                f"check [mqtt] username ({cfg.username}) and the password "
                "(password_file / password_credential) against the broker's password file and ACL"
            )
        return _Step(f"not authorised ({reason})", hint)
    if code in (132, 1):
        return _Step(
            f"protocol refused ({reason})", 'an older broker: set [mqtt] protocol = "3.1.1"'
        )
    if code in (133, 2):
        return _Step(
            f"client id refused ({reason})", "the broker restricts client ids: see client_id"
        )
    return _Step(f"refused ({reason})", "see the broker's log")


async def _speaks_tls(cfg: MqttConfig, step_s: float) -> bool:
    """Whether the port completes a TLS handshake (verification off: this only classifies the
    port for the hint; nothing is sent over it)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE  # classification only, no data sent
    try:
        async with asyncio.timeout(min(step_s, 2.0)):
            _, writer = await asyncio.open_connection(cfg.host, cfg.port, ssl=probe)
    except (OSError, TimeoutError, EOFError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True
