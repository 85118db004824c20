"""The sd_notify client: datagrams on a real socket, the abstract namespace, a no-op when unset."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from gatewayd.ops.health.notify import Notifier, watchdog_interval

if TYPE_CHECKING:  # the fixture's type (its conftest.py is not importable by name)
    from conftest import NotifySocket

pytestmark = pytest.mark.timeout(10)


def test_sends_assignments_in_one_datagram(notify_socket: NotifySocket) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(notify_socket.path)})
    assert notifier.enabled
    assert notifier.send(READY=1, STATUS="2 devices\nconnected")
    assert notifier.send(WATCHDOG=1)
    notifier.close()
    deadline = time.monotonic() + 5
    while len(notify_socket.poll()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the fixture's thread receives them
    assert notify_socket.poll() == [
        {"READY": "1", "STATUS": "2 devices connected"},  # one line per assignment
        {"WATCHDOG": "1"},
    ]


def test_abstract_namespace_socket() -> None:
    name = f"gatewayd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send(STOPPING=1)
        assert server.recv(100) == b"STOPPING=1"
        notifier.close()


def test_unset_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.send(READY=1)


def test_a_vanished_socket_is_reported_not_raised(tmp_path: os.PathLike[str]) -> None:
    notifier = Notifier(f"{tmp_path}/nobody-listens")
    assert not notifier.send(WATCHDOG=1)
    assert not notifier.send(WATCHDOG=1)


def test_a_long_status_is_cut() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        name = f"gatewayd-test-{uuid.uuid4().hex}"
        server.bind("\0" + name)
        Notifier("@" + name).send(STATUS="x" * 5000)
        assert len(server.recv(10000)) == len("STATUS=") + 400


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], interval: float | None
) -> None:
    assert watchdog_interval(env, pid=4242) == interval
