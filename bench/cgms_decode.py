"""CGMS decode: CGM Measurement records decoded per second, gatewayd's codec vs hand-written struct.

The data: `--records` (default 100 000) CGM Measurement records of one sensor, 5 minutes apart,
as a CGMS sensor with E2E-CRC sends them: glucose, time offset, trend and quality (flags 0x03,
15 bytes with the CRC), ~8 % with one or two status annunciation octets, the odd +/-INFINITY.
They are packed into notifications the way Nordic's nRF5 stack does: whole records up to
ATT_MTU - 3 = 182 bytes (12 records, a backfill) for 70 % of them and one record per
notification (live) for the rest.

The measured path is `protocols.cgms.measurement.parse_measurements(notification)` (the compiled
construct codec: Size framing, flag-dependent fields, CRC-16/MCRF4XX check, status octets, SFLOAT
decoding, `CgmMeasurement` objects). The baseline, in the same run, is a hand-written decoder on
`struct.Struct.unpack_from` that does exactly the same work and returns equal objects (checked
before timing): it shares the CRC function, the SFLOAT decoder and the output class, so the ratio
isolates what the construct-based parsing costs. A bare struct walk that only unpacks the integers
(no CRC, no objects) is timed too, as an informational ceiling.

Each round (`--rounds`, default 7) runs gatewayd and struct back to back, alternating which goes
first, then the bare walk. Per run: records/s (wall clock) and CPU microseconds per record (this
process's CPU time). The absolute figures are the medians of the runs; every ratio is taken per
round and quoted as the median of the per-round ratios with their min-max, the wall-time ratio
(records/s) with the CPU-time ratio (CPU per record, the other way up so that both read "higher
is better for gatewayd") beside it. Target: ratio >= 0.5.
Run: `.venv/bin/python bench/cgms_decode.py` (or `scripts/bench cgms_decode`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import paired, result_header, round_pairs, wall_cpu_text, write_result
from protocols.cgms.measurement import (
    CgmMeasurement,
    StatusOctets,
    build_measurements,
    parse_measurements,
)
from protocols.cgms.state import SensorStatus
from protocols.crc import crc16_mcrf4xx
from protocols.errors import CrcError, ProtocolError
from protocols.sfloat import SFloat, SFloatSpecial, decode_sfloat

NAME = "cgms_decode"
TARGET_RATIO = 0.5
#: ATT_MTU 185 (a common negotiated value) minus the 3-byte notification header.
NOTIFICATION_BYTES = 182


# -- the data -----------------------------------------------------------------------------------


def make_notifications(count: int, seed: int = 20240502) -> list[bytes]:
    """`count` records in notifications: 70 % packed backfill, 30 % one per notification."""
    rng = random.Random(seed)
    glucose = 120.0
    records: list[CgmMeasurement] = []
    for index in range(count):
        glucose = min(max(glucose + rng.gauss(0, 4), 30.0), 420.0)
        value: SFloat | SFloatSpecial = SFloat(round(glucose))
        if glucose <= 40:
            value = SFloatSpecial.NEGATIVE_INFINITY
        elif glucose >= 400:
            value = SFloatSpecial.POSITIVE_INFINITY
        status = SensorStatus(0)
        if rng.random() < 0.08:
            status = rng.choice(
                [
                    SensorStatus.CALIBRATION_RECOMMENDED,
                    SensorStatus.DEVICE_BATTERY_LOW | SensorStatus.RESULT_BELOW_PATIENT_LOW,
                    SensorStatus.RATE_OF_INCREASE_EXCEEDED,
                ]
            )
        records.append(
            CgmMeasurement(
                value,
                (index * 5) % 0x10000,
                status,
                trend=SFloat(rng.randrange(-40, 41), -1),
                quality=SFloat(rng.randrange(80, 101)),
                e2e_crc=True,
            )
        )
    notifications: list[bytes] = []
    index = 0
    while index < count:
        if rng.random() < 0.3:
            notifications.append(records[index].build())
            index += 1
            continue
        packed: list[CgmMeasurement] = []
        size = 0
        while index < count and size + len(records[index].build()) <= NOTIFICATION_BYTES:
            size += len(records[index].build())
            packed.append(records[index])
            index += 1
        notifications.append(build_measurements(packed))
    return notifications


# -- the decoders -------------------------------------------------------------------------------

_HEADER = struct.Struct("<BBHH")
_UINT16 = struct.Struct("<H")
_BODY = [6 + 2 * (f & 1) + (f & 2) + bin(f & 0xE0).count("1") for f in range(256)]
_NO_STATUS = SensorStatus(0)
#: SIG reading: flag bit → (bit shift in the 24-bit status, logical octet), in wire order.
_OCTETS = (
    (0x80, 0, StatusOctets.STATUS),
    (0x40, 8, StatusOctets.CAL_TEMP),
    (0x20, 16, StatusOctets.WARNING),
)


def struct_decode(data: bytes) -> list[CgmMeasurement]:
    """The baseline: the same records, CRC checks and objects, by hand with `struct`."""
    out: list[CgmMeasurement] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 6:
            raise ProtocolError("short record", data[pos:])
        size, flags, glucose, offset = _HEADER.unpack_from(data, pos)
        body = _BODY[flags]
        if size < 6 or pos + size > end:
            raise ProtocolError("bad size", data[pos:])
        has_crc = size == body + 2
        if has_crc:
            received = _UINT16.unpack_from(data, pos + size - 2)[0]
            computed = crc16_mcrf4xx(data[pos : pos + size - 2])
            if received != computed:
                raise CrcError(
                    "record", data[pos : pos + size], received=received, computed=computed
                )
        elif size != body:
            raise ProtocolError("size/flags mismatch", data[pos : pos + size])
        p = pos + 6
        status = 0
        octets = StatusOctets(0)
        for bit, shift, logical in _OCTETS:
            if flags & bit:
                status |= data[p] << shift
                octets |= logical
                p += 1
        trend = quality = None
        if flags & 0x01:
            trend = decode_sfloat(_UINT16.unpack_from(data, p)[0])
            p += 2
        if flags & 0x02:
            quality = decode_sfloat(_UINT16.unpack_from(data, p)[0])
        out.append(
            CgmMeasurement(
                decode_sfloat(glucose),
                offset,
                SensorStatus(status) if status else _NO_STATUS,
                trend,
                quality,
                octets,
                has_crc,
            )
        )
        pos += size
    return out


def struct_raw(data: bytes) -> list[tuple[int, ...]]:
    """Ceiling (information): the integers only - no CRC check, no SFLOAT, no objects."""
    out: list[tuple[int, ...]] = []
    pos, end = 0, len(data)
    while pos < end:
        header = _HEADER.unpack_from(data, pos)
        out.append(header)
        pos += header[0] or end
    return out


Decoder = Callable[[bytes], list[Any]]
VARIANTS: dict[str, Decoder] = {
    "gatewayd": parse_measurements,
    "struct": struct_decode,
    "struct_raw": struct_raw,
}


@dataclass(frozen=True, slots=True)
class Run:
    """One timed pass over every notification."""

    variant: str
    round: int
    records: int
    seconds: float
    records_per_s: float
    cpu_us_per_record: float


def measure(variant: str, notifications: list[bytes], records: int, round_no: int) -> Run:
    """Decode every notification once with `variant`."""
    decode = VARIANTS[variant]
    wall, cpu = time.perf_counter(), time.process_time()
    for notification in notifications:
        decode(notification)
    seconds = time.perf_counter() - wall
    cpu_s = time.process_time() - cpu
    return Run(variant, round_no, records, seconds, records / seconds, cpu_s / records * 1e6)


# -- the report ---------------------------------------------------------------------------------


def summarize(
    runs: list[Run], args: argparse.Namespace, notifications: list[bytes]
) -> dict[str, Any]:
    """Medians of each variant, the paired per-round ratios and the verdict."""
    rates = {
        v: statistics.median(r.records_per_s for r in runs if r.variant == v) for v in VARIANTS
    }
    cpu = {
        v: statistics.median(r.cpu_us_per_record for r in runs if r.variant == v) for v in VARIANTS
    }
    figures: dict[str, dict[str, Any]] = {}
    for base in ("struct", "struct_raw"):
        figures[f"ratio_gatewayd_over_{base}"] = paired(
            round_pairs(runs, "gatewayd", base, lambda r: r.records_per_s)
        )
        figures[f"cpu_ratio_{base}_over_gatewayd"] = paired(
            round_pairs(runs, base, "gatewayd", lambda r: r.cpu_us_per_record)
        )
    ratio = figures["ratio_gatewayd_over_struct"]["median"]
    per_round = round_pairs(runs, "gatewayd", "struct", lambda r: r.records_per_s)
    sizes = [len(n) for n in notifications]
    return {
        **result_header(NAME, "construct"),
        "setup": {
            "records": args.records,
            "notifications": len(notifications),
            "notification_bytes": {
                "min": min(sizes),
                "mean": round(statistics.fmean(sizes), 1),
                "max": max(sizes),
            },
            "rounds": args.rounds,
            "e2e_crc": True,
        },
        "runs": [asdict(r) for r in runs],
        "median_records_per_s": {v: round(x) for v, x in rates.items()},
        "median_cpu_us_per_record": {v: round(x, 2) for v, x in cpu.items()},
        # Each ratio: the median of the per-round ratios (with min-max in `paired`).
        **{key: figure["median"] for key, figure in figures.items()},
        "ratio_per_round": [round(g / b, 3) for g, b in per_round],
        "paired": figures,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio is not None and ratio >= TARGET_RATIO,
    }


def _row(label: str, rate: float, cpu_us: float, note: str) -> str:
    return f"  {label:<27} {rate:>9.0f} rec/s  {cpu_us:5.2f} us CPU/rec" + (
        f"   ({note})" if note else ""
    )


def print_block(result: dict[str, Any], path: Path) -> None:
    """The human-readable result block."""
    setup, rates, cpu = (
        result["setup"],
        result["median_records_per_s"],
        result["median_cpu_us_per_record"],
    )
    figure = result["paired"]
    size = setup["notification_bytes"]
    verdict = "OK" if result["meets_target"] else "BELOW TARGET"
    lines = [
        f"== {NAME}: CGM Measurement records decoded per second vs hand-written struct ==",
        f"  {setup['records']} records (E2E-CRC) in {setup['notifications']} notifications of "
        f"{size['min']}-{size['max']} B (mean {size['mean']}), {setup['rounds']} rounds "
        "(gatewayd and struct back to back, alternating); medians:",
        _row("gatewayd codec (construct)", rates["gatewayd"], cpu["gatewayd"], ""),
        _row("hand-written struct", rates["struct"], cpu["struct"], "baseline: same work"),
        _row("bare struct walk", rates["struct_raw"], cpu["struct_raw"], "info: integers only"),
        "  ratios = median of per-round ratios (min-max); CPU time = the other side's CPU per "
        "record over gatewayd's",
        "  gatewayd/struct rec/s "
        + wall_cpu_text(
            figure["ratio_gatewayd_over_struct"], figure["cpu_ratio_struct_over_gatewayd"]
        ),
        f"    target >= {TARGET_RATIO}: {verdict}",
        "  gatewayd/bare walk rec/s "
        + wall_cpu_text(
            figure["ratio_gatewayd_over_struct_raw"], figure["cpu_ratio_struct_raw_over_gatewayd"]
        )
        + "   (info)",
        f"  json: {path}",
    ]
    print("\n".join(lines), flush=True)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    notifications = make_notifications(args.records)
    expected = [struct_decode(n) for n in notifications]
    if [parse_measurements(n) for n in notifications] != expected:
        raise SystemExit("the baseline does not decode to the same records: fix the bench")
    if sum(map(len, expected)) != args.records:
        raise SystemExit("record count mismatch")
    for variant in VARIANTS:  # warm caches (SFLOAT words, CRC tables, compiled parser)
        measure(variant, notifications[: len(notifications) // 10], args.records // 10, 0)
    runs: list[Run] = []
    order = ["gatewayd", "struct"]
    for round_no in range(1, args.rounds + 1):
        for variant in [*(order if round_no % 2 else order[::-1]), "struct_raw"]:
            run = measure(variant, notifications, args.records, round_no)
            runs.append(run)
            print(
                f"[{NAME}] round {round_no} {variant}: {run.records_per_s:.0f} rec/s",
                file=sys.stderr,
                flush=True,
            )
    result = summarize(runs, args, notifications)
    path = write_result(NAME, result)
    print_block(result, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
