"""A bench-only driver whose readings cost what the bare script's cost: made on the spot.

`bench/live_path.py` compares the daemon's live path with a bare script that makes each reading
from the clock and constants. Fed by the simulated sensors, the daemon would also pay for the
simulated person and sensor in its own process. This driver makes, per device and per
`interval`, one reading the way the bare script makes its own (the hub's clock, constant
values, the next seq), so both sides pay the same for the reading and the ratio is the live
path's: session, store, outbox, publish.

It is registered the way a third-party driver is, through an entry point: `register(folder)`
writes a distribution's metadata into `folder`, and a process with `folder` and this directory
on `PYTHONPATH` finds the driver ``made``. Nothing in the shipped package knows of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from gatewayd.plugin import (
    DeviceContext,
    DeviceIdentity,
    Direction,
    DriverPlugin,
    OptionReader,
    Reading,
)

NAME = "made"


@dataclass(frozen=True, slots=True)
class MadeOptions:
    """`interval`: seconds between readings; `phase`: seconds after the start of the first."""

    interval: float
    phase: float


def parse_options(reader: OptionReader) -> MadeOptions:
    """The two keys, both required."""
    return MadeOptions(
        interval=reader.number("interval", minimum=0, exclusive_minimum=True),
        phase=reader.number("phase", minimum=0),
    )


class MadeSession:
    """One device: a reading every `interval`, from the hub's clock, until cancelled."""

    def __init__(self, ctx: DeviceContext[MadeOptions]) -> None:
        self._ctx = ctx
        self.identity: DeviceIdentity | None = None

    async def __aenter__(self) -> Self:
        self.identity = DeviceIdentity("bench", "made", f"MADE-{self._ctx.device_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        """Like the bare script's `made`: staggered due times on the monotonic clock."""
        ctx, options = self._ctx, self._ctx.options
        serial = f"MADE-{ctx.device_id}"
        due = time.monotonic() + options.phase
        seq = 0
        while True:
            due += options.interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            seq += 1
            now = ctx.now()
            yield Reading(
                device=ctx.device_id,
                driver=NAME,
                serial=serial,
                session="s1",
                seq=seq,
                time=now,
                received=now,
                glucose_mgdl=120,
                trend_mgdl_min=0.5,
                direction=Direction.FLAT,
                quality_pct=97.0,
            )


plugin: DriverPlugin[MadeOptions] = DriverPlugin(
    name=NAME,
    transport="virtual",
    help="Readings made on the spot, for bench/live_path.py only.",
    parse_options=parse_options,
    open=MadeSession,
)


def register(folder: Path) -> None:
    """Write the metadata that makes `made` an installed driver for a process that has `folder`
    (and bench/, where this module is) on its `PYTHONPATH`."""
    info = folder / "gatewayd_bench_made-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gatewayd-bench-made\nVersion: 0\n")
    entry = f"{__name__}:plugin"
    (info / "entry_points.txt").write_text(f"[gatewayd.drivers]\n{NAME} = {entry}\n")
