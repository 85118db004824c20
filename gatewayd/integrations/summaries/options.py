"""`[summaries]`: when to recompute and publish, and the expected spacing of readings.

[summaries]
enabled = true                 # publish <root>/<hub>/<device>/summary (default true)
every_minutes = 15             # recompute every N minutes (default 15)
backfill_delay_seconds = 10    # and this long after the last backfilled reading
interval_minutes = 5           # expected spacing, for coverage (default: from the data)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gatewayd.ops.config import Config


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    """The validated `[summaries]` table."""

    enabled: bool = True
    every: timedelta = timedelta(minutes=15)
    backfill_delay: timedelta = timedelta(seconds=10)
    #: Expected spacing of readings; None estimates it from the data (median spacing).
    interval: timedelta | None = None


def read(config: Config) -> SummaryOptions:
    """The options, defaults when the file has no `[summaries]` table (fails on bad values)."""
    r = config.section("summaries")
    if r is None:
        return SummaryOptions()
    interval = (
        timedelta(
            minutes=r.number("interval_minutes", minimum=0, exclusive_minimum=True, maximum=60)
        )
        if r.has("interval_minutes")
        else None
    )
    options = SummaryOptions(
        enabled=r.boolean("enabled", True),
        every=timedelta(
            minutes=r.number("every_minutes", 15.0, minimum=0, exclusive_minimum=True, maximum=1440)
        ),
        backfill_delay=timedelta(
            seconds=r.number("backfill_delay_seconds", 10.0, minimum=0, maximum=3600)
        ),
        interval=interval,
    )
    r.finish()
    return options


def parse(config: Config) -> SummaryOptions | None:
    """`ServiceSpec.parse`: the options, or None when `enabled = false`."""
    options = read(config)
    return options if options.enabled else None
