"""The daemon's error tree: one root, context in attributes, retryability a class attribute."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _one_line(text: str) -> str:
    """`text` with line breaks escaped, so an error stays one log/stderr line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class GatewayError(Exception):
    """Root of every error gatewayd raises on purpose."""

    #: Whether the supervisor should try again (with backoff) after this error.
    retryable: bool = False


class ConfigError(GatewayError):
    """A configuration file that cannot be used; the message names file, key and reason."""

    def __init__(self, file: Path | str | None, key: str, reason: str) -> None:
        self.file = _one_line(str(file)) if file is not None else "<config>"
        self.key = _one_line(key)
        self.reason = _one_line(reason)
        where = f"{self.file}: {self.key}" if self.key else self.file
        super().__init__(f"{where}: {self.reason}")


class UsageError(GatewayError):
    """A command-line argument that cannot be used; the CLI prints it on one line (exit 2)."""

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = reason
        super().__init__(f"{option}: {reason}")


class PluginError(GatewayError):
    """A driver plugin that is missing, broken, or does not honour the contract."""


class DeviceError(GatewayError):
    """Something went wrong talking to a device."""

    retryable = True

    def __init__(self, message: str, *, device: str | None = None) -> None:
        super().__init__(message)
        self.device = device


class LinkLost(DeviceError):  # noqa: N818 - reads as the event it reports
    """The link to the device dropped; reconnecting is expected to help."""


class AttError(DeviceError):
    """The device answered a GATT request with an ATT error (other than "bond first").

    `code` is the ATT error code (Core Spec Vol 3 Part F §3.4.1.1; 0x80-0x9F are the
    profile's own, 0xFC-0xFF the common profile codes). Retried like any `DeviceError`;
    drivers may catch it to skip an optional step.
    """

    def __init__(self, message: str, code: int, *, device: str | None = None) -> None:
        super().__init__(message, device=device)
        self.code = code


class DeviceNotFound(DeviceError):  # noqa: N818 - reads as the event it reports
    """The device was not found (not advertising, unplugged); try again later."""


class DeviceRefused(DeviceError):  # noqa: N818 - reads as the event it reports
    """The device refused us for good (bonding refused, wrong key, unsupported model).

    The supervisor parks the device instead of hammering it.
    """

    retryable = False


class StoreError(GatewayError):
    """The local store cannot be opened or written."""


class StoreFull(StoreError):  # noqa: N818 - reads as the condition it reports
    """The disk (or the filesystem's quota) is full: SQLITE_FULL; see gatewayd.store.full_disk."""


class CorruptStore(StoreError, sqlite3.DatabaseError):  # noqa: N818 - reads as the condition
    """`PRAGMA quick_check` found damage (the file opens, but its pages are inconsistent); also
    an `sqlite3.DatabaseError`, as the errors SQLite raises for a damaged file are."""


class StorePathError(StoreError):
    """The store's path cannot hold a store (a directory, a folder that cannot be created);
    the daemon reports it as a config error on `store.path`."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = _one_line(reason)
        super().__init__(f"cannot open store {path}: {self.reason}")


class StoreVersionError(StorePathError):
    """The store was written by a newer gatewayd (its schema version is above the code's): the
    daemon refuses to start, on one line naming the file and both versions (exit 2)."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            path,
            f"schema version {found} is newer than this gatewayd's {supported}: run the newer "
            "gatewayd, or move the file aside to start an empty store",
        )
        self.found = found
        self.supported = supported


class PublishError(GatewayError):
    """The broker link failed for a reason of ours or the broker's (not the network's, which is
    aiomqtt's `MqttError`); the publisher reports the broker unavailable with it and reconnects.
    Nothing that was not acknowledged leaves the outbox."""

    retryable = True


class BrokerRefused(PublishError):  # noqa: N818 - reads as the event it reports
    """The broker acknowledged a publish with a failure reason code (MQTT 5, e.g. an ACL)."""


class TlsFileError(PublishError):
    """A TLS file of the broker link (`[mqtt] ca_file`, `cert_file`, `key_file`) is unusable.

    At start it becomes a `ConfigError`; at run time (a botched certificate rotation) the
    publisher reports the broker as unavailable with this reason and tries again later.
    """

    def __init__(self, key: str, path: Path, reason: str) -> None:
        self.key = key
        self.path = path
        self.reason = _one_line(reason)
        super().__init__(f"{key} {path}: {self.reason}")
