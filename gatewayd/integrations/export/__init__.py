"""Clinician sharing (`gatewayd export`): FHIR R4 bundle, CSV, and the AGP report (PDF/PNG).

`command` is the CLI, `fhir` the HL7 CGM IG bundle, `table` the CSV, `profile` the AGP's
percentile curves (pure) and `agp` the drawing (matplotlib, the optional `reports` extra).
"""
