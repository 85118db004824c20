"""Fixtures of the resilience tests: a small tmpfs for disk-full runs; `res_support` importable."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from res_support import mounted_tmpfs  # noqa: E402 - needs the path above


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (skipped with the reason when this process cannot mount one)."""
    with mounted_tmpfs(tmp_path / "disk", 2 << 20) as folder:
        yield folder


@pytest.fixture
def roomy_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: room for a store with history, its WAL and a reserve."""
    with mounted_tmpfs(tmp_path / "disk", 8 << 20) as folder:
        yield folder
