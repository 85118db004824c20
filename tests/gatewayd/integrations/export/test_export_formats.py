"""`gatewayd export`, run for real on a real store: CSV round trip, the FHIR bundle's structure,
the AGP picture's size; and the AGP percentile curves by hand and against numpy."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import fhir_cgm_ig as cgm_ig
from gatewayd.integrations.export.fhir import bundle_entries, write_bundle
from gatewayd.integrations.export.profile import PERCENTILES, modal_day, percentile
from gatewayd.integrations.export.table import read_csv
from gatewayd.integrations.summaries.metrics import summarize
from gatewayd.models import DeviceIdentity, Direction, Reading
from gatewayd.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
#: Readings span 2026-03-08 .. 2026-03-11 (Berlin is UTC+1 then).
FIRST = datetime(2026, 3, 8, 0, 0, tzinfo=UTC)
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def gatewayd(*args: str, cwd: Path, tz: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in {"STATE_DIRECTORY", "TZ"}}
    if tz is not None:
        env["TZ"] = tz
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", "export", "-c", "gw.toml", "-d", "cgm-1", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def make_readings() -> list[Reading]:
    """Three days every 15 minutes with every kind of field, out-of-range ones included."""
    readings = []
    for i in range(3 * 96):
        time = FIRST + timedelta(minutes=15 * i, seconds=i % 7, milliseconds=i % 1000)
        value: float | None = [62.5, 120, 181, 260.25, 45, 99.0][i % 6]
        out = None
        if i % 50 == 7:
            value, out = None, "low"
        elif i % 50 == 8:
            value, out = None, "high"
        readings.append(
            Reading(
                device="cgm-1",
                driver="simulator",
                serial=f"SN-{i // 100}",
                session=f"s{i // 100}",
                seq=i,
                time=time,
                received=time + timedelta(seconds=2),
                glucose_mgdl=value,
                out_of_range=out,  # type: ignore[arg-type]
                trend_mgdl_min=None if i % 3 else -1.25,
                direction=Direction.FORTY_FIVE_DOWN if i % 3 == 0 else Direction.NONE,
                quality_pct=None if i % 4 else 97.5,
                status=("calibrating", "low battery") if i % 10 == 0 else (),
                backfilled=i % 5 == 0,
            )
        )
    return readings


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    (tmp_path / "gw.toml").write_text(
        '[hub]\nid = "hub-e"\n[store]\npath = "gw.db"\n'
        '[[devices]]\ndriver = "simulator"\nid = "cgm-1"\n',
        encoding="utf-8",
    )
    store = Store(tmp_path / "gw.db")
    for reading in make_readings():
        store.add(reading)
    store.close()
    return tmp_path


def stored(tmp_path: Path, start: datetime, end: datetime) -> list[Reading]:
    store = Store(tmp_path / "gw.db")
    try:
        return store.readings("cgm-1", start, end)
    finally:
        store.close()


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_round_trips_to_the_stored_readings(setup: Path) -> None:
    result = gatewayd(
        "--format", "csv", "--from", "2026-03-08T06:00:00Z", "--to", "2026-03-10T18:00:00Z",
        "--include-serial", cwd=setup,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    start = datetime(2026, 3, 8, 6, tzinfo=UTC)
    end = datetime(2026, 3, 10, 18, tzinfo=UTC)
    expected = stored(setup, start, end)
    assert len(expected) > 200
    back = list(read_csv(io.StringIO(text)))
    assert back == expected
    assert [r.id for r in back] == [r.id for r in expected]
    header = text.splitlines()[0].split(",")
    assert header[-1] == "serial"
    assert header[:3] == ["id", "device", "driver"]


def test_csv_leaves_the_serial_out_and_writes_a_private_file(setup: Path) -> None:
    result = gatewayd(
        "--format", "csv", "--from", "2026-03-09", "--to", "2026-03-09", "--tz", "Europe/Berlin",
        "--output", "out.csv", cwd=setup,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    out = setup / "out.csv"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text(encoding="utf-8")
    assert "serial" not in text.splitlines()[0]
    assert "SN-" not in text
    # The local day 2026-03-09 in Berlin (UTC+1): [03-08T23:00Z, 03-09T23:00Z).
    expected = stored(
        setup, datetime(2026, 3, 8, 23, tzinfo=UTC), datetime(2026, 3, 9, 23, tzinfo=UTC)
    )
    back = list(read_csv(io.StringIO(text)))
    assert len(back) == len(expected) == 96
    for got, want in zip(back, expected, strict=True):
        assert got.serial == ""
        assert got.id == want.id
        assert got == Reading(**{**_fields(want), "serial": ""})
    assert result.stderr.decode() == "gatewayd: wrote 96 readings of cgm-1 to out.csv\n"


def _fields(reading: Reading) -> dict[str, Any]:
    return {name: getattr(reading, name) for name in Reading.__slots__}


# -- FHIR --------------------------------------------------------------------------------------


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def codes(resource: dict[str, Any]) -> set[str]:
    return {c["code"] for c in resource["code"]["coding"] if c["system"] == LOINC}


def test_fhir_bundle_is_structurally_valid_after_the_cgm_ig(setup: Path) -> None:
    args = ("--format", "fhir", "--from", "2026-03-08", "--to", "2026-03-09", "--tz", "UTC")
    result = gatewayd(*args, cwd=setup)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", bundle["timestamp"])
    assert bundle["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/cgm/StructureDefinition/cgm-data-submission-bundle"
    ]

    entries = bundle["entry"]
    urls = [e["fullUrl"] for e in entries]
    assert len(set(urls)) == len(urls)
    for entry in entries:
        assert entry["fullUrl"].startswith("urn:uuid:")
        uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:"))
        assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
    by_url = {e["fullUrl"]: e["resource"] for e in entries}
    assert set(references(bundle)) <= set(by_url), "a reference that does not resolve"

    types = [e["resource"]["resourceType"] for e in entries]
    assert types.count("Patient") == 1
    assert types.count("Device") == 1
    assert set(types) == {"Patient", "Device", "Observation"}
    patient = next(u for u, r in by_url.items() if r["resourceType"] == "Patient")
    device = next(u for u, r in by_url.items() if r["resourceType"] == "Device")
    assert "name" not in by_url[patient]  # the hub knows no person

    observations = [r for r in by_url.values() if r["resourceType"] == "Observation"]
    for obs in observations:
        assert obs["status"] == "final"
        assert obs["subject"] == {"reference": patient}
        assert obs["device"] == {"reference": device}
        assert ("effectiveDateTime" in obs) != ("effectivePeriod" in obs)
        if "component" not in obs and "hasMember" not in obs:  # panels carry no value
            assert ("valueQuantity" in obs) != ("dataAbsentReason" in obs)

    # Readings: LOINC 99504-3 in UCUM mg/dL, one per stored reading of the two UTC days.
    start, end = datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    expected = stored(setup, start, end)
    sensor = [o for o in observations if codes(o) == {"99504-3"}]
    assert len(sensor) == len(expected) == 192
    for obs, reading in zip(sensor, expected, strict=True):
        assert obs["meta"]["profile"] == [
            "http://hl7.org/fhir/uv/cgm/StructureDefinition/cgm-sensor-reading-mass-per-volume"
        ]
        assert datetime.fromisoformat(obs["effectiveDateTime"]) == reading.time
        if reading.glucose_mgdl is not None:
            assert obs["valueQuantity"] == {
                "value": reading.glucose_mgdl,
                "unit": "mg/dl",  # the profile's pattern: UCUM code mg/dL, unit "mg/dl"
                "system": UCUM,
                "code": "mg/dL",
            }
        else:
            low = reading.out_of_range == "low"
            (interpretation,) = obs["interpretation"]
            assert interpretation["coding"][0]["code"] == ("<" if low else ">")
            (absent,) = obs["dataAbsentReason"]["coding"]
            assert absent["code"] == ("negative-infinity" if low else "positive-infinity")
            assert "valueQuantity" not in obs
    assert any("dataAbsentReason" in o for o in sensor)

    # The summary panel and its LOINC-coded members.
    (panel,) = [o for o in observations if "107931-8" in codes(o)]
    assert panel["effectivePeriod"] == {"start": "2026-03-08", "end": "2026-03-09"}
    members = [by_url[m["reference"]] for m in panel["hasMember"]]
    member_codes = [codes(m) for m in members]
    assert member_codes == [
        {"97507-8"},
        {"106793-3"},
        {"97506-0"},
        {"104638-2"},
        {"104636-6"},
        {"104637-4"},
    ]
    mean, tir, gmi, cv, days, active = members
    summary = summarize(expected, start, end, interval=timedelta(minutes=15))
    assert summary.mean_mgdl is not None
    assert summary.gmi_pct is not None
    assert summary.cv_pct is not None
    assert summary.ranges_pct is not None
    assert mean["valueQuantity"] == {
        "value": round(summary.mean_mgdl, 2),
        "unit": "mg/dl",
        "system": UCUM,
        "code": "mg/dL",
    }
    assert gmi["valueQuantity"]["value"] == round(summary.gmi_pct, 2)
    assert cv["valueQuantity"]["value"] == round(summary.cv_pct, 2)
    assert days["valueQuantity"] == {"value": 2, "unit": "days", "system": UCUM, "code": "d"}
    assert active["valueQuantity"]["value"] == 100.0
    for member in (gmi, cv, active):
        assert member["valueQuantity"]["code"] == "%"
        assert member["valueQuantity"]["system"] == UCUM
    components = tir["component"]
    assert [codes(c) for c in components] == [
        {"104642-4"},
        {"104641-6"},
        {"97510-2"},
        {"104640-8"},
        {"104639-0"},
    ]
    values = [c["valueQuantity"]["value"] for c in components]
    assert values == [round(v, 2) for v in summary.ranges_pct]
    assert all(c["valueQuantity"]["code"] == "%" for c in components)
    assert sum(values) == pytest.approx(100, abs=0.03)


def test_fhir_bundle_conforms_to_the_cgm_ig_profiles(setup: Path) -> None:
    args = ("--format", "fhir", "--from", "2026-03-08", "--to", "2026-03-10", "--tz", "UTC")
    result = gatewayd(*args, cwd=setup)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    assert cgm_ig.violations(bundle) == []
    assert "107931-8" in {c for e in bundle["entry"] for c in codes_of(e["resource"])}
    # The validator is no rubber stamp: what the export wrote before this IG release fails.
    by_code = {next(iter(codes_of(e["resource"])), ""): e["resource"] for e in bundle["entry"]}
    reading = next(e["resource"] for e in bundle["entry"] if "valueQuantity" in e["resource"])
    reading["valueQuantity"]["unit"] = "mg/dL"
    by_code["104636-6"]["valueQuantity"]["unit"] = "d"
    del by_code["97506-0"]["valueQuantity"]
    by_code["97506-0"]["dataAbsentReason"] = {"text": "no values"}
    found = cgm_ig.violations(bundle)
    assert len(found) == 3, found
    assert sum("does not match the pattern" in message for message in found) == 2, found
    assert sum("valueQuantity is required" in message for message in found) == 1, found


def codes_of(resource: dict[str, Any]) -> set[str]:
    return codes(resource) if "code" in resource else set()


def test_fhir_for_a_period_without_readings_has_no_summary(setup: Path) -> None:
    """The IG requires a value in GMI, CV and the ranges: no readings, no summary."""
    args = ("--format", "fhir", "--from", "2026-01-01", "--to", "2026-01-07", "--tz", "UTC")
    result = gatewayd(*args, cwd=setup)
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    types = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert types == ["Patient", "Device"]
    assert cgm_ig.violations(bundle) == []


def test_fhir_device_names_what_the_sensor_reported(setup: Path) -> None:
    store = Store(setup / "gw.db")
    identity = DeviceIdentity("Roche", "Accu-Chek SmartGuide", "SN-77", "1.4.2")
    assert store.remember_identity("cgm-1", identity)
    assert not store.remember_identity("cgm-1", identity)
    store.close()
    args = ("--format", "fhir", "--from", "2026-03-09", "--to", "2026-03-09", "--tz", "UTC")
    without = json.loads(gatewayd(*args, cwd=setup).stdout)
    with_serial = json.loads(gatewayd(*args, "--include-serial", cwd=setup).stdout)
    (device,) = [
        e["resource"] for e in without["entry"] if e["resource"]["resourceType"] == "Device"
    ]
    assert device["deviceName"] == [
        {"name": "Roche Accu-Chek SmartGuide", "type": "user-friendly-name"}
    ]
    assert device["manufacturer"] == "Roche"
    assert device["modelNumber"] == "Accu-Chek SmartGuide"
    assert device["version"] == [{"type": {"text": "firmware"}, "value": "1.4.2"}]
    assert "serialNumber" not in device
    assert "SN-77" not in json.dumps(without)
    (device,) = [
        e["resource"] for e in with_serial["entry"] if e["resource"]["resourceType"] == "Device"
    ]
    assert device["serialNumber"] == "SN-77"
    assert cgm_ig.violations(without) == cgm_ig.violations(with_serial) == []


def test_fhir_resources_are_the_same_on_a_second_export(setup: Path) -> None:
    args = ("--format", "fhir", "--from", "2026-03-09", "--to", "2026-03-09", "--tz", "UTC")
    first = json.loads(gatewayd(*args, cwd=setup).stdout)
    second = json.loads(gatewayd(*args, cwd=setup).stdout)
    assert first["entry"] == second["entry"]
    assert first["id"] == second["id"]


# -- AGP ---------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def pdf_media_box(data: bytes) -> list[float]:
    assert data.startswith(b"%PDF-")
    boxes = re.findall(rb"/MediaBox\s*\[\s*([\d.\s]+)\]", data)
    assert len(boxes) == 1, boxes  # one page
    return [float(x) for x in boxes[0].split()]


def test_agp_png_has_its_fixed_size(setup: Path) -> None:
    result = gatewayd("--format", "png", "-o", "agp.png", "--to", "2026-03-11", cwd=setup)
    assert result.returncode == 0, result.stderr
    data = (setup / "agp.png").read_bytes()
    assert png_size(data) == (1600, 1000)
    assert len(data) > 50_000  # a drawing, not an empty canvas


@pytest.mark.parametrize(
    ("paper", "points"), [("a4", (841.89, 595.28)), ("letter", (792.0, 612.0))]
)
def test_agp_pdf_is_one_landscape_page(
    setup: Path, paper: str, points: tuple[float, float]
) -> None:
    result = gatewayd(
        "--format", "pdf", "-o", "agp.pdf", "--paper", paper, "--to", "2026-03-11",
        cwd=setup, tz="Europe/Berlin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    x0, y0, width, height = pdf_media_box((setup / "agp.pdf").read_bytes())
    assert (x0, y0) == (0, 0)
    assert (width, height) == pytest.approx(points, abs=0.01)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--format", "png"), "gatewayd: --output: is required for --format png"),
        (("--format", "csv", "--tz", "Mars/Olympus"), "gatewayd: --tz: unknown"),
        (
            ("--format", "csv", "--from", "2026-03-10", "--to", "2026-03-09"),
            "gatewayd: --from: must be before --to",
        ),
        (("--format", "csv", "--to", "soon"), "gatewayd: --to: not an ISO-8601"),
    ],
)
def test_usage_errors_are_one_line(setup: Path, args: tuple[str, ...], expected: str) -> None:
    result = gatewayd(*args, cwd=setup)
    assert result.returncode == 2
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]


def test_modal_day_percentiles_by_hand() -> None:
    # Five days at 08:00 Berlin (07:00 UTC in March), 100..140: the 08:00 point sees all five.
    readings = [
        Reading(
            device="d", driver="t", serial="S", session="s", seq=day,
            time=datetime(2026, 3, 2 + day, 7, 0, tzinfo=UTC),
            received=datetime(2026, 3, 2 + day, 7, 0, tzinfo=UTC),
            glucose_mgdl=100.0 + 10 * day,
        )
        for day in range(5)
    ]  # fmt: skip
    profile = modal_day(readings, BERLIN)
    assert len(profile) == 97
    assert profile[0].minute == 0
    assert profile[-1].minute == 1440
    at_eight = profile[8 * 4]
    assert at_eight.minute == 480
    # Linear between order statistics: rank (5 - 1) * p / 100.
    assert at_eight.values == pytest.approx((102.0, 110.0, 120.0, 130.0, 138.0))
    assert profile[7 * 4 + 2].values is not None  # 07:30: within the hour-wide span
    assert profile[7 * 4 + 1].values is None  # 07:15: 45 minutes away
    assert profile[0].values is None
    assert modal_day(readings, ZoneInfo("UTC"))[7 * 4].values is not None


def test_percentile_matches_numpy_linear() -> None:
    values = sorted([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5, 8.0])
    for p in (*PERCENTILES, 0, 1, 33.3, 99, 100):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_fhir_one_value_has_no_cv_so_no_summary() -> None:
    (one,) = make_readings()[:1]
    start, end = one.time - timedelta(hours=1), one.time + timedelta(hours=1)
    summary = summarize([one], start, end)
    assert summary.mean_mgdl is not None
    assert summary.cv_pct is None
    entries = list(
        bundle_entries([one], summary, hub="h", device="cgm-1", driver="simulator", tz=UTC)
    )
    assert [e["resource"]["resourceType"] for e in entries] == ["Patient", "Device", "Observation"]
    out = io.StringIO()
    write_bundle(out, iter(entries), summary, hub="h", device="cgm-1", now=end)
    bundle = json.loads(out.getvalue())
    assert len(bundle["entry"]) == 3
    assert cgm_ig.violations(bundle) == []
