"""A FHIR R4 Bundle of a device's readings and summary, after the HL7 CGM IG 1.0.0
(hl7.fhir.uv.cgm, STU 1).

A `transaction` Bundle (the IG's CGM Data Submission Bundle) with:

- a Patient placeholder (no name or other identifier of a person: the hub knows none) that every
  Observation's `subject` references — the receiving system links it to its patient;
- a CGM Device: its name is the manufacturer and model the sensor reported (the driver and the
  device id on this hub until it has reported them), with `manufacturer`, `modelNumber` and the
  firmware as `version`; the serial only when asked for;
- one CGM Sensor Reading (Mass) Observation per reading: LOINC 99504-3, `valueQuantity` with
  the profile's fixed pattern (system UCUM, code `mg/dL`, unit `mg/dl`). A reading outside the
  sensor's range has no value but the data-absent reason `negative-infinity` (below) or
  `positive-infinity` (above) and the interpretation `<` / `>` (off scale low / high). The
  profile allows a value with a comparator instead, but that needs the sensor's limit (39? 40?)
  and sensor models differ, so the hub would have to invent a number;
- the CGM Summary (LOINC 107931-8) over the export period and its members: mean glucose
  97507-8, times in ranges 106793-3 (components 104642-4, 104641-6, 97510-2, 104640-8,
  104639-0), GMI 97506-0, CV 104638-2, days of wear 104636-6 (unit `days`) and sensor active %
  104637-4. The IG requires a value in every member but the mean, so a period without the
  values for all of them (no reading, or fewer than two to compute a CV from) has no summary.

`fullUrl`s are `urn:uuid:` ids derived from the hub, device and reading id, so exporting the
same data twice yields the same resources (receivers can de-duplicate). `write_bundle` writes
the JSON as it goes: memory stays flat however long the period is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, tzinfo
from typing import Any, TextIO

from gatewayd.integrations.summaries.metrics import Summary
from gatewayd.models import DeviceIdentity, Reading, isoformat_utc

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_URI = "urn:ietf:rfc:3986"
_NAMESPACE = uuid.UUID("6f1c8a52-3b7e-5d0a-9c41-2e8f7b6d5a90")

#: (UCUM code, the human-readable `unit` the IG's profiles fix for it).
Unit = tuple[str, str]
MGDL: Unit = ("mg/dL", "mg/dl")
PERCENT: Unit = ("%", "%")
DAYS: Unit = ("d", "days")

#: (LOINC code, the published display or None where only a source comment names it, text).
Code = tuple[str, str | None, str]
READING_CODE: Code = ("99504-3", "Glucose [Mass/volume] in Interstitial fluid", "CGM glucose")
SUMMARY_CODE: Code = ("107931-8", None, "CGM summary")
MEAN_CODE: Code = (
    "97507-8",
    "Average glucose [Mass/volume] in Interstitial fluid during Reporting Period",
    "Mean glucose",
)
TIR_PANEL_CODE: Code = (
    "106793-3",
    "Continuous glucose monitoring time in ranges panel",
    "Times in ranges",
)
GMI_CODE: Code = ("97506-0", None, "Glucose management indicator (GMI)")
CV_CODE: Code = ("104638-2", None, "Coefficient of variation (CV)")
DAYS_CODE: Code = ("104636-6", None, "Days of wear")
ACTIVE_CODE: Code = ("104637-4", None, "Sensor active time")
#: Times in ranges, very low to very high (the order of `Summary.ranges_pct`).
RANGE_CODES: tuple[Code, ...] = (
    ("104642-4", None, "Time very low (<54 mg/dL)"),
    ("104641-6", None, "Time low (54-69 mg/dL)"),
    (
        "97510-2",
        "Glucose measurements in range out of Total glucose measurements during reporting period",
        "Time in range (70-180 mg/dL)",
    ),
    ("104640-8", None, "Time high (181-250 mg/dL)"),
    ("104639-0", None, "Time very high (>250 mg/dL)"),
)


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '/'.join(parts))}"


def _concept(code: Code) -> dict[str, Any]:
    loinc = {"system": LOINC, "code": code[0]}
    if code[1] is not None:
        loinc["display"] = code[1]
    return {"coding": [loinc], "text": code[2]}


def _quantity(value: float, unit: Unit) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": unit[1], "system": UCUM, "code": unit[0]}


def _entry(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


class _Builder:
    def __init__(self, hub: str, device: str, tz: tzinfo) -> None:
        self.hub = hub
        self.device = device
        self.tz = tz
        self.patient = _urn(hub, device, "patient")
        self.device_url = _urn(hub, device, "device")

    def observation(self, profile: str, code: Code, **fields: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "meta": {"profile": [f"{IG}/{profile}"]},
            "status": "final",
            "category": [{"coding": [{"system": _CATEGORY, "code": "laboratory"}]}],
            "code": _concept(code),
            "subject": {"reference": self.patient},
            **fields,
            "device": {"reference": self.device_url},
        }

    def reading(self, reading: Reading) -> dict[str, Any]:
        fields: dict[str, Any] = {"effectiveDateTime": isoformat_utc(reading.time)}
        if reading.glucose_mgdl is not None:
            fields["valueQuantity"] = _quantity(reading.glucose_mgdl, MGDL)
        else:
            low = reading.out_of_range == "low"
            absent = "negative-infinity" if low else "positive-infinity"
            fields["dataAbsentReason"] = {"coding": [{"system": _ABSENT, "code": absent}]}
            fields["interpretation"] = [
                {
                    "coding": [
                        {
                            "system": _INTERPRETATION,
                            "code": "<" if low else ">",
                            "display": "Off scale low" if low else "Off scale high",
                        }
                    ],
                    "text": f"{'below' if low else 'above'} the sensor's measurable range",
                }
            ]
        return self.observation("cgm-sensor-reading-mass-per-volume", READING_CODE, **fields)

    def period(self, summary: Summary) -> dict[str, str]:
        last = summary.end - timedelta(milliseconds=1)
        return {
            "start": summary.start.astimezone(self.tz).date().isoformat(),
            "end": last.astimezone(self.tz).date().isoformat(),
        }

    def summary(self, summary: Summary) -> list[tuple[str, dict[str, Any]]]:
        """The summary and its members, or nothing when a member the IG requires has no value."""
        s = summary
        if s.gmi_pct is None or s.cv_pct is None or s.ranges_pct is None or s.mean_mgdl is None:
            return []
        period = self.period(s)
        key = (self.hub, self.device, isoformat_utc(s.start), isoformat_utc(s.end))

        def member(name: str, profile: str, code: Code, **fields: Any) -> tuple[str, Any]:
            resource = self.observation(profile, code, effectivePeriod=period, **fields)
            return _urn(*key, name), resource

        def value(number: float, unit: Unit) -> dict[str, Any]:
            return {"valueQuantity": _quantity(number, unit)}

        members = [
            member(
                "mean",
                "cgm-summary-mean-glucose-mass-per-volume",
                MEAN_CODE,
                **value(s.mean_mgdl, MGDL),
            ),
            member(
                "tir",
                "cgm-summary-times-in-ranges",
                TIR_PANEL_CODE,
                component=[
                    {"code": _concept(code), **value(share, PERCENT)}
                    for code, share in zip(RANGE_CODES, s.ranges_pct, strict=True)
                ],
            ),
            member("gmi", "cgm-summary-gmi", GMI_CODE, **value(s.gmi_pct, PERCENT)),
            member(
                "cv", "cgm-summary-coefficient-of-variation", CV_CODE, **value(s.cv_pct, PERCENT)
            ),
            member("days", "cgm-summary-days-of-wear", DAYS_CODE, **value(s.days, DAYS)),
            member(
                "active",
                "cgm-summary-sensor-active-percentage",
                ACTIVE_CODE,
                **value(s.coverage_pct, PERCENT),
            ),
        ]
        panel = member(
            "summary",
            "cgm-summary",
            SUMMARY_CODE,
            hasMember=[{"reference": url} for url, _ in members],
        )
        return [panel, *members]

    def cgm_device(
        self, driver: str, identity: DeviceIdentity | None, *, include_serial: bool
    ) -> dict[str, Any]:
        """The CGM Device: named as the sensor reported itself, else by driver and device id."""
        known = identity or DeviceIdentity("", "", "")
        reported = {
            "manufacturer": known.manufacturer,
            "serialNumber": known.serial if include_serial else "",
            "modelNumber": known.model,
        }
        name = f"{known.manufacturer} {known.model}".strip()
        firmware = [{"type": {"text": "firmware"}, "value": known.firmware}]
        return {
            "resourceType": "Device",
            "meta": {"profile": [f"{IG}/cgm-device"]},
            "identifier": [
                {"system": _URI, "value": _urn(self.hub, self.device, "device-identifier")}
            ],
            **{key: value for key, value in reported.items() if value},
            "deviceName": [
                {
                    "name": name or f"{driver} CGM ({self.device} on hub {self.hub})",
                    "type": "user-friendly-name",
                }
            ],
            **({"version": firmware} if known.firmware else {}),
            "patient": {"reference": self.patient},
        }


def bundle_entries(
    readings: Iterable[Reading],
    summary: Summary,
    *,
    hub: str,
    device: str,
    driver: str,
    tz: tzinfo,
    identity: DeviceIdentity | None = None,
    include_serial: bool = False,
) -> Iterator[dict[str, Any]]:
    """The Bundle's entries, one at a time: Patient, Device, the summary, then every reading."""
    b = _Builder(hub, device, tz)
    # Identifiers that are URIs (RFC 3986): stable per hub and device, naming no person.
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": _URI, "value": _urn(hub, device, "patient-identifier")}],
    }
    yield _entry(b.patient, patient)
    yield _entry(b.device_url, b.cgm_device(driver, identity, include_serial=include_serial))
    for url, resource in b.summary(summary):
        yield _entry(url, resource)
    for reading in readings:
        yield _entry(_urn(hub, device, reading.id), b.reading(reading))


def write_bundle(
    out: TextIO,
    entries: Iterable[dict[str, Any]],
    summary: Summary,
    *,
    hub: str,
    device: str,
    now: datetime,
) -> int:
    """Write the Bundle (indented JSON) of `entries` to `out`, entry by entry; how many."""
    head = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NAMESPACE, f"{hub}/{device}/{summary.start}/{summary.end}")),
        "meta": {"profile": [f"{IG}/cgm-data-submission-bundle"]},
        "type": "transaction",
        "timestamp": isoformat_utc(now),
    }
    out.write(json.dumps(head, indent=2).removesuffix("\n}") + ',\n  "entry": [')
    count = 0
    for entry in entries:
        out.write(",\n    " if count else "\n    ")
        out.write(json.dumps(entry, indent=2).replace("\n", "\n    "))
        count += 1
    out.write("\n  ]\n}\n")
    return count
