"""A validator of CGM bundles: FHIR structure, FHIRPath invariants, and the HL7 CGM IG's profiles.

Three layers, each a real check that can fail:

1. structure: every resource (and the Bundle) parses with `fhir.resources`' R4B models (types,
   cardinalities of the base spec, choice types, unknown elements). R4B and R4 (4.0.1, the IG's
   version) agree on Bundle, Patient, Device and Observation for everything the export writes;
2. invariants: the FHIRPath constraints of the base spec that concern the export (obs-6, obs-7,
   bdl-7) and the IG's own `cgm-sensor-value-or-dar`, evaluated by `fhirpathpy` (R4 model);
3. profiles: the constraints of hl7.fhir.uv.cgm 1.0.0 (input/fsh/profiles.fsh of the IG's
   source, the text of its StructureDefinitions), written out by hand below: fixed codes,
   Quantity patterns (system, code and the exact `unit` string), min cardinalities, the
   effectivePeriod dates, the summary's `hasMember` slices (resolved in the Bundle), the time
   in ranges' component slices, the CGM Device's name slice and the Bundle's entry rules.

What it does not check: terminology bindings beyond the fixed codes (no LOINC or UCUM server
here), `display` strings against LOINC, and the profiles' must-support flags (not errors).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhirpathpy import compile as fhirpath
from fhirpathpy.models import models

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SD = "http://hl7.org/fhir/uv/cgm/StructureDefinition/"

#: (profile id, key, FHIRPath expression): invariants evaluated on every resource of the kind.
INVARIANTS: tuple[tuple[str, str, str], ...] = (
    ("Observation", "obs-6", "dataAbsentReason.empty() or value.empty()"),
    (
        "Observation",
        "obs-7",
        "value.empty() or component.code.where(coding.intersect(%resource.code.coding)"
        ".exists()).empty()",
    ),
    (
        SD + "cgm-sensor-reading-mass-per-volume",
        "cgm-sensor-value-or-dar",
        "value.exists() or dataAbsentReason.exists()",
    ),
    (
        "Bundle",
        "bdl-7",
        "(type = 'history') or entry.where(fullUrl.exists())"
        ".select(fullUrl&resource.meta.versionId).isDistinct()",
    ),
)

_INVARIANTS = [(scope, key, fhirpath(expr, models["r4"])) for scope, key, expr in INVARIANTS]

_MGDL = {"system": UCUM, "code": "mg/dL", "unit": "mg/dl"}
_PERCENT = {"system": UCUM, "code": "%", "unit": "%"}
_DAYS = {"system": UCUM, "code": "d", "unit": "days"}

#: Observation profiles: id -> (fixed LOINC code, valueQuantity pattern, valueQuantity min,
#: summary-style effectivePeriod with start and end required).
OBSERVATIONS: dict[str, tuple[str, dict[str, str] | None, int, bool]] = {
    "cgm-sensor-reading-mass-per-volume": ("99504-3", _MGDL, 0, False),
    "cgm-summary": ("107931-8", None, 0, True),
    "cgm-summary-times-in-ranges": ("106793-3", None, 0, True),
    "cgm-summary-mean-glucose-mass-per-volume": ("97507-8", _MGDL, 0, True),
    "cgm-summary-gmi": ("97506-0", _PERCENT, 1, True),
    "cgm-summary-coefficient-of-variation": ("104638-2", _PERCENT, 1, True),
    "cgm-summary-days-of-wear": ("104636-6", _DAYS, 1, True),
    "cgm-summary-sensor-active-percentage": ("104637-4", _PERCENT, 1, True),
}
#: The summary's hasMember slices: member profile -> (min, max).
SUMMARY_MEMBERS = {
    "cgm-summary-mean-glucose-mass-per-volume": (0, 1),
    "cgm-summary-mean-glucose-moles-per-volume": (0, 1),
    "cgm-summary-times-in-ranges": (1, 1),
    "cgm-summary-gmi": (1, 1),
    "cgm-summary-coefficient-of-variation": (1, 1),
    "cgm-summary-days-of-wear": (1, 1),
    "cgm-summary-sensor-active-percentage": (1, 1),
}
#: The time in ranges' component slices (each 1..1, valueQuantity 1..1 in %).
RANGE_COMPONENTS = ("104642-4", "104641-6", "97510-2", "104640-8", "104639-0")


def _profile(resource: dict[str, Any]) -> str | None:
    profiles = resource.get("meta", {}).get("profile", [])
    return profiles[0].removeprefix(SD) if profiles else None


def _loinc(concept: dict[str, Any]) -> set[str]:
    return {c.get("code") for c in concept.get("coding", []) if c.get("system") == LOINC}


def _observation(where: str, obs: dict[str, Any], profile: str) -> list[str]:
    code, pattern, value_min, period = OBSERVATIONS[profile]
    found = []
    if code not in _loinc(obs.get("code", {})):
        found.append(f"{where}: code lacks LOINC {code}")
    if "subject" not in obs:
        found.append(f"{where}: subject is required")
    values = [k for k in obs if k.startswith("value")]
    if any(k != "valueQuantity" for k in values) and pattern is not None:
        found.append(f"{where}: value[x] only Quantity, got {values}")
    quantity = obs.get("valueQuantity")
    if quantity is None and value_min:
        found.append(f"{where}: valueQuantity is required")
    if quantity is not None and pattern is not None and not _matches(quantity, pattern):
        found.append(f"{where}: valueQuantity {quantity} does not match the pattern {pattern}")
    if period:
        dates = obs.get("effectivePeriod", {})
        if "start" not in dates or "end" not in dates:
            found.append(f"{where}: effectivePeriod with start and end is required")
    elif "effectiveDateTime" not in obs:
        found.append(f"{where}: effectiveDateTime is required")
    return found


def _times_in_ranges(where: str, obs: dict[str, Any]) -> list[str]:
    slices = Counter(code for c in obs.get("component", []) for code in _loinc(c["code"]))
    found = [
        f"{where}: component {code} must occur once, not {slices[code]}"
        for code in RANGE_COMPONENTS
        if slices[code] != 1
    ]
    for component in obs.get("component", []):
        quantity = component.get("valueQuantity", {})
        if _loinc(component["code"]) & set(RANGE_COMPONENTS) and not _matches(quantity, _PERCENT):
            found.append(f"{where}: component {component['code']} needs a % valueQuantity")
    return found


def _matches(quantity: dict[str, Any], pattern: dict[str, str]) -> bool:
    return all(quantity.get(k) == v for k, v in pattern.items())


def _summary(where: str, obs: dict[str, Any], by_url: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    members = obs.get("hasMember", [])
    if len(members) < 6:
        found.append(f"{where}: hasMember 6..*, has {len(members)}")
    profiles = Counter(_profile(by_url.get(m["reference"], {})) for m in members)
    for profile, (low, high) in SUMMARY_MEMBERS.items():
        if not low <= profiles[profile] <= high:
            found.append(f"{where}: hasMember[{profile}] {low}..{high}, has {profiles[profile]}")
    return found


def _device(where: str, device: dict[str, Any]) -> list[str]:
    found = []
    names = [n for n in device.get("deviceName", []) if n.get("type") == "user-friendly-name"]
    if len(names) != 1 or not names[0].get("name"):
        found.append(f"{where}: one deviceName of type user-friendly-name with a name")
    if not device.get("identifier"):
        found.append(f"{where}: identifier 1..*")
    return found


def violations(bundle: dict[str, Any]) -> list[str]:
    """Every error of `bundle` against the three layers; empty when it conforms."""
    Bundle.model_validate(bundle)  # raises on a structural error
    found = []
    if _profile(bundle) != "cgm-data-submission-bundle":
        found.append("Bundle: meta.profile is not the CGM Data Submission Bundle")
    if bundle.get("type") != "transaction" or "timestamp" not in bundle:
        found.append("Bundle: type transaction and a timestamp are required")
    entries = bundle.get("entry", [])
    if not entries:
        found.append("Bundle: entry 1..*")
    by_url = {e["fullUrl"]: e["resource"] for e in entries}
    if sum(r["resourceType"] == "Patient" for r in by_url.values()) > 1:
        found.append("Bundle: entry[patient] 0..1")
    resources = [("Bundle", bundle), *((e["fullUrl"], e["resource"]) for e in entries)]
    for where, resource in resources:
        kind, profile = resource["resourceType"], _profile(resource)
        for scope, key, invariant in _INVARIANTS:
            holds = invariant(resource, {"resource": resource}) == [True]
            if scope in {kind, SD + (profile or "")} and not holds:
                found.append(f"{where}: invariant {key} fails")
        if kind == "Device":
            found += _device(where, resource) if profile == "cgm-device" else [f"{where}: profile"]
        elif kind == "Observation":
            if profile not in OBSERVATIONS:
                found.append(f"{where}: unknown Observation profile {profile}")
                continue
            found += _observation(where, resource, profile)
            if profile == "cgm-summary-times-in-ranges":
                found += _times_in_ranges(where, resource)
            if profile == "cgm-summary":
                found += _summary(where, resource, by_url)
    return found
