"""A FHIR R4 Bundle of a device's readings and summary, after the HL7 CGM IG (hl7.fhir.uv.cgm).

A `transaction` Bundle (the IG's CGM Data Submission Bundle) with:

- a Patient placeholder (no name or other identifier of a person: the hub knows none) that every
  Observation's `subject` references — the receiving system links it to its patient;
- a CGM Device (the configured device id on this hub, its driver);
- one CGM Sensor Reading (Mass) Observation per reading: LOINC 99504-3, UCUM mg/dL. A reading
  outside the sensor's range has no value but a `dataAbsentReason` and the interpretation
  `<` (off scale low) or `>` (off scale high);
- the CGM Summary panel over the export period and its members: mean glucose 97507-8, times
  in ranges 106793-3 (components 104642-4, 104641-6, 97510-2, 104640-8, 104639-0), GMI
  97506-0, CV 104638-2, days of wear 104636-6 and sensor active % 104637-4.

`fullUrl`s are `urn:uuid:` ids derived from the hub, device and reading id, so exporting the
same data twice yields the same resources (receivers can de-duplicate).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

from gatewayd.models import Reading, isoformat_utc
from gatewayd.summaries.metrics import Summary

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
IG = "http://hl7.org/fhir/uv/cgm/StructureDefinition"
_TEMP_CODES = "http://hl7.org/fhir/uv/cgm/CodeSystem/cgm-summary-codes-temporary"
_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_URI = "urn:ietf:rfc:3986"
_NAMESPACE = uuid.UUID("6f1c8a52-3b7e-5d0a-9c41-2e8f7b6d5a90")

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


def _concept(code: Code, *extra: dict[str, str]) -> dict[str, Any]:
    loinc = {"system": LOINC, "code": code[0]}
    if code[1] is not None:
        loinc["display"] = code[1]
    return {"coding": [loinc, *extra], "text": code[2]}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": round(value, 2), "unit": unit, "system": UCUM, "code": unit}


def _value(value: float | None, unit: str) -> dict[str, Any]:
    """`valueQuantity`, or a `dataAbsentReason` when there was nothing to compute it from."""
    if value is None:
        return {"dataAbsentReason": {"coding": [{"system": _ABSENT, "code": "not-applicable"}]}}
    return {"valueQuantity": _quantity(value, unit)}


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

    def observation(self, profile: str, code: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "meta": {"profile": [f"{IG}/{profile}"]},
            "status": "final",
            "category": [{"coding": [{"system": _CATEGORY, "code": "laboratory"}]}],
            "code": code,
            "subject": {"reference": self.patient},
            **fields,
            "device": {"reference": self.device_url},
        }

    def reading(self, reading: Reading) -> dict[str, Any]:
        fields: dict[str, Any] = {"effectiveDateTime": isoformat_utc(reading.time)}
        if reading.glucose_mgdl is not None:
            fields["valueQuantity"] = _quantity(reading.glucose_mgdl, "mg/dL")
        else:
            low = reading.out_of_range == "low"
            fields["dataAbsentReason"] = {"coding": [{"system": _ABSENT, "code": "unknown"}]}
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
        return self.observation(
            "cgm-sensor-reading-mass-per-volume", _concept(READING_CODE), **fields
        )

    def period(self, summary: Summary) -> dict[str, str]:
        last = summary.end - timedelta(milliseconds=1)
        return {
            "start": summary.start.astimezone(self.tz).date().isoformat(),
            "end": last.astimezone(self.tz).date().isoformat(),
        }

    def member(
        self, profile: str, code: Code, value: float | None, unit: str, period: Any
    ) -> dict[str, Any]:
        return self.observation(
            profile, _concept(code), effectivePeriod=period, **_value(value, unit)
        )

    def summary(self, summary: Summary) -> list[tuple[str, dict[str, Any]]]:
        period = self.period(summary)
        key = (self.hub, self.device, isoformat_utc(summary.start), isoformat_utc(summary.end))
        ranges = summary.ranges_pct or (None,) * len(RANGE_CODES)
        tir = self.observation(
            "cgm-summary-times-in-ranges",
            _concept(TIR_PANEL_CODE),
            effectivePeriod=period,
            component=[
                {"code": _concept(code), **_value(value, "%")}
                for code, value in zip(RANGE_CODES, ranges, strict=True)
            ],
        )
        members = [
            (
                _urn(*key, "mean"),
                self.member(
                    "cgm-summary-mean-glucose-mass-per-volume",
                    MEAN_CODE,
                    summary.mean_mgdl,
                    "mg/dL",
                    period,
                ),
            ),
            (_urn(*key, "tir"), tir),
            (
                _urn(*key, "gmi"),
                self.member("cgm-summary-gmi", GMI_CODE, summary.gmi_pct, "%", period),
            ),
            (
                _urn(*key, "cv"),
                self.member(
                    "cgm-summary-coefficient-of-variation", CV_CODE, summary.cv_pct, "%", period
                ),
            ),
            (
                _urn(*key, "days"),
                self.member("cgm-summary-days-of-wear", DAYS_CODE, summary.days, "d", period),
            ),
            (
                _urn(*key, "active"),
                self.member(
                    "cgm-summary-sensor-active-percentage",
                    ACTIVE_CODE,
                    summary.coverage_pct,
                    "%",
                    period,
                ),
            ),
        ]
        panel = self.observation(
            "cgm-summary",
            _concept(SUMMARY_CODE, {"system": _TEMP_CODES, "code": "cgm-summary"}),
            effectivePeriod=period,
            hasMember=[{"reference": url} for url, _ in members],
        )
        return [(_urn(*key, "summary"), panel), *members]


def bundle(
    readings: Sequence[Reading],
    summary: Summary,
    *,
    hub: str,
    device: str,
    driver: str,
    tz: tzinfo,
    now: datetime,
) -> dict[str, Any]:
    """The Bundle (JSON-ready) of `readings` and their `summary` over the export period."""
    b = _Builder(hub, device, tz)
    # Identifiers that are URIs (RFC 3986): stable per hub and device, naming no person.
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": _URI, "value": _urn(hub, device, "patient-identifier")}],
    }
    cgm = {
        "resourceType": "Device",
        "meta": {"profile": [f"{IG}/cgm-device"]},
        "identifier": [{"system": _URI, "value": _urn(hub, device, "device-identifier")}],
        "deviceName": [
            {"name": f"{driver} CGM ({device} on hub {hub})", "type": "user-friendly-name"}
        ],
        "patient": {"reference": b.patient},
    }
    entries = [_entry(b.patient, patient), _entry(b.device_url, cgm)]
    entries += [_entry(url, resource) for url, resource in b.summary(summary)]
    entries += [_entry(_urn(hub, device, r.id), b.reading(r)) for r in readings]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(_NAMESPACE, f"{hub}/{device}/{summary.start}/{summary.end}")),
        "meta": {"profile": [f"{IG}/cgm-data-submission-bundle"]},
        "type": "transaction",
        "timestamp": isoformat_utc(now),
        "entry": entries,
    }
