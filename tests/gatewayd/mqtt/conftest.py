"""A broker that refuses some of the gateway's topics (an ACL), for the refused-PUBACK paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mosquitto import Mosquitto


class AclMosquitto(Mosquitto):
    """The test broker with an ACL: the gateway user may not publish `reading` topics."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        acl = self.folder / "acl"
        acl.write_text(
            f"user {self.username}\n"
            "topic readwrite gatewayd/+/status\n"
            "topic readwrite gatewayd/+/+/status\n"
            "topic readwrite gatewayd/+/+/state\n"
            "topic read #\n"
        )
        lines: list[str] = []
        for line in conf.read_text().splitlines():
            lines.append(line)
            if line.startswith("password_file"):  # per listener (per_listener_settings)
                lines.append(f"acl_file {acl}")
        conf.write_text("\n".join(lines) + "\n")
        return conf


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = AclMosquitto(tmp_path / "acl-mosquitto")
    server.start()
    yield server
    server.stop()
