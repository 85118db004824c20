"""Markers for tests that need the privileges of root (CI runs the suite as root)."""

from __future__ import annotations

import os

import pytest

#: Skips a test that gives a file to another user (os.chown) when not run as root.
NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0, reason="gives a file to another user (os.chown): needs root"
)
