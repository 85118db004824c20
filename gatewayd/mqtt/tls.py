"""The TLS context of the broker link, built from `[mqtt] ca_file`, `cert_file`, `key_file`.

`client_context` is the one place these files are read: the config validates them with it at
start (a bad file is a one-line config error) and the publisher builds its context with it before
every connection attempt, so a rotated certificate is picked up at the next reconnect and a
botched one (not PEM, a key that does not match) is reported as `TlsFileError` naming the key,
the file and the reason instead of crashing the daemon.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatewayd.errors import TlsFileError


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(key, path, f"cannot read: {exc.strerror or exc}") from None


def _check_certificates(key: str, path: Path) -> None:
    """At least one parseable PEM certificate (ssl's own message says only 'PEM lib')."""
    try:
        x509.load_pem_x509_certificates(_read(key, path))
    except ValueError:
        raise TlsFileError(key, path, "not a PEM certificate") from None


def _check_private_key(key: str, path: Path) -> None:
    try:
        serialization.load_pem_private_key(_read(key, path), password=None)
    except TypeError:  # a passphrase would be needed: the daemon has none to give
        raise TlsFileError(key, path, "the private key is encrypted") from None
    except (ValueError, x509.UnsupportedGeneralNameType):
        raise TlsFileError(key, path, "not a PEM private key") from None


def client_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A client context: the system's CAs or `ca_file`'s, hostname and certificate verification
    always on, the client certificate (and its key) when given; else `TlsFileError`."""
    if ca_file is not None:
        _check_certificates("ca_file", ca_file)
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (ssl.SSLError, OSError) as exc:
        if ca_file is None:
            raise
        raise TlsFileError("ca_file", ca_file, f"cannot load: {exc}") from None
    if cert_file is None:
        return context
    _check_certificates("cert_file", cert_file)
    if key_file is not None:
        _check_private_key("key_file", key_file)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsFileError(
                "key_file", key_file or cert_file, f"does not match the certificate {cert_file}"
            ) from None
        if key_file is None:  # the key is expected in the certificate file
            reason = f"holds no private key and key_file is not set ({exc})"
            raise TlsFileError("cert_file", cert_file, reason) from None
        raise TlsFileError("key_file", key_file, f"cannot load with {cert_file}: {exc}") from None
    return context
