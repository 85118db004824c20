"""gatewayd.errors: one root, and the broker link's errors under one branch."""

from __future__ import annotations

import inspect
from pathlib import Path

from gatewayd import errors
from gatewayd.errors import BrokerRefused, GatewayError, PublishError, TlsFileError


def test_every_error_has_the_one_root() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
    ]
    assert len(classes) > 5
    assert all(issubclass(c, GatewayError) for c in classes)


def test_the_broker_link_errors_are_retried_publish_errors() -> None:
    """What the publisher's reconnect loop catches besides aiomqtt's network errors."""
    for error in (
        BrokerRefused("broker refused a publish: Not authorized"),
        TlsFileError("ca_file", Path("/etc/ca.pem"), "not a PEM certificate"),
    ):
        assert isinstance(error, PublishError)
        assert error.retryable
    assert (
        str(TlsFileError("ca_file", Path("/ca.pem"), "bad\nfile")) == "ca_file /ca.pem: bad\\nfile"
    )
