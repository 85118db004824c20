"""Secrets the config points at: files only the daemon can read, and systemd credentials.

A secret never comes from the command line (every process can read another's argv through
/proc) and never from a file every user can read:

- `password_file = "/etc/gatewayd/mqtt-password"`: the file is refused when it is readable by
  every user (mode & 0o004); the same holds for the client's TLS `key_file`, and for the config
  file itself while it holds an inline `password`;
- `password_credential = "mqtt-password"`: systemd's `LoadCredential=mqtt-password:/path` (or
  `LoadCredentialEncrypted=`/`SetCredentialEncrypted=`, decrypted by systemd with the TPM or the
  host key) hands the service a private copy in `$CREDENTIALS_DIRECTORY`, readable by the service
  alone. Outside the service (an operator's shell running `gatewayd doctor`), the running service's
  `/run/credentials/gatewayd.service/` is used when it exists and the caller may read it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from gatewayd.errors import ConfigError
from gatewayd.options import OptionReader

#: Where systemd puts the credentials of `gatewayd.service` while it runs (see systemd.exec(5)).
SERVICE_CREDENTIALS = Path("/run/credentials/gatewayd.service")
#: A credential name as systemd accepts it: one path component.
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,255}\Z")


def world_readable(mode: int) -> bool:
    """Whether every user may read a file of this mode."""
    return bool(mode & stat.S_IROTH)


def refuse_if_world_readable(
    mode: int, file: Path | str | None, key: str, path: Path, what: str
) -> None:
    """Raise a `ConfigError` (naming `file` and `key`) when `path` of `mode` is world-readable."""
    if world_readable(mode):
        raise ConfigError(
            file,
            key,
            f"{path} holds {what} and is readable by every user (mode "
            f"{stat.S_IMODE(mode):04o}): chmod o-r {path}",
        )


def read_secret(r: OptionReader, name: str, path: Path, *, what: str = "a secret") -> str:
    """The stripped text of a secret file; refused when missing, empty or world-readable."""
    try:
        with path.open(encoding="utf-8") as handle:
            mode = os.fstat(handle.fileno()).st_mode  # of the file read, not of a later one
            secret = handle.read().strip()
    except OSError as exc:
        raise r.error(name, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise r.error(name, f"cannot read {path}: not UTF-8 text") from None
    if not secret:
        raise r.error(name, f"{path} is empty")
    refuse_if_world_readable(mode, r.file, r.key(name), path, what)
    return secret


def check_private_file(r: OptionReader, name: str, path: Path, *, what: str) -> None:
    """Refuse a key or secret file (that exists) when every user may read it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # the caller reports missing files in its own words
    refuse_if_world_readable(mode, r.file, r.key(name), path, what)


def credentials_directory() -> Path | None:
    """`$CREDENTIALS_DIRECTORY` (set by systemd for a unit with credentials), or the running
    service's directory when this process may list it, else None."""
    env = os.environ.get("CREDENTIALS_DIRECTORY")
    if env:
        return Path(env)
    if os.access(SERVICE_CREDENTIALS, os.R_OK | os.X_OK):
        return SERVICE_CREDENTIALS
    return None


def credential_path(r: OptionReader, name: str, credential: str) -> Path:
    """The file of systemd credential `credential` (the value of key `name`)."""
    if not _CREDENTIAL_NAME.match(credential) or credential in {".", ".."}:
        raise r.error(name, f"must be a systemd credential name (no '/'), got {credential!r}")
    folder = credentials_directory()
    if folder is None:
        raise r.error(
            name,
            f"no systemd credentials: $CREDENTIALS_DIRECTORY is not set (run as the service with "
            f"LoadCredential={credential}:/path/to/file, or set password_file instead)",
        )
    return folder / credential


def read_credential(r: OptionReader, name: str, credential: str) -> str:
    """The value of systemd credential `credential`."""
    return read_secret(r, name, credential_path(r, name, credential), what="a credential")
