"""The emulated meter's record memory: `MeterRecord`, and `make_record` / `sample_records` to fill
it (values, out-of-range results at the meter's limits, contexts, time offsets), built from the
`protocols.glucose` codecs the driver reads them with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

from protocols.gatt.date_time import DateTime
from protocols.gatt.sample import SampleLocation, SampleType
from protocols.glucose.context import GlucoseContext, Health, Meal, Tester
from protocols.glucose.measurement import (
    MGDL_PER_MMOLL,
    GlucoseMeasurement,
    GlucoseStatus,
    GlucoseUnit,
)
from protocols.sfloat import SFloat

__all__ = [
    "HIGH_LIMIT_MGDL",
    "LOW_LIMIT_MGDL",
    "NO_STATUS",
    "MeterRecord",
    "make_record",
    "sample_records",
]

#: What an out-of-range result carries beside its status bit (the meter's limits, mg/dL).
HIGH_LIMIT_MGDL = 600
LOW_LIMIT_MGDL = 20
NO_STATUS = GlucoseStatus(0)


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """One stored result: the measurement and, when the meter has one, its context."""

    measurement: GlucoseMeasurement
    context: GlucoseContext | None = None
    #: When it was truly measured (None: as its calendar says).
    measured: datetime | None = None

    @property
    def seq(self) -> int:
        """The record's sequence number."""
        return self.measurement.sequence_number


def _concentration(mgdl: float, unit: GlucoseUnit) -> SFloat:
    if unit == GlucoseUnit.KG_PER_L:
        return SFloat(round(mgdl), -5)  # mg/dL x 1e-5 = kg/L
    return SFloat(round(mgdl / MGDL_PER_MMOLL * 10), -4)  # mmol/L x 1e-3 = mol/L


def make_record(
    seq: int,
    when: datetime,
    mgdl: float | None = None,
    *,
    out_of_range: Literal["low", "high"] | None = None,
    offset: int = 0,
    context: GlucoseContext | None = None,
    status: GlucoseStatus = NO_STATUS,
    unit: GlucoseUnit = GlucoseUnit.KG_PER_L,
    sample_type: SampleType = SampleType.CAPILLARY_WHOLE_BLOOD,
    sample_location: SampleLocation = SampleLocation.FINGER,
) -> MeterRecord:
    """A record measured at `when` as the meter's clock reads it (its tzinfo is dropped):
    base time = `when` - `offset` minutes, time offset = `offset`. Out of range: the meter's
    limit as the concentration plus the status bit (the driver must not publish the number)."""
    if (mgdl is None) == (out_of_range is None):
        raise ValueError("a record has either mgdl or out_of_range")
    if out_of_range == "high":
        mgdl, status = HIGH_LIMIT_MGDL, status | GlucoseStatus.RESULT_ABOVE_DEVICE_RANGE
    elif out_of_range == "low":
        mgdl, status = LOW_LIMIT_MGDL, status | GlucoseStatus.RESULT_BELOW_DEVICE_RANGE
    assert mgdl is not None  # noqa: S101 - one of the branches above, or given
    measurement = GlucoseMeasurement(
        sequence_number=seq,
        base_time=DateTime.from_datetime(when - timedelta(minutes=offset)),
        time_offset=offset,
        concentration=_concentration(mgdl, unit),
        unit=unit,
        sample_type=sample_type,
        sample_location=sample_location,
        status=status if status else None,
        context_follows=context is not None,
    )
    if context is not None and context.sequence_number != seq:
        context = replace(context, sequence_number=seq)
    return MeterRecord(measurement, context)


def sample_records(
    count: int,
    *,
    end: datetime | None = None,
    tz: tzinfo = UTC,
    first_seq: int = 1,
    spacing: timedelta = timedelta(hours=4),
) -> list[MeterRecord]:
    """`count` plausible records ending at `end` (default: now) on a meter clock in `tz`:
    every third has a context (meal, tester, health), seq 4 (counting from 1) is HI and seq 9
    LO, every fifth has a time offset, values move between 70 and 250 mg/dL."""
    end = (end or datetime.now(UTC)).astimezone(tz)
    records = []
    for i in range(count):
        seq = first_seq + i
        when = end - spacing * (count - 1 - i)
        context = None
        if i % 3 == 0:
            context = GlucoseContext(
                seq,
                meal=(Meal.PREPRANDIAL, Meal.POSTPRANDIAL, Meal.FASTING)[i // 3 % 3],
                tester=Tester.SELF,
                health=Health.NO_HEALTH_ISSUES if i % 2 == 0 else Health.UNDER_STRESS,
            )
        side: Literal["low", "high"] | None = "high" if i == 3 else "low" if i == 8 else None
        records.append(
            make_record(
                seq,
                when,
                None if side else 70 + (i * 37) % 181,
                out_of_range=side,
                offset=15 if i % 5 == 4 else 0,
                context=context,
            )
        )
    return records
